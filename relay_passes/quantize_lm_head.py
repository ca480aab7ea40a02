"""QuantizeLMHead: the optional INT8 LM head (``compile_model(..., lm_head="int8")``).

The LM head is the float matmul with a constant weight whose result (through an optional
reshape) is an output of the function: the logits.  Its weight is quantized per output row
(absmax INT8, one scale per vocabulary entry,
:func:`bitnet_tvm.reference.quantize_weights_int8_rows`) and the activation per token
(absmax INT8, ``norm_quantize`` without norm); the product is the ``int8_matmul`` operator.
Runs in the ``bitlinear`` phase before ``FuseNormQuantize``, which then folds the final
RMSNorm into the new quantizer.

Before::

    logits = matmul(h, W)            # W: float constant [K, V] (or permute_dims of [V, K])

After::

    xq, xs = call_tir(norm_quantize[absmax, 8 bit], [reshape(h, [M, K])])
    y      = call_tir(int8_matmul, [xq, xs, Wq, w_scale])     # Wq int8 [V, K], w_scale [V]
    logits = reshape(y, [..., V])

A function without such a matmul is a :class:`ValueError` (naming the function): asking for an
INT8 head that is not there must not pass silently.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from bitnet_tvm import reference
from bitnet_tvm.schedules.operators.int8_matmul import int8_matmul
from bitnet_tvm.schemes import ActQuant

from .emit import QuantizeSpec, as_rows, emit_like, emit_quantize
from .graph_view import GraphView, apply_rewriter

__all__ = ["LM_HEAD_ACT", "LM_HEAD_CHOICES", "QuantizeLMHead", "find_lm_head", "require_lm_head"]

#: Values of the ``lm_head`` compile option.
LM_HEAD_CHOICES = ("fp32", "int8")

#: The activation quantizer of the INT8 head: per-token absmax, 8 bits (``max|x| + eps``).
LM_HEAD_ACT = ActQuant(method="absmax", bits=8)


def _outputs(g: GraphView, func: relax.Function) -> list[relax.Expr]:
    body = func.body.body if isinstance(func.body, relax.SeqExpr) else func.body
    value = g.value(body)
    return list(value.fields) if isinstance(value, relax.Tuple) else [body]


def _weight_rows(g: GraphView, expr: relax.Expr) -> np.ndarray | None:
    """The float weight as ``[V, K]`` rows if ``expr`` is a constant ``[K, V]`` (or the
    ``permute_dims`` of a constant ``[V, K]``), else None."""
    arr = g.constant(expr)
    if arr is not None:
        return arr.T if arr.ndim == 2 and np.issubdtype(arr.dtype, np.floating) else None
    perm = g.call(expr, "permute_dims")
    if perm is None or (
        perm.attrs.axes is not None and [int(a) for a in perm.attrs.axes] != [1, 0]
    ):
        return None
    arr = g.constant(perm.args[0])
    return (
        arr if arr is not None and arr.ndim == 2 and np.issubdtype(arr.dtype, np.floating) else None
    )


def find_lm_head(
    g: GraphView, func: relax.Function
) -> tuple[relax.Var, relax.Call, np.ndarray] | None:
    """``(var, matmul call, weight rows [V, K])`` of the LM head of ``func``, or None."""
    for out in _outputs(g, func):
        var = out
        reshape = g.call(var, "reshape")
        if reshape is not None:
            var = reshape.args[0]
        matmul = g.call(var, "matmul")
        if matmul is None or not isinstance(var, relax.Var):
            continue
        rows = _weight_rows(g, matmul.args[1])
        if rows is not None and matmul.args[0].ty.dtype == "float32":
            return var, matmul, rows
    return None


def require_lm_head(mod: tvm.IRModule) -> None:
    """A ValueError (not an FFI RuntimeError) unless every Relax function of ``mod`` has an LM
    head :func:`find_lm_head` recognizes."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function) and find_lm_head(GraphView.of(mod, func), func) is None:
            raise ValueError(
                f"lm_head='int8': function {gvar.name_hint!r} has no LM head (a float matmul "
                "with a constant [K, vocab] weight producing an output)"
            )


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, var: relax.Var, x: relax.Expr, rows: np.ndarray) -> None:
        super().__init__(mod)
        self.var, self.x, self.rows = var, x, rows

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if not binding.var.same_as(self.var):
            super().visit_var_binding_(binding)
            return
        bb = self.builder_
        vocab, k = self.rows.shape
        q_w, w_scale = reference.quantize_weights_int8_rows(self.rows.astype(np.float32))
        x2d, shape = as_rows(bb, self.visit_expr(self.x))
        quantized = emit_quantize(bb, x2d, QuantizeSpec(k, LM_HEAD_ACT))
        xq = bb.emit(relax.TupleGetItem(quantized, 0), "lm_head_codes")
        xs = bb.emit(relax.TupleGetItem(quantized, 1), "lm_head_scale")
        gvar = bb.add_func(int8_matmul(vocab, k).without_attr("global_symbol"), "int8_matmul")
        args = relax.Tuple([xq, xs, relax.const(q_w), relax.const(w_scale)])
        out_ty = relax.TensorType([x2d.ty.shape[0], vocab], "float32")
        y = bb.emit(relax.call_tir(gvar, args, out_ty), "lm_head")
        if len(shape) != 2:
            y = relax.op.reshape(y, [*shape[:-1], vocab])
        self.set_var_remap(binding.var, emit_like(bb, binding.var, y))


@tvm.transform.module_pass(opt_level=0, name="bitnet.QuantizeLMHead")
class QuantizeLMHead:
    """Replace the float LM head with the INT8 one (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            g = GraphView.of(mod, func)
            found = find_lm_head(g, func)
            if found is None:
                raise ValueError(
                    f"lm_head='int8': function {gvar.name_hint!r} has no LM head (a float matmul "
                    "with a constant [K, vocab] weight producing an output)"
                )
            var, matmul, rows = found
            mod = apply_rewriter(_Rewriter(mod, var, matmul.args[0], rows), gvar, func)
        return mod
