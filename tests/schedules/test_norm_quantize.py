"""norm_quantize against reference.rmsnorm + reference.quantize_act, bit for bit."""

import numpy as np
import pytest
import tvm

from bitnet_tvm import reference
from bitnet_tvm.schedules.operators import norm_quantize
from bitnet_tvm.schedules.operators.norm_quantize import _leaves, pairwise_blocks
from bitnet_tvm.schemes import ActQuant, EpsMode, QuantMethod, get_scheme

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})
A48 = get_scheme("a4.8")
ACTS = {
    "int4_absmean": A48.qkv,
    "topk_int8": A48.o,
    "int8_absmax": A48.down,
    "b158_clamp": get_scheme("b1.58").qkv,
    "topk_absmean": ActQuant(QuantMethod.ABSMEAN, bits=4, topk=0.3),
}


def _run(func, x, gamma=None):
    ex = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), TARGET)
    m, k = x.shape
    x_q = tvm.runtime.tensor(np.zeros((m, k), np.int8))
    x_s = tvm.runtime.tensor(np.zeros((m, 1), np.float32))
    extra = [] if gamma is None else [tvm.runtime.tensor(gamma)]
    ex["main"](tvm.runtime.tensor(x), *extra, x_q, x_s)
    return x_q.numpy(), x_s.numpy()


@pytest.mark.parametrize("name", list(ACTS))
@pytest.mark.parametrize("k, norm_eps, has_weight", [(37, None, False), (300, 1e-6, True)])
def test_matches_reference(name, k, norm_eps, has_weight):
    act = ACTS[name]
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((5, k)) * 3).astype(np.float32)
    x[:, ::7] = x[:, 3:4]  # repeated magnitudes: TopK ties
    gamma = rng.random(k).astype(np.float32) + np.float32(0.5) if has_weight else None
    func = norm_quantize(k, act=act, norm_eps=norm_eps, has_weight=has_weight)
    got_q, got_s = _run(func, x, gamma)
    y = x if norm_eps is None else reference.rmsnorm(x, gamma, norm_eps)
    want_q, want_s = reference.quantize_act(y, act)
    assert np.array_equal(got_q, want_q)
    assert np.array_equal(got_s, want_s)


def test_rmsnorm_sum_is_numpy_pairwise():
    """K = 2560 has 32 pairwise blocks: the float32 sum and hence the scale are NumPy's."""
    assert [leaf.length for leaf in _leaves(pairwise_blocks(2560))] == [80] * 32
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 2560)) * 3).astype(np.float32)
    func = norm_quantize(2560, act=A48.qkv, norm_eps=1e-5, has_weight=False)
    got_q, got_s = _run(func, x)
    want_q, want_s = reference.quantize_act(reference.rmsnorm(x, None, 1e-5), A48.qkv)
    assert np.array_equal(got_q, want_q) and np.array_equal(got_s, want_s)


def test_round_half_to_even():
    """max|x| = 127 under a clamp eps gives s = 1 exactly, so x * s hits k + 0.5."""
    act = ActQuant(QuantMethod.ABSMAX, bits=8, eps_mode=EpsMode.CLAMP)
    x = np.array([[127.0, 2.5, -3.5, 0.5, 1.5, -0.5, -2.5, 126.5]], np.float32)
    got_q, got_s = _run(norm_quantize(8, act=act, norm_eps=None, has_weight=False), x)
    assert got_q.tolist() == [[127, 2, -4, 0, 2, 0, -2, 126]]
    assert got_s.tolist() == [[1.0]]
    assert np.array_equal(got_q, reference.quantize_act(x, act)[0])


def test_topk_ties_keep_lower_index():
    act = ActQuant(QuantMethod.ABSMAX, bits=8, topk=0.5)
    x = np.array([[1.0, -3.0, 3.0, 2.0, -2.0, 2.0, 3.0, -1.0, 2.0, 0.5]], np.float32)
    got_q, _ = _run(norm_quantize(10, act=act, norm_eps=None, has_weight=False), x)
    assert np.flatnonzero(got_q[0]).tolist() == [1, 2, 3, 4, 6]  # 3s, then the first two 2s
    assert np.array_equal(got_q, reference.quantize_act(x, act)[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="enabled ActQuant"):
        norm_quantize(8, act=ActQuant(), norm_eps=None, has_weight=False)
    with pytest.raises(TypeError, match="act must be an ActQuant"):
        norm_quantize(8, act="int4", norm_eps=None, has_weight=False)
    with pytest.raises(ValueError, match="has_weight=True needs norm_eps"):
        norm_quantize(8, act=A48.qkv, norm_eps=None, has_weight=True)
