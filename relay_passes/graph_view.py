"""Read-only helpers for looking through a Relax function's dataflow while matching patterns.

Exporters spell the same arithmetic many ways; the recognizers in :mod:`.quant_match` chase
variables to their bound values and accept the spellings listed here in one place:

* elementwise ops as Relax ops (``R.maximum``) or as ``R.call_tir`` to the private PrimFuncs the
  ONNX frontend emits for ``Clip`` (named ``maximum``/``minimum``, computing ``T.max``/``T.min``
  of a tensor and a 0-d constant);
* a binary ``maximum``/``minimum`` also as ``max(stack((broadcast_to(a), broadcast_to(b))),
  axis=0)``, which is how the ONNX frontend imports a variadic ``Max``/``Min`` node;
* clipping as ``R.clip``, ``minimum(maximum(x, lo), hi)`` or ``maximum(minimum(x, hi), lo)``;
* constants as ``R.const`` of any shape whose elements are all equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, tirx

__all__ = ["GraphView", "apply_rewriter", "op_name"]


def op_name(call: relax.Call) -> str | None:
    """``"relax.add"`` for a call to a Relax op, else None."""
    return call.op.name if isinstance(call.op, tvm.ir.Op) else None


# Elementwise op -> the reduction the ONNX frontend writes a variadic Max/Min as.
_REDUCE_OF_STACK = {"maximum": "max", "minimum": "min"}
# PrimFunc name prefix -> the TVMScript call its body must contain.
_TIR_ELEMWISE = {"maximum": "T.max(", "minimum": "T.min("}


@dataclass
class GraphView:
    """A function's bindings, to resolve variables to the expressions that define them."""

    mod: tvm.IRModule
    var2val: dict
    # (PrimFunc name, call text) -> whether that PrimFunc computes it; printing a PrimFunc is
    # slow and the same few frontend PrimFuncs are asked about at every BitLinear.
    _computes: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, mod: tvm.IRModule, func: relax.Function) -> GraphView:
        """View of ``func`` (a function of ``mod``)."""
        return cls(mod, dict(relax.analysis.get_var2val(func)))

    def value(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` with variable indirections resolved."""
        seen = 0
        while isinstance(expr, relax.Var) and expr in self.var2val and seen < 64:
            expr = self.var2val[expr]
            seen += 1
        return expr

    def call(self, expr: relax.Expr, *names: str) -> relax.Call | None:
        """The call defining ``expr`` if it is one of the Relax ops ``names`` (``"add"``...)."""
        value = self.value(expr)
        if isinstance(value, relax.Call) and op_name(value) in {f"relax.{n}" for n in names}:
            return value
        return None

    def elementwise(self, expr: relax.Expr, name: str) -> tuple[relax.Expr, relax.Expr] | None:
        """Operands of a binary ``maximum``/``minimum``/... spelled as a Relax op or a call_tir."""
        call = self.call(expr, name)
        if call is not None:
            return call.args[0], call.args[1]
        red = self.call(expr, _REDUCE_OF_STACK[name]) if name in _REDUCE_OF_STACK else None
        if red is not None:
            stack = self.call(red.args[0], "stack")
            axis = red.attrs.axis
            if (
                stack is not None
                and int(stack.attrs.axis) == 0
                and axis is not None
                and [int(a) for a in axis] == [0]
                and not red.attrs.keepdims
                and len(stack.args[0].fields) == 2
            ):
                a, b = stack.args[0].fields
                return self.unbroadcast(a), self.unbroadcast(b)
        value = self.value(expr)
        if not (isinstance(value, relax.Call) and op_name(value) == "relax.call_tir"):
            return None
        gvar, args = value.args[0], value.args[1]
        if name not in _TIR_ELEMWISE or not isinstance(gvar, relax.GlobalVar):
            return None
        if not gvar.name_hint.startswith(name) or len(args.fields) != 2:
            return None
        if not self._tir_computes(gvar, _TIR_ELEMWISE[name]):
            return None
        return args.fields[0], args.fields[1]

    def _tir_computes(self, gvar: tvm.ir.GlobalVar, call_text: str) -> bool:
        """Whether the PrimFunc ``gvar`` (small, frontend-generated) computes ``call_text``."""
        key = (gvar.name_hint, call_text)
        if key not in self._computes:
            func = self.mod[gvar] if gvar in self.mod.get_global_vars() else None
            self._computes[key] = isinstance(func, tirx.PrimFunc) and call_text in func.script()
        return self._computes[key]

    def unbroadcast(self, expr: relax.Expr) -> relax.Expr:
        """The operand of a ``broadcast_to`` (implicit in elementwise ops), else ``expr``."""
        call = self.call(expr, "broadcast_to")
        return call.args[0] if call is not None else expr

    def scalar(self, expr: relax.Expr) -> float | None:
        """The value of a constant whose elements are all equal, else None."""
        arr = self.constant(expr)
        if arr is None:
            return None
        if arr.size == 0 or not np.all(arr == arr.flat[0]):
            return None
        return float(arr.flat[0])

    def constant(self, expr: relax.Expr) -> np.ndarray | None:
        """The array of a constant, else None."""
        value = self.value(expr)
        return value.value.numpy() if isinstance(value, tvm.ir.GenericConst) else None

    def strip_casts(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` below any chain of ``astype`` (exporters round-trip codes through int8),
        including the ONNX frontend's emulation of a float -> int8 ``Cast``::

            v = bitwise_and(astype(where(logical_not(isfinite(x)), 0, x), int32), 255)
            astype(where(v >= 128, v - 256, v), int8)

        which is the identity on the integer-valued, already clipped codes it is applied to.
        """
        while (call := self.call(expr, "astype")) is not None:
            unwrapped = self._int8_wrap(call.args[0])
            expr = call.args[0] if unwrapped is None else unwrapped
        return expr

    def _int8_wrap(self, expr: relax.Expr) -> relax.Expr | None:
        """``x`` if ``expr`` is the frontend's int8 wrap-around of ``x`` (see strip_casts)."""
        where = self.call(expr, "where")
        if where is None or (ge := self.call(where.args[0], "greater_equal")) is None:
            return None
        v = ge.args[0]
        sub = self.call(where.args[1], "subtract")
        if not (self.scalar(ge.args[1]) == 128 and sub is not None and self.same(sub.args[0], v)):
            return None
        if self.scalar(sub.args[1]) != 256 or not self.same(where.args[2], v):
            return None
        band = self.call(v, "bitwise_and")
        if band is None or self.scalar(band.args[1]) != 255:
            return None
        cast = self.call(band.args[0], "astype")
        guard = self.call(cast.args[0], "where") if cast is not None else None
        if guard is None or self.scalar(guard.args[1]) != 0.0:
            return None
        nan = self.call(guard.args[0], "logical_not")
        fin = self.call(nan.args[0], "isfinite") if nan is not None else None
        if fin is None or not self.same(fin.args[0], guard.args[2]):
            return None
        return guard.args[2]

    def clip(self, expr: relax.Expr) -> tuple[relax.Expr, float, float] | None:
        """``(x, lo, hi)`` if ``expr`` clips ``x`` to constant bounds, in any spelling."""
        call = self.call(expr, "clip")
        if call is not None:
            lo, hi = (_prim_value(a) for a in call.args[1:3])
            return (call.args[0], lo, hi) if lo is not None and hi is not None else None
        for outer, inner in (("minimum", "maximum"), ("maximum", "minimum")):
            first = self.elementwise(expr, outer)
            if first is None or (b_outer := self.scalar(first[1])) is None:
                continue
            second = self.elementwise(first[0], inner)
            if second is None or (b_inner := self.scalar(second[1])) is None:
                continue
            lo, hi = (b_inner, b_outer) if outer == "minimum" else (b_outer, b_inner)
            return second[0], lo, hi
        return None

    def same(self, a: relax.Expr, b: relax.Expr) -> bool:
        """Whether two expressions are the same value (same variable after resolution)."""
        return a.same_as(b) or self.value(a).same_as(self.value(b))


def _prim_value(expr: relax.Expr) -> float | None:
    if isinstance(expr, tirx.IntImm | tirx.FloatImm):
        return float(expr.value)
    return None


def apply_rewriter(
    rewriter: relax.PyExprMutator, gvar: tvm.ir.GlobalVar, func: relax.Function
) -> tvm.IRModule:
    """Rewrite ``func`` with ``rewriter`` and return the module with it (and any PrimFuncs the
    rewriter added) updated; bindings the rewrite left unused are removed."""
    new_func = relax.analysis.remove_all_unused(rewriter.visit_expr(func))
    rewriter.builder_.update_func(gvar, new_func)
    return rewriter.builder_.get()
