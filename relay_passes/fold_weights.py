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

Integer weights are not widened.  An ``int8`` export stores codes as integer constants read
through ``astype(float32)`` (and ``permute_dims``); folding that would turn 1-byte codes into
4-byte floats (~8 GB for a 2B model).  Integer constants of at least ``min_int_size`` elements
whose every use is an ``astype`` to a float type are therefore turned into function parameters
while ``FoldConstant`` runs and bound back afterwards, so the graph keeps::

    y = matmul(x, permute_dims(astype(C)))   # C: int8 constant [N, K] of {-1, 0, 1}

which the recognizers read directly (:func:`.quant_match.weight_codes`).
"""

from __future__ import annotations

import numpy as np
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


def _numel(const: tvm.ir.GenericConst) -> int:
    return int(np.prod(const.value.shape, dtype=np.int64))


def _widened_int_constants(func: relax.Function, min_size: int) -> list[tvm.ir.GenericConst]:
    """Integer constants (``>= min_size`` elements) used only as ``astype(c, float*)``."""
    widened: dict[tvm.ir.GenericConst, None] = {}  # ordered set, by object identity
    other: set[tvm.ir.GenericConst] = set()

    def visit(expr: relax.Expr) -> None:
        if not isinstance(expr, relax.Call):
            return
        to_float = (
            isinstance(expr.op, tvm.ir.Op)
            and expr.op.name == "relax.astype"
            and str(expr.attrs.dtype).startswith(("float", "bfloat"))
        )
        for arg in expr.args:
            for a in arg.fields if isinstance(arg, relax.Tuple) else [arg]:
                if isinstance(a, tvm.ir.GenericConst):
                    if to_float:
                        widened[a] = None
                    else:
                        other.add(a)

    relax.analysis.post_order_visit(func.body, visit)
    return [
        c
        for c in widened
        if c not in other
        and str(c.value.dtype).startswith(("int", "uint"))
        and _numel(c) >= min_size
    ]


@relax.expr_functor.mutator
class _Replace(relax.PyExprMutator):
    """Replace given constants (by identity) by variables."""

    def __init__(self, mod: tvm.IRModule, table: dict[tvm.ir.GenericConst, relax.Var]) -> None:
        super().__init__(mod)
        self.table = table

    def visit_generic_const_(self, const: tvm.ir.GenericConst) -> relax.Expr:
        return self.table.get(const, const)


@tvm.transform.module_pass(opt_level=0, name="bitnet.FoldWeights")
class FoldWeights:
    """Fold weight-only subgraphs to constants (see the module docstring).

    Parameters
    ----------
    min_int_size : int
        Integer constants widened by ``astype`` with at least this many elements are kept
        as they are (not folded into float copies).
    """

    def __init__(self, min_int_size: int = 256) -> None:
        self.min_int_size = min_int_size

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        kept: dict[str, dict[str, tvm.runtime.Tensor]] = {}
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            func = _StripSTE(mod, GraphView.of(mod, func)).visit_expr(func)
            consts = _widened_int_constants(func, self.min_int_size)
            if consts:
                func, kept[gvar.name_hint] = _hide(mod, func, consts)
            mod[gvar] = func
        mod = relax.transform.FoldConstant()(mod)
        for name, params in kept.items():
            mod = relax.transform.BindParams(name, params)(mod)
        return mod


def _hide(
    mod: tvm.IRModule, func: relax.Function, consts: list[tvm.ir.GenericConst]
) -> tuple[relax.Function, dict[str, tvm.runtime.Tensor]]:
    """``func`` with ``consts`` as extra trailing parameters, and the name -> value map that
    binds them back (the same tensors: nothing is copied)."""
    table, params = {}, {}
    for i, const in enumerate(consts):
        name = f"bitnet_fold_keep_{i}"
        table[const] = relax.Var(name, const.ty)
        params[name] = const.value
    new = _Replace(mod, table).visit_expr(func)
    func = relax.Function(
        [*new.params, *table.values()], new.body, new.ret_ty, new.is_pure, new.attrs, new.span
    )
    return func, params
