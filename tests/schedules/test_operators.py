"""Fused ternary matmul operators, unscheduled, built for LLVM: exact against the reference.

The matmul outputs are compared with ``np.array_equal``: the int32 accumulation is exact and the
two float32 multiplies happen in the reference's order (no adds, so no FMA contraction).
"""

import numpy as np
import pytest
import tvm

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.layouts import WeightLayout, pack_weight
from bitnet_tvm.schedules.operators import sparse_int8_matmul, ternary_gate_up, ternary_matmul

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})
N, K = 13, 37


def _build(func):
    return tvm.compile(tvm.IRModule({"main": func}), target=TARGET)


def _call(ex, inputs, out_shape):
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    ex["main"](*[tvm.runtime.tensor(a) for a in inputs], out)
    return out.numpy()


def _act(rng, m, k, bits, zero_frac=0.0):
    lo, hi = (-8, 8) if bits == 4 else (-128, 128)
    x_q = rng.integers(lo, hi, (m, k)).astype(np.int8)
    x_q[rng.random(x_q.shape) < zero_frac] = 0
    return x_q, rng.random((m, 1)).astype(np.float32) + np.float32(0.01)


@pytest.mark.parametrize("layout", list(WeightLayout))
@pytest.mark.parametrize("act_bits", [4, 8])
def test_ternary_matmul(layout, act_bits):
    rng = np.random.default_rng(1)
    func = ternary_matmul(N, K, act_bits=act_bits, layout=layout)
    assert str(func.attrs[attrs.OP]) == f"ternary_int{act_bits}_matmul"
    assert str(func.attrs[attrs.LAYOUT]) == layout.value
    assert int(func.attrs[attrs.ACT_BITS]) == act_bits
    assert (int(func.attrs[attrs.N]), int(func.attrs[attrs.K])) == (N, K)
    ex = _build(func)
    q_w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    alpha = rng.random(N).astype(np.float32)
    for m in (1, 3, 17):  # one compiled function, several M
        x_q, x_s = _act(rng, m, K, act_bits)
        got = _call(ex, [x_q, x_s, pack_weight(q_w, layout), alpha], (m, N))
        assert np.array_equal(got, reference.ternary_matmul(x_q, x_s, q_w, alpha))


@pytest.mark.parametrize("layout", list(WeightLayout))
def test_gate_up(layout):
    rng = np.random.default_rng(2)
    func = ternary_gate_up(N, K, act_bits=4, layout=layout)
    assert str(func.attrs[attrs.OP]) == "ternary_int4_gate_up"
    ex = _build(func)
    q_w = rng.integers(-1, 2, (2 * N, K)).astype(np.int8)
    alpha = rng.random(2 * N).astype(np.float32)
    for m in (1, 17):
        x_q, x_s = _act(rng, m, K, 4)
        want = reference.ternary_gate_up(x_q, x_s, q_w, alpha)
        assert 0.2 < np.mean(want == 0) < 0.8  # both branches of the gate are exercised
        got = _call(ex, [x_q, x_s, pack_weight(q_w, layout), alpha], (m, N))
        assert np.array_equal(got, want)


@pytest.mark.parametrize("layout", [WeightLayout.TWO_BIT_KMAJOR, WeightLayout.TWO_BIT])
def test_sparse_int8_matmul(layout):
    rng = np.random.default_rng(3)
    func = sparse_int8_matmul(N, K, layout=layout)
    assert str(func.attrs[attrs.OP]) == "sparse_int8_matmul"
    ex = _build(func)
    q_w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    alpha = rng.random(N).astype(np.float32)
    for m in (1, 17):
        x_q, x_s = _act(rng, m, K, 8, zero_frac=0.8)
        got = _call(ex, [x_q, x_s, pack_weight(q_w, layout), alpha], (m, N))
        assert np.array_equal(got, reference.ternary_matmul(x_q, x_s, q_w, alpha))


def test_bad_arguments():
    with pytest.raises(ValueError, match="act_bits must be 4 or 8"):
        ternary_matmul(4, 4, act_bits=2)
    with pytest.raises(ValueError, match="k must be a positive int"):
        ternary_gate_up(4, 0, act_bits=4)
    with pytest.raises(ValueError, match="not a valid WeightLayout"):
        sparse_int8_matmul(4, 4, layout="3bit")
