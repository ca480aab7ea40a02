"""The roofline verdict of a tuned kernel: bytes and ops of an instance, and the goal."""

from __future__ import annotations

import pytest

from bitnet_tvm.tuning.roof import judge, kernel_cost
from bitnet_tvm.tuning.workloads import instance_module

ROOFS = {"read_gbs": 10.0, "int8_ops": 1e11}  # 10 GB/s, 100 GOPS


def test_kernel_cost_counts_every_parameter_once(op_module):
    n, k, m = 32, 128, 4  # conftest's op_module at M = 4
    nbytes, ops = kernel_cost(instance_module(op_module["op"], m))
    # x int8 [m, k], scale f32 [m, 1], 2-bit weights [n, k / 4], alpha f32 [n], y f32 [m, n]
    assert nbytes == m * k + 4 * m + n * k // 4 + 4 * n + 4 * m * n
    assert ops == 2 * m * n * k


@pytest.mark.parametrize(
    "us, speedup, nbytes, ops, bound, pct, meets",
    [
        (100.0, 1.0, 1_000_000, 1, "dram", 100.0, True),  # 1 MB at 10 GB/s = 100 µs
        (200.0, 1.0, 1_000_000, 1, "dram", 50.0, False),
        (200.0, 1.2, 1_000_000, 1, "dram", 50.0, True),  # the speedup meets it
        (100.0, 1.0, 1, 10**7, "int8", 100.0, True),  # 1e7 ops at 1e11 ops/s = 100 µs
        (25.0, 1.0, 1, 10**7, "int8", 400.0, False),  # beats the roof: not bound by it
    ],
)
def test_judge(us, speedup, nbytes, ops, bound, pct, meets):
    verdict = judge(us, speedup, nbytes, ops, ROOFS)
    assert verdict["bound"] == bound and verdict["meets"] is meets
    assert verdict["roofline_pct"] == pytest.approx(pct)


def test_judge_without_roofs_uses_the_speedup():
    verdict = judge(10.0, 1.05, 100, 100, None)
    assert verdict == {"roofline_pct": None, "bound": None, "meets": False}
    assert judge(10.0, 1.1, 100, 100, None)["meets"] is True
    assert judge(None, None, 100, 100, ROOFS)["meets"] is None
