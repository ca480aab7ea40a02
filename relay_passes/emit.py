"""Emit calls to the fused operators of :mod:`bitnet_tvm.schedules.operators` from graph passes.

The graph passes describe each fused operator call by a small frozen dataclass (a *spec*); this
module turns a spec into the PrimFunc (added to the module once per distinct spec) and the
``R.call_tir`` that calls it, and reads a spec back from an existing call.  The spec travels in
the PrimFunc's ``bitnet.spec`` attribute as JSON, so later passes (projection fusion, norm
fusion, weight packing) can rebuild the operator with one field changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax, tirx

from bitnet_tvm.schedules import operators
from bitnet_tvm.schedules.layouts import WeightLayout, pack_weight
from bitnet_tvm.schemes import ActQuant

from .graph_view import GraphView, op_name

__all__ = [
    "MatmulSpec",
    "QuantizeSpec",
    "as_rows",
    "emit_bitlinear",
    "emit_like",
    "emit_matmul",
    "emit_quantize",
    "read_spec",
]

SPEC_ATTR = "bitnet.spec"


@dataclass(frozen=True)
class QuantizeSpec:
    """``norm_quantize``: optional RMSNorm, then a per-token activation quantizer."""

    k: int
    act: ActQuant
    norm_eps: float | None = None
    has_weight: bool = False

    op = "norm_quantize"

    def build(self) -> tirx.PrimFunc:
        return operators.norm_quantize(
            self.k, act=self.act, norm_eps=self.norm_eps, has_weight=self.has_weight
        )


@dataclass(frozen=True)
class MatmulSpec:
    """A ternary matmul: plain (``ternary_matmul``), GLU (``ternary_gate_up``) or sparse."""

    kind: str  # "dense" | "gate_up" | "sparse"
    n: int  # output columns (for gate_up: I, the GLU width; the weight has 2I rows)
    k: int
    act_bits: int
    layout: WeightLayout

    op = "ternary_matmul"

    def build(self) -> tirx.PrimFunc:
        if self.kind == "dense":
            return operators.ternary_matmul(
                self.n, self.k, act_bits=self.act_bits, layout=self.layout
            )
        if self.kind == "gate_up":
            return operators.ternary_gate_up(
                self.n, self.k, act_bits=self.act_bits, layout=self.layout
            )
        if self.kind == "sparse":
            return operators.sparse_int8_matmul(self.n, self.k, layout=self.layout)
        raise ValueError(f"unknown ternary matmul kind {self.kind!r}")

    @property
    def weight_rows(self) -> int:
        return 2 * self.n if self.kind == "gate_up" else self.n


def _to_json(spec: QuantizeSpec | MatmulSpec) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value.value if hasattr(value, "value") and not isinstance(value, float) else value

    return json.dumps({"type": type(spec).__name__, **plain(asdict(spec))}, sort_keys=True)


def _from_json(text: str) -> QuantizeSpec | MatmulSpec:
    data = json.loads(text)
    kind = data.pop("type")
    if kind == "QuantizeSpec":
        return QuantizeSpec(**{**data, "act": ActQuant(**data["act"])})
    return MatmulSpec(**{**data, "layout": WeightLayout(data["layout"])})


def _add(bb: relax.BlockBuilder, spec: QuantizeSpec | MatmulSpec) -> tvm.ir.GlobalVar:
    # Private (no global_symbol): the module names it, and dead copies can be removed.
    func = spec.build().without_attr("global_symbol").with_attr(SPEC_ATTR, _to_json(spec))
    return bb.add_func(func, spec.op)


def read_spec(
    g: GraphView, expr: relax.Expr
) -> tuple[QuantizeSpec | MatmulSpec, relax.Call] | None:
    """The spec and call of a fused-operator ``call_tir`` bound to ``expr``, else None."""
    call = g.value(expr)
    if isinstance(call, relax.TupleGetItem):
        return None
    if not (isinstance(call, relax.Call) and op_name(call) == "relax.call_tir"):
        return None
    func = g.mod[call.args[0]] if call.args[0] in g.mod.get_global_vars() else None
    if not isinstance(func, tirx.PrimFunc) or func.attrs is None or SPEC_ATTR not in func.attrs:
        return None
    return _from_json(str(func.attrs[SPEC_ATTR])), call


def as_rows(bb: relax.BlockBuilder, x: relax.Expr) -> tuple[relax.Expr, list]:
    """``x [..., K]`` as a ``[M, K]`` matrix (M the product of the leading dims, symbolic
    where they are), emitting a reshape when ``x`` is not 2-D; also returns ``x``'s shape."""
    shape = list(x.ty.shape)
    if len(shape) == 2:
        return x, shape
    rows = shape[0]
    for dim in shape[1:-1]:
        rows = rows * dim
    return bb.emit(relax.op.reshape(x, [rows, shape[-1]]), "x2d"), shape


def emit_like(bb: relax.BlockBuilder, old: relax.Var, value: relax.Expr) -> relax.Var:
    """Bind ``value`` as ``old`` was bound: in the dataflow block, or as a function output."""
    emit = bb.emit if isinstance(old, relax.DataflowVar) else bb.emit_output
    return emit(value, old.name)


def emit_quantize(
    bb: relax.BlockBuilder, x2d: relax.Expr, spec: QuantizeSpec, gamma: relax.Expr | None = None
) -> relax.Var:
    """Emit ``norm_quantize`` of a ``[M, K]`` tensor; returns the ``(codes, scales)`` tuple var."""
    rows = x2d.ty.shape[0]
    args = [x2d] if gamma is None else [x2d, gamma]
    out_ty = [relax.TensorType([rows, spec.k], "int8"), relax.TensorType([rows, 1], "float32")]
    return bb.emit(relax.call_tir(_add(bb, spec), relax.Tuple(args), out_ty), "xq")


def emit_matmul(
    bb: relax.BlockBuilder,
    xq: relax.Expr,
    xs: relax.Expr,
    spec: MatmulSpec,
    q_w: np.ndarray,
    alpha: np.ndarray,
    name: str,
) -> relax.Var:
    """Emit a fused ternary matmul of codes ``[M, K]``; ``q_w`` is ``[rows, K]`` int8 codes."""
    if q_w.shape != (spec.weight_rows, spec.k) or alpha.shape != (spec.weight_rows,):
        raise ValueError(
            f"{name}: weight {q_w.shape} / alpha {alpha.shape} do not fit {spec} "
            f"(expected [{spec.weight_rows}, {spec.k}] and [{spec.weight_rows}])"
        )
    rows = xq.ty.shape[0]
    packed = relax.const(pack_weight(q_w, spec.layout))
    args = relax.Tuple([xq, xs, packed, relax.const(alpha.astype(np.float32))])
    out_ty = relax.TensorType([rows, spec.n], "float32")
    return bb.emit(relax.call_tir(_add(bb, spec), args, out_ty), name)


def emit_bitlinear(
    bb: relax.BlockBuilder,
    x: relax.Expr,
    act: ActQuant,
    spec: MatmulSpec,
    q_w: np.ndarray,
    alpha: np.ndarray,
    name: str,
) -> relax.Expr:
    """Emit quantize + ternary matmul of ``x [..., K]``; returns ``[..., N]`` float32."""
    x2d, shape = as_rows(bb, x)
    quantized = emit_quantize(bb, x2d, QuantizeSpec(spec.k, act))
    xq = bb.emit(relax.TupleGetItem(quantized, 0), "xq_codes")
    xs = bb.emit(relax.TupleGetItem(quantized, 1), "xq_scale")
    y = emit_matmul(bb, xq, xs, spec, q_w, alpha, name)
    if len(shape) == 2:
        return y
    return relax.op.reshape(y, [*shape[:-1], spec.n])
