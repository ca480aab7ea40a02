"""Bad input to the float entry points of :mod:`bitnet_tvm.reference`: clear errors, named."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitnet_tvm import reference as ref
from bitnet_tvm.schemes import get_scheme

# (callable taking one float array, the name its errors use)
ENTRY_POINTS = {
    "quantize_weights_ternary": (ref.quantize_weights_ternary, "w"),
    "quantize_act_int4": (ref.quantize_act_int4, "x"),
    "quantize_act_int8": (ref.quantize_act_int8, "x"),
    "topk_sparsify": (lambda x: ref.topk_sparsify(x, 0.5), "x"),
    "quantize_act_o": (lambda x: ref.quantize_act(x, get_scheme("a4.8").o), "x"),
    "quantize_kv": (lambda x: ref.quantize_kv(x, 3), "x"),
    "rmsnorm": (lambda x: ref.rmsnorm(x, None), "x"),
}
params = pytest.mark.parametrize(("fn", "name"), ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())


@params
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected_with_index(fn, name, bad):
    x = np.ones((2, 5), np.float32)
    x[1, 3] = bad
    with pytest.raises(ValueError, match=rf"^{name} must be finite.*at index \(1, 3\)"):
        fn(x)


@params
def test_float64_beyond_float32_range_rejected(fn, name):
    with pytest.raises(ValueError, match=rf"^{name} must be finite in float32"):
        fn(np.array([[1.0, 1e39]]))


@params
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.bool_, np.complex64])
def test_non_float_dtype_rejected(fn, name, dtype):
    with pytest.raises(TypeError, match=rf"^{name} must have a floating dtype"):
        fn(np.ones((2, 4), dtype))


@params
def test_non_array_rejected(fn, name):
    with pytest.raises(TypeError, match=rf"^{name} must be a numpy array, got list"):
        fn([[1.0, 2.0]])


@params
def test_scalar_and_empty_rows_rejected(fn, name):
    with pytest.raises(ValueError, match=rf"^{name} must have at least 1 dimension"):
        fn(np.array(1.0, np.float32))
    with pytest.raises(ValueError, match=rf"^{name} must have a non-empty last axis"):
        fn(np.ones((3, 0), np.float32))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize(
    "fn", [ref.quantize_weights_ternary, ref.quantize_act_int4], ids=["weights", "int4"]
)
def test_overflowing_statistic_rejected(fn):
    # finite float32 values whose mean(|x|) sum overflows float32
    with pytest.raises(ValueError, match="too large"):
        fn(np.full((1, 4), 3e38, np.float32))


@settings(deadline=None, max_examples=30)
@given(
    x=hnp.arrays(
        np.float64, st.tuples(st.integers(1, 3), st.integers(1, 9)), elements=st.floats(-9, 9)
    ),
    dtype=st.sampled_from([np.float16, np.float64]),
)
def test_other_float_widths_are_cast_to_float32(x, dtype):
    x = x.astype(dtype)
    for fn, _ in ENTRY_POINTS.values():
        got, want = fn(x), fn(x.astype(np.float32))
        for g, w in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, want)), strict=True):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
