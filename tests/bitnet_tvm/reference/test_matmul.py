"""int_matmul / ternary_matmul / bitlinear / rmsnorm against element-wise Python loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitnet_tvm import reference as ref
from bitnet_tvm.schemes import get_scheme

F32 = np.float32
SETTINGS = settings(deadline=None, max_examples=100)


@st.composite
def int_problems(draw):
    """``(q_act [..., K], q_w [N, K])`` with every activation width the reference accepts."""
    lead = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5))
    k = draw(st.integers(1, 37))
    n = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([np.int8, np.int16, np.int32, np.int64]))
    extreme = draw(st.booleans())
    values = st.sampled_from([-128, 127]) if extreme else st.integers(-128, 127)
    q_act = draw(hnp.arrays(dtype, (*lead, k), elements=values))
    q_w = draw(hnp.arrays(np.int8, (n, k), elements=st.integers(-1, 1)))
    return q_act, q_w


def loop_matmul(q_act: np.ndarray, q_w: np.ndarray) -> np.ndarray:
    rows = q_act.reshape(-1, q_act.shape[-1])
    out = [
        [sum(int(a) * int(w) for a, w in zip(row, wrow, strict=True)) for wrow in q_w]
        for row in rows
    ]
    return np.array(out, dtype=np.int64).reshape(*q_act.shape[:-1], q_w.shape[0])


@SETTINGS
@given(problem=int_problems())
def test_int_matmul_exact(problem):
    q_act, q_w = problem
    acc = ref.int_matmul(q_act, q_w)
    assert acc.dtype == np.int32
    np.testing.assert_array_equal(acc, loop_matmul(q_act, q_w))


def test_int_matmul_accumulates_beyond_int16():
    q_act = np.full((2, 4000), -128, np.int8)
    q_w = -np.ones((3, 4000), np.int8)
    np.testing.assert_array_equal(ref.int_matmul(q_act, q_w), np.full((2, 3), 512000))


@SETTINGS
@given(problem=int_problems(), data=st.data(), per_column=st.booleans())
def test_ternary_matmul_epilogue_order(problem, data, per_column):
    q_act, q_w = problem
    positive = st.floats(float(F32(1e-6)), 1e3, width=32)
    scale = data.draw(hnp.arrays(F32, (*q_act.shape[:-1], 1), elements=positive))
    alpha = (
        data.draw(hnp.arrays(F32, (q_w.shape[0],), elements=positive))
        if per_column
        else F32(data.draw(positive))
    )
    y = ref.ternary_matmul(q_act, scale, q_w, alpha)
    assert y.dtype == np.float32
    acc = loop_matmul(q_act, q_w)
    alphas = np.broadcast_to(alpha, (q_w.shape[0],))
    for idx in np.ndindex(acc.shape):
        # float32(acc) * act_scale first, then * alpha, each rounded to float32
        want = (F32(acc[idx]) * scale[(*idx[:-1], 0)]) * alphas[idx[-1]]
        assert y[idx] == want, idx


def test_ternary_matmul_multiply_order_is_pinned():
    # (acc * s) * a != acc * (s * a) in float32 for these values; the reference takes the former
    acc, s, a = F32(350), F32("0.26978672"), F32("0.040973525")
    assert (acc * s) * a != acc * (s * a)
    q_act = np.full((1, 350), 1, np.int8)
    y = ref.ternary_matmul(q_act, np.array([[s]]), np.ones((1, 350), np.int8), a)
    assert y[0, 0] == (acc * s) * a


@pytest.mark.parametrize(
    ("scale_shape", "alpha_shape"), [((2,), ()), ((2, 2), ()), ((2, 1), (4,)), ((2, 1), (3, 1))]
)
def test_ternary_matmul_rejects_bad_scale_shapes(scale_shape, alpha_shape):
    q_act, q_w = np.ones((2, 5), np.int8), np.ones((3, 5), np.int8)
    with pytest.raises(ValueError, match=r"act_scale|alpha"):
        ref.ternary_matmul(q_act, np.ones(scale_shape, F32), q_w, np.ones(alpha_shape, F32))


def test_int_matmul_rejects_bad_inputs():
    q_w = np.ones((3, 5), np.int8)
    with pytest.raises(ValueError, match="disagree"):
        ref.int_matmul(np.ones((2, 4), np.int8), q_w)
    with pytest.raises(ValueError, match="q_w"):
        ref.int_matmul(np.ones((2, 5), np.int8), np.ones(5, np.int8))
    with pytest.raises(ValueError, match="disagree"):
        ref.int_matmul(np.ones((2, 5), np.int8), np.ones((1, 3, 5), np.int8))
    with pytest.raises(ValueError, match=r"q_w values must lie in \[-1, 1\]"):
        ref.int_matmul(np.ones((2, 5), np.int8), 2 * q_w)
    with pytest.raises(ValueError, match=r"q_act values must lie in \[-128, 127\]"):
        ref.int_matmul(np.full((2, 5), 200, np.int16), q_w)
    with pytest.raises(TypeError, match="q_act must have an integer dtype"):
        ref.int_matmul(np.ones((2, 5), F32), q_w)
    with pytest.raises(TypeError, match="q_w must be a numpy array"):
        ref.int_matmul(np.ones((2, 5), np.int8), [[1] * 5])


@SETTINGS
@given(
    x=hnp.arrays(F32, st.tuples(st.integers(1, 4), st.integers(1, 33)), elements=st.floats(-8, 8)),
    site=st.sampled_from(["qkv", "o", "gate_up", "down"]),
    scheme=st.sampled_from(["a4.8", "b1.58"]),
)
def test_bitlinear_equals_exact_product(x, site, scheme):
    rng = np.random.default_rng(x.shape[-1])
    q_w = rng.integers(-1, 2, (5, x.shape[-1])).astype(np.int8)
    alpha = F32(0.37)
    act = get_scheme(scheme).site(site)
    q, scale = ref.quantize_act(x, act)
    y = ref.bitlinear(x, q_w, alpha, act)
    want = loop_matmul(q, q_w) * scale.astype(np.float64) * float(alpha)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=0)


@SETTINGS
@given(
    x=hnp.arrays(
        F32,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
        elements=st.floats(-1e3, 1e3, width=32),
    ),
    with_weight=st.booleans(),
)
def test_rmsnorm_matches_float64(x, with_weight):
    d = x.shape[-1]
    weight = np.linspace(-2, 2, d, dtype=F32) if with_weight else None
    y = ref.rmsnorm(x, weight, eps=1e-5)
    assert y.dtype == np.float32 and y.shape == x.shape
    for row, yrow in zip(x.reshape(-1, d), y.reshape(-1, d), strict=True):
        inv = 1.0 / math.sqrt(math.fsum(float(v) ** 2 for v in row) / d + 1e-5)
        for k in range(d):
            want = float(row[k]) * inv * (float(weight[k]) if with_weight else 1.0)
            assert math.isclose(float(yrow[k]), want, rel_tol=1e-5, abs_tol=1e-6)


def test_ternary_gate_up_is_the_relu2_glu_of_both_halves():
    rng = np.random.default_rng(0)
    x_q = rng.integers(-8, 8, (3, 40)).astype(np.int8)
    x_s = rng.random((3, 1)).astype(F32) + F32(0.01)
    q_w = rng.integers(-1, 2, (2 * 7, 40)).astype(np.int8)
    alpha = rng.random(14).astype(F32)
    h = ref.ternary_gate_up(x_q, x_s, q_w, alpha)
    g = x_q.astype(np.float64) @ q_w[:7].T.astype(np.float64) * x_s * alpha[:7]
    u = x_q.astype(np.float64) @ q_w[7:].T.astype(np.float64) * x_s * alpha[7:]
    assert h.dtype == np.float32 and h.shape == (3, 7)
    np.testing.assert_allclose(h, np.maximum(g, 0) ** 2 * u, rtol=1e-5, atol=1e-6)
    assert (h[g <= 0] == 0).all()  # rows whose gate is not positive contribute nothing
    with pytest.raises(ValueError, match="even count"):
        ref.ternary_gate_up(x_q, x_s, q_w[:13], alpha[:13])
