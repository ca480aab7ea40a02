"""compile_model(onnx, tuning_db=DIR) after a tiny tune: tuned records are used, outputs unchanged.

The tiny a4.8 model is exported to ONNX, one operator kind is tuned for the decode bucket, and
the model is compiled with and without the database: the compile logs how many operator
variants took a tuned record (at least one), and the logits are the same (the tuned schedules
differ in loop structure only; integer accumulation is exact, the float epilogue is the same).
"""

from __future__ import annotations

import logging
import re
import time

import numpy as np
import pytest

from bitnet_tvm.compiler import compile_model
from bitnet_tvm.export import export_onnx
from bitnet_tvm.model import BitNetForCausalLM, get_config
from bitnet_tvm.tuning.tuner import tune

OPS = "ternary_int4_gate_up"  # one operator shape (every layer's gate/up): one workload


@pytest.fixture(scope="module")
def tuned_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuned")
    model = BitNetForCausalLM(get_config("tiny", scheme="a4.8"), seed=0).eval()
    path = export_onnx(model, root / "tiny.onnx", verify=False)
    kwargs = dict(trials=1, db=root / "db", buckets="decode", ops=OPS, progress=False)
    report = tune(path, "llvm", roofline=False, **kwargs)
    return path, root / "db", report, kwargs


def test_second_tune_of_the_onnx_file_answers_at_once(tuned_model):
    path, _, first, kwargs = tuned_model
    assert first.tuned_now >= 1 and all(t.kernel.startswith(OPS) for t in first.tasks)
    start = time.perf_counter()
    again = tune(path, "llvm", roofline=False, **kwargs)
    elapsed = time.perf_counter() - start
    assert again.tuned_now == 0 and all(t.cached for t in again.tasks)
    assert [t.tuned_us for t in again.tasks] == [t.tuned_us for t in first.tasks]
    assert elapsed < 1, f"warm tune of an ONNX file took {elapsed:.2f} s"


def test_compile_uses_tuned_records_and_keeps_outputs(tuned_model, caplog):
    path, db, _, _ = tuned_model
    plain = compile_model(path)
    with caplog.at_level(logging.INFO, logger="bitnet_tvm.tuning.apply"):
        tuned = compile_model(path, tuning_db=db)
    pattern = re.compile(r"(\d+) of (\d+) operator variants use tuned records")
    used = [int(m.group(1)) for m in map(pattern.search, caplog.messages) if m]
    assert used and max(used) >= 1, caplog.text
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (2, 7)):  # M = 1 runs the tuned decode variants
        feed = {"input_ids": rng.integers(0, 256, shape).astype(np.int64)}
        want = plain.run(["logits"], feed)[0]
        got = tuned.run(["logits"], feed)[0]
        np.testing.assert_array_equal(got, want, err_msg=f"input_ids {shape}")
