"""Torch fake quantizers against the NumPy reference: integer codes bit for bit."""

import numpy as np
import pytest
import torch

from bitnet_tvm import reference as ref
from bitnet_tvm.model import quant
from bitnet_tvm.schemes import ActQuant, EpsMode, QuantMethod, get_scheme

RNG = np.random.default_rng(0)
SHAPES = [(1, 7), (2, 13), (64, 256), (8, 3, 172)]


def _x(shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _codes(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.int8)


def _check_codes(q, scale, q_ref, scale_ref):
    """Codes equal the reference bit for bit wherever the per-row scale does; rows whose mean
    was summed in another order (scale one ulp off) may differ by one level, in <= 0.1 %."""
    same_row = np.broadcast_to(scale == scale_ref, q.shape)
    assert np.array_equal(q[same_row], q_ref[same_row])
    diff = q.astype(int) - q_ref.astype(int)
    assert np.abs(diff).max(initial=0) <= 1
    assert np.count_nonzero(diff) <= 1e-3 * q.size
    np.testing.assert_allclose(scale, scale_ref, rtol=5e-7, atol=0)  # a few ulps


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "act",
    [
        ActQuant(QuantMethod.ABSMEAN, bits=4),
        ActQuant(QuantMethod.ABSMEAN, bits=4, eps_mode=EpsMode.CLAMP),
        ActQuant(QuantMethod.ABSMAX, bits=8),
        ActQuant(QuantMethod.ABSMAX, bits=8, eps_mode=EpsMode.CLAMP),
        ActQuant(QuantMethod.ABSMAX, bits=8, topk=0.5),
        ActQuant(QuantMethod.ABSMAX, bits=4, topk=0.3),
    ],
    ids=["int4", "int4-clamp", "int8", "int8-clamp", "topk50-int8", "topk30-int4max"],
)
def test_activation_codes_match_reference(shape, act):
    x = _x(shape, scale=3.0)
    q, scale = quant.quantize_activation(torch.from_numpy(x), act)
    q_ref, scale_ref = ref.quantize_act(x, act)
    _check_codes(_codes(q), scale.numpy(), q_ref, scale_ref)
    if act.method is QuantMethod.ABSMAX:  # max reductions are exact: no tolerance at all
        assert np.array_equal(_codes(q), q_ref)
        assert np.array_equal(scale.numpy(), scale_ref)


def test_int4_codes_match_on_many_rows():
    """A large sample: the bound of 0.1 % one-level differences holds, and most rows agree."""
    x = _x((4096, 256))
    q, scale = quant.quantize_activation(torch.from_numpy(x), get_scheme("a4.8").qkv)
    q_ref, scale_ref = ref.quantize_act_int4(x)
    _check_codes(_codes(q), scale.numpy(), q_ref, scale_ref)


@pytest.mark.parametrize("shape", [(16, 16), (172, 64), (64, 172), (3, 5, 7)])
def test_ternary_codes_match_reference(shape):
    w = _x(shape, scale=0.02)
    q, alpha = quant.quantize_weight_ternary(torch.from_numpy(w))
    q_ref, alpha_ref = ref.quantize_weights_ternary(w)
    _check_codes(_codes(q), alpha.numpy().reshape(1), q_ref, np.asarray(alpha_ref).reshape(1))
    assert set(np.unique(_codes(q))) <= {-1, 0, 1}


def test_ternary_alpha_floor():
    q, alpha = quant.quantize_weight_ternary(torch.zeros(4, 4))
    assert float(alpha) == np.float32(ref.EPS)
    assert not q.any()


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("shape", [(2, 4, 5, 16), (1, 1, 3, 128), (2, 7)])
def test_kv_codes_match_reference(bits, shape):
    x = _x(shape)
    q, scale = quant.quantize_kv(torch.from_numpy(x), bits)
    q_ref, scale_ref = ref.quantize_kv(x, bits)
    assert np.array_equal(_codes(q), q_ref)
    assert np.array_equal(scale.numpy(), scale_ref)
    deq = quant.fake_quantize_kv(torch.from_numpy(x), bits).numpy()
    assert np.array_equal(deq, ref.dequantize_kv(q_ref, scale_ref))


@pytest.mark.parametrize("ratio", [0.5, 0.3, 1.0, 0.01])
def test_topk_matches_reference_with_ties(ratio):
    # many exact magnitude ties (small integers, both signs) exercise the lower-index rule
    x = RNG.integers(-3, 4, size=(50, 37)).astype(np.float32)
    got = quant.topk_sparsify(torch.from_numpy(x), ratio).numpy()
    assert np.array_equal(got, ref.topk_sparsify(x, ratio))


def test_topk_keeps_exactly_ceil_ratio_entries():
    x = _x((32, 101))
    got = quant.topk_sparsify(torch.from_numpy(x), 0.5).numpy()
    assert ref.topk_count(101, 0.5) == 51
    assert np.all(np.count_nonzero(got, axis=-1) == 51)


def test_ste_gradient_is_identity_through_round_and_clip():
    x = torch.tensor([[0.3, -2.0, 5.0, 0.01]], requires_grad=True)
    act = ActQuant(QuantMethod.ABSMAX, bits=8)
    codes, scale = quant.quantize_activation(x, act)
    (codes * scale).sum().backward()
    # d(codes * scale)/dx = (L / d) * (d / L): one up to float rounding
    np.testing.assert_allclose(x.grad.numpy(), 1.0, rtol=1e-6)
    # the forward value is still exactly the integer codes
    q_ref, _ = ref.quantize_act(x.detach().numpy(), act)
    assert np.array_equal(_codes(codes), q_ref)


def test_straight_through_is_exact_in_forward():
    y = torch.randn(1000, requires_grad=True) * 10
    out = quant.straight_through(torch.round(y), y)
    assert torch.equal(out, torch.round(y))
    assert out.requires_grad


def test_bad_inputs():
    with pytest.raises(TypeError, match="float32"):
        quant.quantize_activation(torch.ones(3, 4, dtype=torch.float64), get_scheme("a4.8").qkv)
    with pytest.raises(ValueError, match="enabled"):
        quant.quantize_activation(torch.ones(3, 4), ActQuant())
    with pytest.raises(ValueError, match="3 or 4"):
        quant.quantize_kv(torch.ones(3, 4), 8)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        quant.quantize_weight_ternary(np.ones((2, 2), np.float32))
