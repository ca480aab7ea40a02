"""TopK-mask spellings in front of a quantizer (a4.8's o_proj input)."""

from __future__ import annotations

import pytest
from tvm import relax

from bitnet_tvm.relay_passes.fuse_bitlinear import find_bitlinears
from bitnet_tvm.relay_passes.graph_view import GraphView
from bitnet_tvm.relay_passes.topk_match import match_topk_mask

K, N, KEEP = 8, 4, 4


def _topk(bb, mag, largest: bool, tuple_out: bool, index: int):
    """``topk(mag)`` values (index 0) or indices (1), through a tuple like the ONNX import's."""
    if tuple_out:
        top = bb.emit(relax.op.topk(mag, KEEP, axis=-1, ret_type="both", largest=largest))
        return bb.emit(relax.TupleGetItem(top, index))
    ret = "values" if index == 0 else "indices"
    return bb.emit(relax.op.topk(mag, KEEP, axis=-1, ret_type=ret, largest=largest))


def _mask(bb, rx, x0, spelling: str, largest=True, of=None, tuple_out=False):
    mag = bb.emit(relax.op.abs(x0 if of is None else of))
    if spelling == "scatter":
        idx = _topk(bb, mag, largest, tuple_out, 1)
        zeros = bb.emit(relax.op.zeros_like(x0))
        ones = bb.emit(relax.op.ones_like(_topk(bb, mag, largest, tuple_out, 0)))
        mask = bb.emit(relax.op.scatter_elements(zeros, idx, ones, axis=-1))
        return bb.emit(relax.op.multiply(x0, mask))
    vals = _topk(bb, mag, largest, tuple_out, 0)
    kth = bb.emit(relax.op.strided_slice(vals, axes=[2], begin=[KEEP - 1], end=[KEEP]))
    keep = bb.emit(relax.op.greater_equal(mag, kth))
    if spelling == "multiply_astype":
        return bb.emit(relax.op.multiply(x0, bb.emit(relax.op.astype(keep, rx.F32))))
    if spelling == "where":
        return bb.emit(relax.op.where(keep, x0, rx.const(0.0)))
    if spelling == "where_broadcast_zero":  # how our exporter's zeros_like imports
        zero = bb.emit(relax.op.broadcast_to(rx.const(0.0), x0.ty.shape))
        return bb.emit(relax.op.where(keep, x0, zero))
    raise ValueError(spelling)


def _topk_bitlinear(rx, spelling, **kw):
    w = rx.ternary_weight(K, N)
    other = relax.Var("z", rx.sym_var("z", K).ty) if kw.get("foreign") else None

    def body(bb, x, *rest):
        largest, tuple_out = kw.get("largest", True), kw.get("tuple_out", False)
        masked = _mask(bb, rx, x, spelling, largest, other, tuple_out)
        return rx.emit_bitlinear(bb, masked, w, bits=8)

    x = rx.sym_var("x", K)
    mod = rx.module([x] if other is None else [x, other], body)
    return mod, x


@pytest.mark.parametrize(
    "spelling",
    [
        "where",
        "multiply_astype",
        "scatter",
        "where_broadcast_zero",  # how our exporter's zeros_like imports
    ],
)
def test_topk_mask_spellings(rx, spelling):
    mod, x = _topk_bitlinear(rx, spelling)
    _check_topk(mod, x)


@pytest.mark.parametrize(
    "spelling", ["where", "multiply_astype", "scatter", "where_broadcast_zero"]
)
def test_topk_mask_through_tuple(rx, spelling):
    """topk(..., ret_type="both")[i]: how every ONNX TopK imports."""
    mod, x = _topk_bitlinear(rx, spelling, tuple_out=True)
    _check_topk(mod, x)


def _check_topk(mod, x):
    (m,) = find_bitlinears(GraphView.of(mod, mod["main"]))
    assert m.act.act.topk == KEEP / K
    assert m.act.source.same_as(x)  # the fused quantizer reads the unmasked input
    assert (m.act.act.method.value, m.act.act.bits) == ("absmax", 8)


@pytest.mark.parametrize("kw", [{"largest": False}, {"foreign": True}], ids=["smallest", "other"])
def test_not_a_topk_mask(rx, kw):
    """topk of the smallest, or of another tensor's magnitudes, is no TopK sparsification."""
    mod, _ = _topk_bitlinear(rx, "where", **kw)
    g = GraphView.of(mod, mod["main"])
    (m,) = find_bitlinears(g)
    assert m.act.act.topk is None  # the mask stays in the graph; the quantizer still matches
    assert all(match_topk_mask(g, v) is None for v in g.var2val)
