"""Quantizers of :mod:`bitnet_tvm.reference` against independent element-wise formulations.

Two independent checks per quantizer:

* float64 math from the written formula (``math.fsum`` statistics, Python ``round`` = round half
  to even); codes must agree except where the float64 value lies within a relative 3e-5 of a
  rounding boundary, where float32 evaluation order may legitimately flip it;
* the documented float32 operation order replayed scalar by scalar (exact equality), on inputs
  whose statistic float32 computes exactly (absmax always; absmean on dyadic rows).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitnet_tvm import reference as ref
from bitnet_tvm.schemes import ActQuant, EpsMode, QuantMethod, get_scheme

F32 = np.float32
SQRT7 = math.sqrt(7.0)
SETTINGS = settings(deadline=None, max_examples=100)
HUGE = float(np.float32(1e30))


# --------------------------------------------------------------------------- strategies
@st.composite
def activations(draw, max_side: int = 13) -> np.ndarray:
    """float32 arrays ``[..., d]`` mixing generic values with zero, constant, huge, tiny rows."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=max_side))
    if draw(st.booleans()):
        elements = st.floats(-HUGE, HUGE, width=32)
        return draw(hnp.arrays(F32, shape, elements=elements))
    x = draw(hnp.arrays(F32, shape, elements=st.floats(-4, 4, width=32)))
    rows = x.reshape(-1, shape[-1])
    for i in range(rows.shape[0]):
        kind = draw(st.sampled_from(["keep", "zero", "constant", "ties"]))
        if kind == "zero":
            rows[i] = 0
        elif kind == "constant":
            rows[i] = draw(st.floats(-4, 4, width=32))
        elif kind == "ties":
            rows[i] = draw(st.lists(st.sampled_from([-2.0, -1.0, 0.0, 1.0, 2.0]), **_n(shape)))
    magnitude = draw(st.sampled_from([1e-30, 1e-6, 1.0, 1e30]))
    return (x * F32(magnitude)).astype(F32)


def _n(shape: tuple[int, ...]) -> dict[str, int]:
    return {"min_size": shape[-1], "max_size": shape[-1]}


eps_modes = st.sampled_from([EpsMode.ADD, EpsMode.CLAMP])


# --------------------------------------------------------------------------- independent math
def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1])


def _guard64(stat: float, mode: EpsMode, eps: float) -> float:
    return stat + eps if mode is EpsMode.ADD else max(stat, eps)


def check_codes_float64(x, q, scale, stat_of, levels, qmin, qmax, mode, eps=ref.EPS) -> None:
    """``q``/``scale`` against ``clip(round(x * levels / guard(stat)))`` in float64."""
    assert q.dtype == np.int8 and q.shape == x.shape
    assert scale.dtype == np.float32 and scale.shape == (*x.shape[:-1], 1)
    for row, qrow, srow in zip(_rows(x), _rows(q), _rows(scale), strict=True):
        values = [float(v) for v in row]
        denom = _guard64(stat_of(values), mode, eps)
        assert math.isclose(float(srow[0]), denom / levels, rel_tol=1e-5)
        for v, code in zip(values, qrow, strict=True):
            t = v * levels / denom
            want = min(qmax, max(qmin, round(t)))
            near_boundary = abs(abs(t - math.floor(t)) - 0.5) <= 3e-5 * max(1.0, abs(t))
            assert code == want or (near_boundary and abs(int(code) - want) == 1), (v, t, code)


def absmean(values: list[float]) -> float:
    return math.fsum(abs(v) for v in values) / len(values)


def absmax(values: list[float]) -> float:
    return max(abs(v) for v in values)


def replay_float32(x, stat32, levels, qmin, qmax, mode, eps=ref.EPS):
    """The documented float32 order, one scalar at a time: ``s = L / d``, ``q = rint(x * s)``."""
    q = np.empty(x.shape, np.int8)
    scale = np.empty((*x.shape[:-1], 1), F32)
    lv = F32(levels)
    for row, qrow, srow, stat in zip(_rows(x), _rows(q), _rows(scale), stat32, strict=True):
        denom = stat + F32(eps) if mode is EpsMode.ADD else max(stat, F32(eps))
        mult = lv / denom
        for k, v in enumerate(row):
            qrow[k] = min(qmax, max(qmin, round(float(v * mult))))
        srow[0] = denom / lv
    return q, scale


def check_dequant_error(x, q, scale, qmin, qmax) -> None:
    """``|x - q * scale| <= scale / 2`` wherever ``x / scale`` is inside the clip range."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    s64 = np.broadcast_to(scale.astype(np.float64), x.shape)
    t = x64 / s64
    inside = (t >= qmin - 0.5) & (t <= qmax + 0.5)
    err = np.abs(x64 - q64 * s64)
    assert np.all(err[inside] <= s64[inside] * (0.5 + 1e-4))
    assert np.all(q[~inside & (t > 0)] == qmax) and np.all(q[~inside & (t < 0)] == qmin)


# --------------------------------------------------------------------------- weights
@SETTINGS
@given(w=activations())
def test_ternary_weights_match_float64(w):
    q, alpha = ref.quantize_weights_ternary(w)
    assert q.dtype == np.int8 and q.shape == w.shape and isinstance(alpha, np.float32)
    alpha64 = max(absmean(list(w.ravel().astype(float))), ref.EPS)
    assert math.isclose(float(alpha), alpha64, rel_tol=1e-5)
    for v, code in zip(w.ravel(), q.ravel(), strict=True):
        # exact, given the returned alpha: W / alpha in float32, round half to even, clip
        assert code == min(1, max(-1, round(float(v / alpha))))
        t = float(v) / alpha64
        near_boundary = abs(abs(t - math.floor(t)) - 0.5) <= 3e-5 * max(1.0, abs(t))
        assert code == min(1, max(-1, round(t))) or near_boundary


def test_ternary_weights_zero_matrix_uses_eps():
    q, alpha = ref.quantize_weights_ternary(np.zeros((3, 5), F32))
    assert alpha == F32(ref.EPS) and not q.any()


def test_ternary_weights_round_half_even():
    # mean|w| = 1, so w / alpha = w: halves go to the even neighbour, like torch.round
    w = np.array([[0.5, -0.5, 1.5, -1.5, 0.25, 1.75]], F32)
    q, alpha = ref.quantize_weights_ternary(w)
    assert alpha == 1.0
    np.testing.assert_array_equal(q, [[0, 0, 1, -1, 0, 1]])
    np.testing.assert_array_equal(q, torch.round(torch.from_numpy(w)).clamp(-1, 1).numpy())


# --------------------------------------------------------------------------- activations
@SETTINGS
@given(x=activations(), mode=eps_modes)
def test_int4_absmean_matches_float64(x, mode):
    q, scale = ref.quantize_act_int4(x, eps_mode=mode)
    check_codes_float64(x, q, scale, absmean, SQRT7, -8, 7, mode)
    check_dequant_error(x, q, scale, -8, 7)


@settings(deadline=None, max_examples=50)
@given(
    x=hnp.arrays(
        F32,
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=48),
        elements=st.integers(-512, 512).map(lambda k: k / 64),
    ),
    mode=eps_modes,
)
def test_int4_absmean_float32_order_exact(x, mode):
    # multiples of 1/64 below 8: float32 sums them exactly, so the statistic is known exactly
    stat32 = [F32(math.fsum(abs(float(v)) for v in row) / row.size) for row in _rows(x)]
    want_q, want_scale = replay_float32(x, stat32, SQRT7, -8, 7, mode)
    q, scale = ref.quantize_act_int4(x, eps_mode=mode)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(scale, want_scale)


@SETTINGS
@given(x=activations(), mode=eps_modes)
def test_int8_absmax_matches_float64_and_float32_order(x, mode):
    q, scale = ref.quantize_act_int8(x, eps_mode=mode)
    check_codes_float64(x, q, scale, absmax, 127.0, -128, 127, mode)
    check_dequant_error(x, q, scale, -128, 127)
    stat32 = [F32(absmax([float(v) for v in row])) for row in _rows(x)]
    want_q, want_scale = replay_float32(x, stat32, 127.0, -128, 127, mode)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(scale, want_scale)


@SETTINGS
@given(x=activations())
def test_int8_clamp_matches_hf_bitlinear(x):
    # HF BitLinear.activation_quant, the definition of the b1.58 ("clamp") convention
    t = torch.from_numpy(x)
    s = 127.0 / t.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
    want = (t * s).round().clamp_(-128, 127).to(torch.int8).numpy()
    q, scale = ref.quantize_act_int8(x, eps_mode="clamp")
    np.testing.assert_array_equal(q, want)
    np.testing.assert_allclose(scale, (1.0 / s).numpy(), rtol=3e-7)


def test_int8_round_half_even():
    # max|x| = 127 with clamp: the multiplier is exactly 1, so x itself is rounded
    x = np.array([127, 0.5, 1.5, 2.5, -0.5, -2.5, -3.5, 126.5], F32)
    q, scale = ref.quantize_act_int8(x, eps_mode="clamp")
    assert scale[0] == 1.0
    np.testing.assert_array_equal(q, [127, 0, 2, 2, 0, -2, -4, 126])
    np.testing.assert_array_equal(q, torch.round(torch.from_numpy(x)).numpy())


def test_eps_modes_differ_as_documented():
    x = np.array([[2e-6, -1e-6], [0.0, 0.0]], F32)
    _, add = ref.quantize_act_int8(x, eps_mode="add")
    _, clamp = ref.quantize_act_int8(x, eps_mode="clamp")
    np.testing.assert_array_equal(add[:, 0], [F32(2e-6) + F32(1e-5), F32(1e-5)] / F32(127))
    np.testing.assert_array_equal(clamp[:, 0], [F32(1e-5) / F32(127)] * 2)


def test_zero_rows_give_zero_codes():
    x = np.zeros((2, 7), F32)
    for quantize in (ref.quantize_act_int4, ref.quantize_act_int8):
        for mode in EpsMode:
            q, scale = quantize(x, eps_mode=mode)
            assert not q.any() and np.all(scale > 0)


def test_int4_gaussian_rows_are_about_12_percent_zeros():
    x = np.random.default_rng(0).standard_normal((256, 2560)).astype(F32)
    q, _ = ref.quantize_act_int4(x)
    assert 0.10 <= np.mean(q == 0) <= 0.14  # paper Table 2: 12.1% (QKV), 12.0-12.1% (gate)


# --------------------------------------------------------------------------- TopK
def topk_keep(row: np.ndarray, count: int) -> set[int]:
    """Indices kept: largest magnitude first, the lower index first among equal magnitudes."""
    return set(sorted(range(row.size), key=lambda i: (-abs(float(row[i])), i))[:count])


@pytest.mark.parametrize(
    ("d", "ratio", "count"),
    [
        (8, 0.5, 4),
        (7, 0.5, 4),
        (1, 0.5, 1),
        (3, 0.01, 1),
        (100, 0.07, 7),
        (10, 0.3, 3),
        (5, 1.0, 5),
    ],
)
def test_topk_count_is_ceil(d, ratio, count):
    assert ref.topk_count(d, ratio) == count


@settings(deadline=None, max_examples=200)
@given(d=st.integers(1, 5000), percent=st.integers(1, 100))
def test_topk_count_exact_ceil_for_decimal_ratios(d, percent):
    assert ref.topk_count(d, percent / 100) == -(-percent * d // 100)


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5, float("nan")])
def test_topk_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match="keep_ratio"):
        ref.topk_sparsify(np.ones((2, 4), F32), ratio)


@SETTINGS
@given(x=activations(), ratio=st.sampled_from([0.5, 0.25, 0.3, 0.07, 1.0]))
def test_topk_keeps_ceil_largest_lower_index_first(x, ratio):
    out = ref.topk_sparsify(x, ratio)
    assert out.dtype == np.float32 and out.shape == x.shape
    d = x.shape[-1]
    count = max(1, -(-round(ratio * 100) * d // 100))
    for row, orow in zip(_rows(x), _rows(out), strict=True):
        keep = topk_keep(row, count)
        for i in range(d):
            assert orow[i] == (row[i] if i in keep else 0.0)


def test_topk_ties_keep_lower_index():
    x = np.array([[1, -1, 1, -1, 1, -1], [0, 0, 0, 0, 0, 3], [2, 1, -2, 1, 2, -1]], F32)
    np.testing.assert_array_equal(
        ref.topk_sparsify(x, 0.5),
        [[1, -1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 3], [2, 0, -2, 0, 2, 0]],
    )


@pytest.mark.parametrize("d", [2, 64, 2560, 7, 13, 1])
def test_topk_half_zero_fraction(d):
    x = np.random.default_rng(d).standard_normal((32, d)).astype(F32)
    zeros = np.sum(ref.topk_sparsify(x, 0.5) == 0, axis=-1)
    np.testing.assert_array_equal(zeros, d // 2)  # 50.0% exactly when even; ceil keeps more


# --------------------------------------------------------------------------- site quantizers
@SETTINGS
@given(x=activations())
def test_quantize_act_a48_sites(x):
    scheme = get_scheme("a4.8")
    for site in ("qkv", "gate_up"):
        q, scale = ref.quantize_act(x, scheme.site(site))
        want_q, want_scale = ref.quantize_act_int4(x)
        np.testing.assert_array_equal(q, want_q)
        np.testing.assert_array_equal(scale, want_scale)
    q8, scale8 = ref.quantize_act_int8(x)
    q, scale = ref.quantize_act(x, scheme.down)
    np.testing.assert_array_equal(q, q8)
    np.testing.assert_array_equal(scale, scale8)
    # o_proj: TopK keeps max|x|, so masking the INT8 codes after quantizing gives the same integers
    q, scale = ref.quantize_act(x, scheme.o)
    np.testing.assert_array_equal(scale, scale8)
    count = ref.topk_count(x.shape[-1], 0.5)
    for row, qrow, q8row in zip(_rows(x), _rows(q), _rows(q8), strict=True):
        keep = topk_keep(row, count)
        np.testing.assert_array_equal(qrow, [q8row[i] if i in keep else 0 for i in range(row.size)])


def test_quantize_act_b158_uses_clamp():
    x = np.array([[3e-6, -1e-6, 0.0]], F32)
    q, scale = ref.quantize_act(x, get_scheme("b1.58").qkv)
    want_q, want_scale = ref.quantize_act_int8(x, eps_mode="clamp")
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(scale, want_scale)


def test_quantize_act_absmean_bits8_uses_levels():
    act = ActQuant(QuantMethod.ABSMEAN, bits=8)
    x = np.array([[1.0, -1.0, 0.5, 4.0]], F32)
    q, scale = ref.quantize_act(x, act)
    check_codes_float64(x, q, scale, absmean, math.sqrt(127), -128, 127, EpsMode.ADD)


def test_quantize_act_disabled_raises():
    with pytest.raises(ValueError, match="enabled ActQuant"):
        ref.quantize_act(np.ones((1, 4), F32), ActQuant())


# --------------------------------------------------------------------------- KV cache
@SETTINGS
@given(x=activations(), bits=st.sampled_from([3, 4]))
def test_quantize_kv_matches_float64_and_float32_order(x, bits):
    levels = (1 << (bits - 1)) - 1
    q, scale = ref.quantize_kv(x, bits)
    check_codes_float64(x, q, scale, absmax, levels, -levels, levels, EpsMode.ADD)
    stat32 = [F32(absmax([float(v) for v in row])) for row in _rows(x)]
    want_q, want_scale = replay_float32(x, stat32, levels, -levels, levels, EpsMode.ADD)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(scale, want_scale)
    # absmax never clips: every element is within half a step of its code
    deq = ref.dequantize_kv(q, scale)
    assert deq.dtype == np.float32
    err = np.abs(x.astype(np.float64) - deq)
    assert np.all(err <= np.broadcast_to(scale, x.shape) * (0.5 + 1e-4))
    # the largest magnitude of each row lands on the top level once it dwarfs eps
    # (L * a / (a + eps) >= L - 1/2 needs a >= (2L - 1) eps)
    big = np.max(np.abs(_rows(x)), axis=-1) >= (2 * levels) * ref.EPS
    top = np.max(np.abs(_rows(q).astype(int)), axis=-1)
    assert np.all(top[big] == levels)


def test_dequantize_kv_is_q_times_scale():
    q = np.array([[-7, 0, 3], [1, 2, -1]], np.int8)
    scale = np.array([[0.5], [0.25]], F32)
    np.testing.assert_array_equal(ref.dequantize_kv(q, scale), [[-3.5, 0, 1.5], [0.25, 0.5, -0.25]])


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_quantize_kv_bits(bits):
    with pytest.raises(ValueError, match="KV bits must be 3 or 4"):
        ref.quantize_kv(np.ones((1, 8), F32), bits)
