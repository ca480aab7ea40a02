"""Graph builders shared by the graph-pass tests (exposed as the ``rx`` fixture).

Every builder writes its Relax graph op by op, so a test states exactly which spelling of a
BitLinear it feeds the recognizers.  Inputs have symbolic ``batch`` and ``seq`` axes.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from bitnet_tvm.schedules import operators
from bitnet_tvm.schedules.layouts import WeightLayout, pack_weight
from bitnet_tvm.schemes import ActQuant

F32 = "float32"
EPS32 = float(np.float32(1e-5))  # 1e-5 as the graphs store it


def sym_var(name: str, k: int, *, dims: tuple = ("batch", "seq")) -> relax.Var:
    """A float32 ``[batch, seq, k]`` parameter with fresh symbolic axes."""
    shape = [tirx.Var(d, "int64") if isinstance(d, str) else d for d in dims]
    return relax.Var(name, relax.TensorType([*shape, k], F32))


def ternary_weight(k: int, n: int, alpha: float = 0.5, seed: int = 0) -> np.ndarray:
    """A ``[K, N]`` float32 matrix of values in ``{-alpha, 0, alpha}`` (all three present)."""
    codes = np.random.default_rng(seed).integers(-1, 2, size=(k, n))
    codes.flat[:3] = (-1, 0, 1)
    return (codes * alpha).astype(np.float32)


def const(value, dtype: str = F32) -> relax.Constant:
    return relax.const(np.asarray(value, dtype=dtype))


def levels_of(method: str, bits: int) -> float:
    return math.sqrt(7.0) if (method == "absmean" and bits == 4) else float(2 ** (bits - 1) - 1)


def emit_stat(bb, x, method: str, axis: int = -1):
    mag = bb.emit(relax.op.abs(x))
    reduce = relax.op.max if method == "absmax" else relax.op.mean
    return bb.emit(reduce(mag, axis=[axis], keepdims=True))


def emit_guard(bb, stat, eps: float, spelling: str):
    """``stat`` guarded by ``eps``: ``add``, ``maximum``, ``clip`` or ``stack`` (variadic Max)."""
    e = const(eps)
    if spelling == "add":
        return bb.emit(relax.op.add(stat, e))
    if spelling == "add_swapped":
        return bb.emit(relax.op.add(e, stat))
    if spelling == "maximum":
        return bb.emit(relax.op.maximum(stat, e))
    if spelling == "clip":
        return bb.emit(relax.op.clip(stat, eps, 3.0e38))
    if spelling == "stack":
        shape = stat.ty.shape
        a = bb.emit(relax.op.broadcast_to(stat, shape))
        b = bb.emit(relax.op.broadcast_to(e, shape))
        stacked = bb.emit(relax.op.stack(relax.Tuple([a, b]), axis=0))
        return bb.emit(relax.op.max(stacked, axis=[0], keepdims=False))
    raise ValueError(spelling)


def emit_clip(bb, y, lo: float, hi: float, spelling: str):
    """``y`` clipped to ``[lo, hi]``: ``clip``, ``min_max`` or ``max_min`` (Relax ops)."""
    if spelling == "clip":
        return bb.emit(relax.op.clip(y, lo, hi))
    if spelling == "min_max":
        return bb.emit(relax.op.minimum(bb.emit(relax.op.maximum(y, const(lo))), const(hi)))
    if spelling == "max_min":
        return bb.emit(relax.op.maximum(bb.emit(relax.op.minimum(y, const(hi))), const(lo)))
    raise ValueError(spelling)


def emit_quantizer(
    bb,
    x,
    *,
    method: str = "absmax",
    bits: int = 8,
    eps: float = 1e-5,
    guard: str = "add",
    clip: str = "clip",
    mult: str = "div",
    stat_of=None,
    stat_axis: int = -1,
    levels: float | None = None,
    bounds: tuple[float, float] | None = None,
    casts: bool = False,
) -> SimpleNamespace:
    """Emit ``q = clip(round(x * (L / guard(stat))))``; returns q, mult, guard, levels."""
    L = levels_of(method, bits) if levels is None else levels
    lo, hi = bounds if bounds is not None else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    stat = emit_stat(bb, x if stat_of is None else stat_of, method, stat_axis)
    g = emit_guard(bb, stat, eps, guard)
    if mult == "div":
        m = bb.emit(relax.op.divide(const(L), g))
    elif mult == "recip_mul":  # torch's decomposition: (1 / guard) * L
        m = bb.emit(relax.op.multiply(bb.emit(relax.op.divide(const(1.0), g)), const(L)))
    else:
        raise ValueError(mult)
    y = bb.emit(relax.op.multiply(x, m))
    q = emit_clip(bb, bb.emit(relax.op.round(y)), lo, hi, clip)
    if casts:
        q = bb.emit(relax.op.astype(bb.emit(relax.op.astype(q, "int8")), F32))
    return SimpleNamespace(q=q, mult=m, guard=g, levels=L)


def emit_bitlinear(bb, x, w: np.ndarray, *, dequant: str = "float", alpha=None, **quant):
    """One BitLinear on ``x`` in a given dequantization spelling; returns its (unbound) output.

    ``dequant``: ``float`` (``matmul(q * (guard / L), W)``), ``int`` (``matmul(q, W) *
    (guard / L) * alpha``), ``hf_auto`` (``matmul(q / mult, W)``), ``hf_packed``
    (``matmul(q, W) / (ws * mult)``, ``ws = 1 / alpha``), ``none`` (codes straight into the
    matmul), ``foreign`` (``q * c`` with an unrelated constant scale).
    """
    qz = emit_quantizer(bb, x, **quant)
    wc = const(w)
    if dequant == "float":
        scale = bb.emit(relax.op.divide(qz.guard, const(qz.levels)))
        return relax.op.matmul(bb.emit(relax.op.multiply(qz.q, scale)), wc)
    if dequant == "hf_auto":
        return relax.op.matmul(bb.emit(relax.op.divide(qz.q, qz.mult)), wc)
    if dequant == "int":
        y = bb.emit(relax.op.matmul(qz.q, wc))
        scale = bb.emit(relax.op.divide(qz.guard, const(qz.levels)))
        if alpha is None:
            return relax.op.multiply(y, scale)
        return relax.op.multiply(bb.emit(relax.op.multiply(y, scale)), const(alpha))
    if dequant == "hf_packed":
        y = bb.emit(relax.op.matmul(qz.q, wc))
        den = bb.emit(relax.op.multiply(const(1.0 / alpha), qz.mult))
        return relax.op.divide(y, den)
    if dequant == "none":
        return relax.op.matmul(qz.q, wc)
    if dequant == "foreign":
        dq = bb.emit(relax.op.multiply(qz.q, const(0.01)))
        return relax.op.matmul(dq, wc)
    raise ValueError(dequant)


def module(params, body) -> tvm.IRModule:
    """``main(*params)``: ``body(bb, *params)`` emits a dataflow block and returns the (unbound)
    output expression, bound here as the function's output."""
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def spec_json(**fields) -> str:
    """A ``bitnet.spec`` attribute value, written out field by field by the test."""
    if "act" in fields:
        act: ActQuant = fields["act"]
        fields["act"] = {
            "bits": act.bits,
            "eps": act.eps,
            "eps_mode": act.eps_mode.value,
            "method": act.method.value,
            "topk": act.topk,
        }
    return json.dumps(fields, sort_keys=True)


def add_norm_quantize(bb, k: int, act: ActQuant, norm_eps=None, has_weight=False):
    """Add the ``norm_quantize`` PrimFunc as the graph passes do (private, spec attribute)."""
    func = operators.norm_quantize(k, act=act, norm_eps=norm_eps, has_weight=has_weight)
    spec = spec_json(type="QuantizeSpec", k=k, act=act, norm_eps=norm_eps, has_weight=has_weight)
    func = func.without_attr("global_symbol").with_attr("bitnet.spec", spec)
    return bb.add_func(func, "norm_quantize")


def add_matmul(bb, kind: str, n: int, k: int, act_bits: int, layout: WeightLayout):
    """Add a ternary matmul PrimFunc (``dense``/``gate_up``/``sparse``) with its spec."""
    if kind == "dense":
        func = operators.ternary_matmul(n, k, act_bits=act_bits, layout=layout)
    elif kind == "gate_up":
        func = operators.ternary_gate_up(n, k, act_bits=act_bits, layout=layout)
    else:
        func = operators.sparse_int8_matmul(n, k, layout=layout)
    spec = spec_json(type="MatmulSpec", kind=kind, n=n, k=k, act_bits=act_bits, layout=layout.value)
    func = func.without_attr("global_symbol").with_attr("bitnet.spec", spec)
    return bb.add_func(func, "ternary_matmul")


def call_quantize(bb, gvar, args, rows, k: int):
    """``xq = call_tir(norm_quantize, args)``; returns ``(xq, codes, scales)`` vars."""
    out_ty = [relax.TensorType([rows, k], "int8"), relax.TensorType([rows, 1], F32)]
    xq = bb.emit(relax.call_tir(gvar, relax.Tuple(args), out_ty), "xq")
    codes = bb.emit(relax.TupleGetItem(xq, 0), "xq_codes")
    scales = bb.emit(relax.TupleGetItem(xq, 1), "xq_scale")
    return xq, codes, scales


def call_matmul(bb, gvar, codes, scales, q_w, alpha, layout: WeightLayout, rows, n: int, name):
    """``call_tir(ternary_matmul, [codes, scales, packed(q_w), alpha])`` as a ``[rows, n]``."""
    packed = relax.const(pack_weight(q_w, layout))
    alpha = relax.const(np.asarray(alpha, dtype=np.float32))
    args = relax.Tuple([codes, scales, packed, alpha])
    return bb.emit(relax.call_tir(gvar, args, relax.TensorType([rows, n], F32)), name)


@pytest.fixture(scope="session")
def rx() -> SimpleNamespace:
    """The builders of this file."""
    return SimpleNamespace(
        F32=F32,
        EPS32=EPS32,
        sym_var=sym_var,
        ternary_weight=ternary_weight,
        const=const,
        levels_of=levels_of,
        emit_stat=emit_stat,
        emit_guard=emit_guard,
        emit_clip=emit_clip,
        emit_quantizer=emit_quantizer,
        emit_bitlinear=emit_bitlinear,
        module=module,
        spec_json=spec_json,
        add_norm_quantize=add_norm_quantize,
        add_matmul=add_matmul,
        call_quantize=call_quantize,
        call_matmul=call_matmul,
    )
