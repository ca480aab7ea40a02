"""Spelling coverage of the BitLinear recognizer (``match_bitlinear`` / ``match_quantizer``).

Each spelling listed in :mod:`bitnet_tvm.relay_passes.quant_match` is written as a small Relax
graph and must be recognized with the right quantizer and weight scale; near misses must not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from tvm import relax

from bitnet_tvm.relay_passes.fuse_bitlinear import find_bitlinears
from bitnet_tvm.relay_passes.graph_view import GraphView
from bitnet_tvm.relay_passes.quant_match import match_quantizer, ternary_codes
from bitnet_tvm.schemes import ActQuant, EpsMode, QuantMethod

K, N = 8, 4


def _matches(mod):
    return find_bitlinears(GraphView.of(mod, mod["main"]))


def _one_bitlinear(rx, w, **kw):
    x = rx.sym_var("x", K)
    mod = rx.module([x], lambda bb, x: rx.emit_bitlinear(bb, x, w, **kw))
    return mod, x


def _only(mod):
    found = _matches(mod)
    assert len(found) == 1, f"expected one BitLinear, got {len(found)}"
    return found[0]


@pytest.mark.parametrize(
    ("quant", "want"),
    [
        ({}, ActQuant(QuantMethod.ABSMAX, 8, eps=1e-5)),
        (
            {"method": "absmean", "bits": 4},
            ActQuant(QuantMethod.ABSMEAN, 4, eps=1e-5),
        ),
        ({"method": "absmax", "bits": 4}, ActQuant(QuantMethod.ABSMAX, 4, eps=1e-5)),
        (
            {"guard": "maximum", "eps": 1e-6},
            ActQuant(QuantMethod.ABSMAX, 8, eps_mode=EpsMode.CLAMP, eps=1e-6),
        ),
        (
            {"guard": "clip", "eps": 1e-3},
            ActQuant(QuantMethod.ABSMAX, 8, eps_mode=EpsMode.CLAMP, eps=1e-3),
        ),
        (
            {"guard": "stack"},
            ActQuant(QuantMethod.ABSMAX, 8, eps_mode=EpsMode.CLAMP, eps=1e-5),
        ),
        ({"guard": "add_swapped"}, ActQuant(QuantMethod.ABSMAX, 8, eps=1e-5)),
        ({"clip": "min_max"}, ActQuant(QuantMethod.ABSMAX, 8, eps=1e-5)),
        ({"clip": "max_min", "method": "absmean", "bits": 4}, ActQuant("absmean", 4, eps=1e-5)),
        ({"mult": "recip_mul"}, ActQuant(QuantMethod.ABSMAX, 8, eps=1e-5)),
        ({"casts": True}, ActQuant(QuantMethod.ABSMAX, 8, eps=1e-5)),
    ],
    ids=[
        "absmax8-add",
        "absmean4",
        "absmax4",
        "eps-maximum",
        "eps-clip",
        "eps-max-of-stack",
        "eps-add-swapped",
        "clip-min-of-max",
        "clip-max-of-min",
        "mult-reciprocal-times-L",
        "codes-through-int8",
    ],
)
def test_float_dequant_spellings(rx, quant, want):
    """``matmul(q * (guard / L), W)`` with every quantizer spelling."""
    w = rx.ternary_weight(K, N, alpha=0.75)
    mod, x = _one_bitlinear(rx, w, dequant="float", **quant)
    m = _only(mod)
    got = m.act.act
    assert (got.method, got.bits, got.eps_mode, got.topk) == (
        want.method,
        want.bits,
        want.eps_mode,
        None,
    )
    assert got.eps == pytest.approx(want.eps, rel=1e-6)
    assert m.alpha == 0.75
    assert m.act.source.same_as(x)
    np.testing.assert_array_equal(m.q_w, np.sign(w.T).astype(np.int8))
    assert m.root.same_as(mod["main"].body.body)  # the matmul is the root


@pytest.mark.parametrize(
    ("dequant", "quant", "alpha"),
    [
        ("int", {}, 0.25),
        ("int", {"method": "absmean", "bits": 4}, 3.0),
        ("hf_auto", {"guard": "maximum"}, None),
        ("hf_auto", {"guard": "maximum", "mult": "recip_mul"}, None),
        ("hf_packed", {"guard": "maximum", "casts": True}, 0.5),
        ("hf_packed", {"guard": "clip", "mult": "recip_mul", "casts": True}, 0.125),
    ],
    ids=["ours-int", "ours-int-absmean4", "hf-auto", "hf-auto-recip", "hf-packed", "hf-packed-2"],
)
def test_dequant_spellings(rx, dequant, quant, alpha):
    """Integer form, HF AutoBitLinear and HF packed BitLinear dequantizations."""
    if alpha is None:  # weights carry their scale: {-a, 0, a}
        w, want_alpha = rx.ternary_weight(K, N, alpha=0.375), 0.375
    else:  # {-1, 0, 1} with the scale after the matmul
        w, want_alpha = rx.ternary_weight(K, N, alpha=1.0), alpha
    mod, x = _one_bitlinear(rx, w, dequant=dequant, alpha=alpha, **quant)
    m = _only(mod)
    assert m.alpha == pytest.approx(want_alpha, rel=1e-6)
    assert m.act.source.same_as(x)
    method = quant.get("method", "absmax")
    assert (m.act.act.method.value, m.act.act.bits) == (method, quant.get("bits", 8))
    want_mode = EpsMode.ADD if quant.get("guard", "add") == "add" else EpsMode.CLAMP
    assert m.act.act.eps_mode is want_mode
    # The root is the last rescale, the function's output.
    assert m.root.same_as(mod["main"].body.body)


def test_ternary_codes():
    w = np.array([[0.5, -0.5], [0.0, 0.5]], dtype=np.float32)
    q, a = ternary_codes(w)
    np.testing.assert_array_equal(q, [[1, 0], [-1, 1]])
    assert a == 0.5
    assert ternary_codes(np.array([[0.5, 0.25]], dtype=np.float32)) is None
    assert ternary_codes(np.array([[1, -1]], dtype=np.int8)) is None  # codes must be float
    q, a = ternary_codes(np.zeros((3, 2), dtype=np.float32))
    assert q.shape == (2, 3) and not q.any() and a == 1.0


@pytest.mark.parametrize(
    "quant",
    [
        {"bounds": (-15.0, 15.0)},  # levels +-15: not an INT4/INT8 code range
        {"bounds": (-127.0, 127.0)},  # symmetric INT8 is not ours either
        {"levels": 100.0},  # L does not fit the code range
        {"method": "absmax", "bits": 4, "levels": math.sqrt(7.0)},  # absmax with absmean's L
        {"stat_axis": 1},  # statistic over another axis than the last
    ],
    ids=["levels15", "sym127", "wrong-L", "absmax-sqrt7", "stat-axis1"],
)
def test_unknown_quantizer_is_not_matched(rx, quant):
    w = rx.ternary_weight(K, N)
    mod, _ = _one_bitlinear(rx, w, dequant="float", **quant)
    assert _matches(mod) == []


def test_stat_of_other_tensor_is_not_a_quantizer(rx):
    """``x * (L / (max|z| + eps))`` quantizes ``x`` with ``z``'s statistic: no match."""
    w = rx.ternary_weight(K, N)

    def body(bb, x, z):
        return rx.emit_bitlinear(bb, x, w, stat_of=z)

    x = rx.sym_var("x", K)
    z = relax.Var("z", x.ty)
    mod = rx.module([x, z], body)
    assert _matches(mod) == []
    g = GraphView.of(mod, mod["main"])
    assert all(match_quantizer(g, v) is None for v in g.var2val)


@pytest.mark.parametrize("dequant", ["none", "foreign"])
def test_wrong_or_missing_dequant_is_not_matched(rx, dequant):
    mod, _ = _one_bitlinear(rx, rx.ternary_weight(K, N), dequant=dequant)
    assert _matches(mod) == []


def test_dequant_with_another_quantizers_scale_is_not_matched(rx):
    """``q1 * (guard2 / L)``: the scale belongs to a different quantizer."""
    w = rx.ternary_weight(K, N)

    def body(bb, x, z):
        q1 = rx.emit_quantizer(bb, x)
        q2 = rx.emit_quantizer(bb, z)
        scale = bb.emit(relax.op.divide(q2.guard, rx.const(127.0)))
        return relax.op.matmul(bb.emit(relax.op.multiply(q1.q, scale)), rx.const(w))

    x = rx.sym_var("x", K)
    mod = rx.module([x, relax.Var("z", x.ty)], body)
    assert _matches(mod) == []


def test_non_ternary_or_float_activation_is_not_matched(rx):
    four = np.array([[-1.0, -0.5, 0.5, 1.0]] * K, dtype=np.float32)
    mod, _ = _one_bitlinear(rx, four)
    assert _matches(mod) == []
    x = rx.sym_var("x", K)
    w = rx.ternary_weight(K, N)
    mod = rx.module([x], lambda bb, x: relax.op.matmul(x, rx.const(w)))
    assert _matches(mod) == []


def test_alias_of_a_bitlinear_is_matched_once(rx):
    w = rx.ternary_weight(K, N)
    x = rx.sym_var("x", K)
    mod = rx.module([x], lambda bb, x: bb.emit(rx.emit_bitlinear(bb, x, w)))
    assert len(_matches(mod)) == 1
