"""tune(): tuned records replay exactly, a second run does no work, bad databases are ignored."""

from __future__ import annotations

import time
import warnings

import pytest
import tvm

from bitnet_tvm.schedules.dispatch import bitnet_rules
from bitnet_tvm.tuning.apply import bucket_dispatch
from bitnet_tvm.tuning.database import RECORDS, WORKLOADS, TuningDatabase, TuningDatabaseWarning
from bitnet_tvm.tuning.manifest import MANIFEST, Manifest
from bitnet_tvm.tuning.tuner import tune

TRIALS = 2
N, K = 32, 128  # the shape of conftest's op_module
BUCKETS = "decode"  # one task keeps the test short; test_rpc tunes another bucket


@pytest.fixture(scope="module")
def tuned(op_module, cpu, tmp_path_factory):
    db = tmp_path_factory.mktemp("db")
    report = tune(op_module, cpu, trials=TRIALS, db=db, buckets=BUCKETS, progress=False)
    return db, report


def test_tune_reports_every_task(tuned):
    db, report = tuned
    assert report.tuned_now == 1
    (row,) = report.tasks
    assert row.rule == "TernaryGemv" and row.bucket.startswith("decode") and row.m == 1
    assert row.default_us > 0 and 0 < row.tuned_us <= row.default_us
    text = str(report)
    assert "default µs" in text and "ternary_int8_matmul n=32 k=128" in text
    assert len(TuningDatabase(db)) >= 2  # the default's record and the tuned ones


def test_tuned_schedules_are_bit_exact(tuned, op_module, cpu, check):
    db, _ = tuned
    with cpu:
        mod = bucket_dispatch(bitnet_rules(cpu), cpu, TuningDatabase(db))(op_module)
    check(tvm.compile(mod, target=cpu), "op", [1, 5, 16, 130])


def test_stored_trace_replays(tuned, op_module, cpu, check):
    """The best record's trace, replayed on its workload, builds and is exact."""
    db, _ = tuned
    database = TuningDatabase(db)
    record = max(database._records, key=lambda r: -min(float(s) for s in r.run_secs))
    sch = tvm.s_tir.Schedule(record.workload.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    m = record.workload.mod["main"].params[0].shape[0]
    check(tvm.compile(sch.mod, target=cpu), "main", [int(m)])


def test_tune_judges_the_roofline(tuned):
    _, report = tuned
    (row,) = report.tasks
    assert report.roofs["read_gbs"] > 1 and row.bytes == N * K // 4 + 2 * N * 4 + K + 4
    assert row.ops == 2 * N * K and row.bound == "dram"  # M = 1: memory-bound
    assert row.cold_us > 0 and row.roofline_pct > 0
    want = row.speedup >= 1.1 or row.roofline_pct >= 90
    assert row.meets is want
    assert "roof %" in str(report) and "DRAM read" in str(report)


def test_second_tune_does_no_work(tuned, op_module, cpu):
    db, first = tuned
    start = time.perf_counter()
    report = tune(op_module, cpu, trials=TRIALS, db=db, buckets=BUCKETS, progress=False)
    elapsed = time.perf_counter() - start
    assert report.tuned_now == 0 and all(t.cached for t in report.tasks)
    assert [t.tuned_us for t in report.tasks] == [t.tuned_us for t in first.tasks]
    assert [t.roofline_pct for t in report.tasks] == [t.roofline_pct for t in first.tasks]
    assert report.roofs == first.roofs
    assert elapsed < 1, f"cached tune took {elapsed:.2f} s (the manifest should answer)"


def _copy(db, to):
    for path in db.iterdir():
        if path.is_file():
            (to / path.name).write_bytes(path.read_bytes())


def test_corrupt_manifest_is_ignored_and_rewritten(tuned, op_module, cpu, tmp_path):
    db, first = tuned
    _copy(db, tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.warns(TuningDatabaseWarning, match="manifest"):
        report = tune(
            op_module, cpu, TRIALS, tmp_path, buckets=BUCKETS, progress=False, roofline=False
        )
    assert report.tuned_now == 0  # the database still answers, task by task
    assert [t.tuned_us for t in report.tasks] == [t.tuned_us for t in first.tasks]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(Manifest(tmp_path).data["entries"]) == 1


def test_manifest_entry_needs_its_workloads(tuned, tmp_path):
    db, _ = tuned
    _copy(db, tmp_path)
    (key,) = Manifest(tmp_path).data["entries"]
    assert Manifest(tmp_path).lookup(key) is not None
    (tmp_path / WORKLOADS).write_text("")  # a database that lost its records
    (tmp_path / RECORDS).write_text("")
    assert Manifest(tmp_path).lookup(key) is None
    (tmp_path / WORKLOADS).write_text("garbage\n")
    assert Manifest(tmp_path).lookup(key) is None


@pytest.mark.parametrize(
    "files, problem",
    [
        ({RECORDS: "not json\n"}, "line 1"),
        ({RECORDS: '[7, ["x"]]\n'}, "out of range"),
        ({"bitnet_tvm_tuning.json": '{"format": "other-tool"}'}, "other-tool"),
        ({"bitnet_tvm_tuning.json": None}, "not written by bitnet-tvm"),
    ],
)
def test_corrupt_or_foreign_database_is_ignored(
    tuned, op_module, tmp_path, files, problem, cpu, check
):
    db, _ = tuned
    for path in db.iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    for name, text in files.items():
        if text is None:
            (tmp_path / name).unlink()
        else:
            (tmp_path / name).write_text(text)
    with pytest.warns(TuningDatabaseWarning, match=problem) as caught:
        database = TuningDatabase(tmp_path)
    assert str(tmp_path) in str(caught[0].message)
    assert len(database) == 0
    with cpu, warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing more to warn about: defaults are used
        mod = bucket_dispatch(bitnet_rules(cpu), cpu, database)(op_module)
    check(tvm.compile(mod, target=cpu), "op", [1, 16])


def test_saving_over_a_corrupt_database_keeps_it_aside(tmp_path):
    (tmp_path / WORKLOADS).write_text("garbage\n")
    (tmp_path / RECORDS).write_text("")
    with pytest.warns(TuningDatabaseWarning):
        database = TuningDatabase(tmp_path)
    database.save()
    assert (tmp_path / (WORKLOADS + ".bad")).read_text() == "garbage\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(TuningDatabase(tmp_path)) == 0


def test_bad_arguments(cpu):
    with pytest.raises(ValueError, match="trials"):
        tune(tvm.IRModule({}), cpu, trials=0)
    with pytest.raises(ValueError, match="HOST:PORT"):
        tune(tvm.IRModule({}), cpu, rpc="nowhere", device_key="k")
    with pytest.raises(ValueError, match="go together"):
        tune(tvm.IRModule({}), cpu, rpc="127.0.0.1:9190")
