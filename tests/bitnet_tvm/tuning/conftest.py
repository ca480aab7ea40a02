"""Shared pieces of the tuning tests: a non-VNNI CPU target, a tiny operator, its reference."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from targets import V2 as CPU

from bitnet_tvm import reference
from bitnet_tvm.schedules.layouts import WeightLayout, pack_weight
from bitnet_tvm.schedules.operators import ternary_matmul

# x86-64-v2 (SSE4.2, no AVX2: AVX2 targets take Avx2Matmul): the generic GEMV/GEMM rules, the
# same on every x86 host that runs CI.
N, K = 32, 128


@pytest.fixture(scope="session")
def cpu() -> tvm.target.Target:
    return CPU


@pytest.fixture(scope="session")
def check():
    return run_and_check


@pytest.fixture(scope="session")
def op_module() -> tvm.IRModule:
    func = ternary_matmul(N, K, act_bits=8).with_attr("global_symbol", "op")
    return tvm.IRModule({"op": func})


def run_and_check(executable, name: str, ms: list[int], seed: int = 0) -> None:
    """Run ``name`` of ``executable`` at each M; outputs must equal the reference exactly."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    alpha = (rng.random(N) + 0.5).astype(np.float32)
    for m in ms:
        x = rng.integers(-128, 128, (m, K)).astype(np.int8)
        scale = (rng.random((m, 1)) + 0.01).astype(np.float32)
        out = tvm.runtime.tensor(np.zeros((m, N), np.float32))
        inputs = (x, scale, pack_weight(w, WeightLayout.TWO_BIT), alpha)
        executable[name](*[tvm.runtime.tensor(a) for a in inputs], out)
        want = reference.ternary_matmul(x, scale, w, alpha)
        np.testing.assert_array_equal(out.numpy(), want, err_msg=f"M={m}")
