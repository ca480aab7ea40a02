"""FoldWeights: evaluate every weight-only subgraph at compile time.

Runs first.  Exporters leave the weight side of a BitLinear as arithmetic on constants: absmean
ternarization of master weights (``round(W / mean|W|)`` clipped), HF's 2-bit unpacking
(shifts and masks of a ``uint8`` constant, then ``- 1``), transposes.  The BitLinear
recognizers need the resulting values, so this pass folds them.

Before::

    a  = mean(abs(W));  Wq = clip(round(W / a), -1, 1) * a;  y = matmul(x, permute_dims(Wq))

After::

    y = matmul(x, C)             # C: constant [K, N] holding {-a, 0, a}

It also removes straight-through-estimator leftovers ``x + (y - x)`` that training code
exports (``y`` is the value the estimator stands for), so the quantizer behind ``y`` can be
recognized.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .graph_view import GraphView

__all__ = ["FoldWeights"]


@relax.expr_functor.mutator
class _StripSTE(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, g: GraphView) -> None:
        super().__init__(mod)
        self.g = g

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        # Matched on the original function's bindings, before its operands are rewritten.
        if (add := _as(call, "relax.add")) is not None:
            for x, diff in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
                sub = self.g.call(diff, "subtract")
                if sub is not None and self.g.same(sub.args[1], x):
                    return self.visit_expr(sub.args[0])
        return super().visit_call_(call)


def _as(expr: relax.Expr, name: str) -> relax.Call | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name:
        return expr
    return None


@tvm.transform.module_pass(opt_level=0, name="bitnet.FoldWeights")
class FoldWeights:
    """Fold weight-only subgraphs to constants (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod[gvar] = _StripSTE(mod, GraphView.of(mod, func)).visit_expr(func)
        return relax.transform.FoldConstant()(mod)
