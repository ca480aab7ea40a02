"""LiftParams: turn the large constants of ``main`` into trailing function parameters.

Runs last among the graph passes.  The weights (packed ternary codes, scales, embeddings, LM
head) then live in a parameter file beside the compiled library instead of inside it, so the
library stays small and the weights load with numpy.

Before::  def main(input_ids): ... call_tir(ternary_matmul, [xq, xs, R.const(<packed>), ...])
After::   def main(input_ids, p0, p1, ...): ... call_tir(ternary_matmul, [xq, xs, p0, ...])
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

__all__ = ["lift_params"]


@relax.expr_functor.mutator
class _Lifter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, min_size: int) -> None:
        super().__init__(mod)
        self.min_size = min_size
        self.params: dict[str, np.ndarray] = {}
        self.vars: list[relax.Var] = []
        self._seen: list[tuple[tvm.ir.GenericConst, relax.Var]] = []

    def visit_generic_const_(self, const: tvm.ir.GenericConst) -> relax.Expr:
        shape = tuple(int(d) for d in const.value.shape)
        if int(np.prod(shape, dtype=np.int64)) < self.min_size:
            return const
        for seen, var in self._seen:  # one parameter per constant object, however often used
            if seen.same_as(const):
                return var
        name = f"param_{len(self.vars)}"
        var = relax.Var(name, relax.TensorType(shape, str(const.value.dtype)))
        self._seen.append((const, var))
        self.vars.append(var)
        # A read-only view of the constant's memory (no copy: the embedding alone is 1.3 GB
        # for 2B-class models); it keeps the tensor alive after the module is gone.
        value = np.from_dlpack(const.value)
        value.flags.writeable = False
        self.params[name] = value
        return var


def lift_params(
    mod: tvm.IRModule, func_name: str = "main", min_size: int = 64
) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """Lift constants with at least ``min_size`` elements out of ``func_name``.

    Returns
    -------
    mod : tvm.IRModule
        The module whose ``func_name`` takes the lifted constants after its own inputs.
    params : dict of str to numpy.ndarray
        The lifted values, in parameter order: read-only views of the constants' memory.
    """
    func = mod[func_name]
    lifter = _Lifter(mod, min_size)
    new = lifter.visit_expr(func)
    lifted = relax.Function(
        list(new.params) + lifter.vars, new.body, new.ret_ty, new.is_pure, new.attrs, new.span
    )
    mod = mod.clone() if hasattr(mod, "clone") else tvm.IRModule(dict(mod.functions_items()))
    mod[func_name] = lifted
    return mod, lifter.params
