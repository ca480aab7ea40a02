"""FuseBitLinear: golden IR, re-quantization by scheme, and site classification."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx

from bitnet_tvm.relay_passes.fuse_bitlinear import FuseBitLinear, classify_sites, find_bitlinears
from bitnet_tvm.relay_passes.graph_view import GraphView
from bitnet_tvm.schedules.layouts import WeightLayout
from bitnet_tvm.schemes import ActQuant, EpsMode, QuantMethod, get_scheme

K, N = 8, 4
TARGET = tvm.target.Target({"kind": "llvm"})


def _before(rx, w, **quant):
    x = rx.sym_var("x", K)
    return rx.module([x], lambda bb, x: rx.emit_bitlinear(bb, x, w, **quant))


def _expected(rx, act: ActQuant, kind: str, layout: WeightLayout, q_w, alpha):
    b, s = tirx.Var("batch", "int64"), tirx.Var("seq", "int64")
    x = relax.Var("x", relax.TensorType([b, s, K], rx.F32))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            x2d = bb.emit(relax.op.reshape(x, [b * s, K]), "x2d")
            nq = rx.add_norm_quantize(bb, K, act)
            _, codes, scales = rx.call_quantize(bb, nq, [x2d], b * s, K)
            mm = rx.add_matmul(bb, kind, N, K, act.bits, layout)
            y = rx.call_matmul(
                bb, mm, codes, scales, q_w, alpha, layout, b * s, N, "layers_0_down_proj"
            )
            out = bb.emit_output(relax.op.reshape(y, [b, s, N]))
        bb.emit_func_output(out)
    return bb.get()


def test_golden_int4_absmean(rx):
    """A lone INT4 BitLinear (site ``down``, dense operator: only INT8 goes sparse)."""
    w = rx.ternary_weight(K, N, alpha=0.5)
    after = FuseBitLinear(TARGET)(_before(rx, w, method="absmean", bits=4))
    act = ActQuant(QuantMethod.ABSMEAN, 4, eps=rx.EPS32)
    q_w = np.sign(w.T).astype(np.int8)
    alpha = np.full(N, 0.5, np.float32)
    expected = _expected(rx, act, "dense", WeightLayout.TWO_BIT, q_w, alpha)
    tvm.ir.assert_structural_equal(after, expected)


def test_golden_int8_integer_form_goes_sparse(rx):
    """``matmul(q, W) * (guard / L) * 3``: INT8 at a ``down`` site uses the sparse operator,
    alpha carries the post-matmul scale."""
    w = rx.ternary_weight(K, N, alpha=1.0, seed=1)
    after = FuseBitLinear(TARGET)(_before(rx, w, dequant="int", alpha=3.0, guard="maximum"))
    act = ActQuant(QuantMethod.ABSMAX, 8, eps_mode=EpsMode.CLAMP, eps=rx.EPS32)
    q_w = np.sign(w.T).astype(np.int8)
    alpha = np.full(N, 3.0, np.float32)
    expected = _expected(rx, act, "sparse", WeightLayout.TWO_BIT_KMAJOR, q_w, alpha)
    tvm.ir.assert_structural_equal(after, expected)


def test_scheme_requantizes(rx):
    """``scheme=b1.58`` replaces the graph's INT4 quantizer by the scheme's ``down`` one."""
    w = rx.ternary_weight(K, N, alpha=0.5)
    before = _before(rx, w, method="absmean", bits=4)
    after = FuseBitLinear(TARGET, get_scheme("b1.58"))(before)
    act = ActQuant(QuantMethod.ABSMAX, 8, eps_mode=EpsMode.CLAMP, eps=1e-5)
    q_w = np.sign(w.T).astype(np.int8)
    alpha = np.full(N, 0.5, np.float32)
    expected = _expected(rx, act, "sparse", WeightLayout.TWO_BIT_KMAJOR, q_w, alpha)
    tvm.ir.assert_structural_equal(after, expected)


def test_unmatched_graph_is_unchanged(rx):
    four = np.array([[-1.0, -0.5, 0.5, 1.0]] * K, dtype=np.float32)
    before = _before(rx, four)
    tvm.ir.assert_structural_equal(FuseBitLinear(TARGET)(before), before)


# --- site classification -------------------------------------------------------------------


def _layer_stack(rx, layers: int, input_is_param: bool):
    """``layers`` BitNet layers of BitLinears: q/k/v on one input, o on attention, gate/up on
    one input, down on the GLU.  Each BitLinear has its own quantizer (as exported)."""
    w = {n: rx.ternary_weight(K, K, seed=i) for i, n in enumerate("qkvogud")}

    def body(bb, x):
        h = x if input_is_param else bb.emit(relax.op.negative(x))
        for _ in range(layers):
            q, k, v = (bb.emit(rx.emit_bitlinear(bb, h, w[n])) for n in "qkv")
            attn = bb.emit(relax.op.add(relax.op.add(q, k), v))
            h = bb.emit(rx.emit_bitlinear(bb, attn, w["o"]))
            g, u = (bb.emit(rx.emit_bitlinear(bb, h, w[n])) for n in "gu")
            glu = bb.emit(relax.op.multiply(g, u))
            h = bb.emit(rx.emit_bitlinear(bb, glu, w["d"]))
        return relax.op.negative(h)

    return rx.module([rx.sym_var("x", K)], body)


def _sites(mod):
    g = GraphView.of(mod, mod["main"])
    return [(s.layer, s.site, s.name) for s in classify_sites(g, find_bitlinears(g))]


def _want(layers):
    out = []
    for i in range(layers):
        out += [(i, "qkv", f"layers.{i}.{n}_proj") for n in "qkv"]
        out += [(i, "o", f"layers.{i}.o_proj")]
        out += [(i, "gate_up", f"layers.{i}.{n}_proj") for n in ("gate", "up")]
        out += [(i, "down", f"layers.{i}.down_proj")]
    return out


def test_classify_sites_two_layers(rx):
    assert _sites(_layer_stack(rx, 2, input_is_param=False)) == _want(2)


def test_classify_sites_on_a_parameter(rx):
    assert _sites(_layer_stack(rx, 1, input_is_param=True)) == _want(1)
