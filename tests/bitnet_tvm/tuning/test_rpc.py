"""Remote tuning: candidates measured through a TVM RPC tracker and a server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest
from tvm import rpc
from tvm.rpc.tracker import Tracker

from bitnet_tvm.tuning.database import TuningDatabase
from bitnet_tvm.tuning.tuner import tune

KEY = "bitnet-test-cpu"


@pytest.fixture
def tracker_and_server():
    tracker = Tracker("127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc.Server(
        "127.0.0.1", port=9300, port_end=9400, tracker_addr=("127.0.0.1", tracker.port), key=KEY
    )
    try:
        client = rpc.connect_tracker("127.0.0.1", tracker.port)
        deadline = time.monotonic() + 30
        while KEY not in client.text_summary() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert KEY in client.text_summary(), "the RPC server did not register with the tracker"
        yield f"127.0.0.1:{tracker.port}"
    finally:
        server.terminate()
        tracker.terminate()


def test_tune_over_rpc(tracker_and_server, op_module, cpu, tmp_path):
    report = tune(
        op_module,
        cpu,
        trials=2,
        db=tmp_path,
        rpc=tracker_and_server,
        device_key=KEY,
        buckets="small",
        progress=False,
    )
    assert report.where == f"rpc {KEY}@{tracker_and_server}"
    (row,) = report.tasks
    assert report.tuned_now == 1 and row.rule == "TernaryGemv" and row.m == 8
    assert row.default_us > 0 and 0 < row.tuned_us <= row.default_us
    assert len(TuningDatabase(tmp_path)) >= 2
