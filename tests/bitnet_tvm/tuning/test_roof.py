"""The roofline verdict of a tuned kernel: bytes and ops of an instance, and the goal."""

from __future__ import annotations

import pytest

from bitnet_tvm.schedules.operators import sparse_int8_matmul
from bitnet_tvm.tuning.inputs import sparse_activations
from bitnet_tvm.tuning.roof import judge, kernel_cost
from bitnet_tvm.tuning.workloads import instance_module

ROOFS = {"read_gbs": 10.0, "int8_ops": 1e11}  # 10 GB/s, 100 GOPS


def test_kernel_cost_counts_every_parameter_once(op_module):
    n, k, m = 32, 128, 4  # conftest's op_module at M = 4
    nbytes, ops = kernel_cost(instance_module(op_module["op"], m))
    # x int8 [m, k], scale f32 [m, 1], 2-bit weights [n, k / 4], alpha f32 [n], y f32 [m, n]
    assert nbytes == m * k + 4 * m + n * k // 4 + 4 * n + 4 * m * n
    assert ops == 2 * m * n * k


@pytest.mark.parametrize("m", [1, 3])
def test_kernel_cost_of_a_sparse_matmul_counts_the_work_of_its_activations(m):
    n, k, zeros = 64, 96, 0.75
    mod = instance_module(sparse_int8_matmul(n, k), m)
    x = sparse_activations(m, k, zeros)
    assert (x == 0).sum(axis=1).tolist() == [72] * m
    used = int(x.any(axis=0).sum())  # K indices some token needs: their weight rows
    nbytes, ops = kernel_cost(mod, zeros)
    assert nbytes == m * k + 4 * m + used * n // 4 + 4 * n + 4 * m * n
    assert ops == 2 * n * m * (k - 72)
    assert kernel_cost(mod) == (m * k + 4 * m + k * n // 4 + 4 * n + 4 * m * n, 2 * m * n * k)


@pytest.mark.parametrize(
    "us, speedup, nbytes, ops, bound, pct, meets",
    [
        (100.0, 1.0, 1_000_000, 1, "dram", 100.0, True),  # 1 MB at 10 GB/s = 100 µs
        (200.0, 1.0, 1_000_000, 1, "dram", 50.0, False),
        (200.0, 1.2, 1_000_000, 1, "dram", 50.0, True),  # the speedup meets it
        (100.0, 1.0, 1, 10**7, "int8", 100.0, True),  # 1e7 ops at 1e11 ops/s = 100 µs
        (25.0, 1.0, 1, 10**7, "int8", 400.0, True),  # beats the roof (a LUT kernel)
        (25.0, 1.0, 1, 10**7 // 8, "int8", 50.0, False),
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
