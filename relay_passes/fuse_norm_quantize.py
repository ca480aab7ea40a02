"""FuseNormQuantize: fold the RMSNorm in front of a quantizer into the ``norm_quantize`` kernel.

Runs after FuseProjections.  The RMSNorm output must feed nothing but the quantizer (true for
every BitLinear input of a BitNet layer: input_layernorm, post_attention_layernorm,
attn_sub_norm, ffn_sub_norm), so the normalized activations never reach memory.

Before::

    r   = 1 / sqrt(mean(h * h, -1) + eps)        (or rsqrt, power(h, 2), square(h))
    y   = (h * r) * gamma                        (or nn.rms_norm(h, gamma, eps))
    xq, xs = call_tir(norm_quantize[norm=None], [reshape(y, [M, K])])

After::

    xq, xs = call_tir(norm_quantize[norm=eps], [reshape(h, [M, K]), gamma])
"""

from __future__ import annotations

from dataclasses import replace

import tvm
from tvm import relax

from .emit import QuantizeSpec, as_rows, emit_like, emit_quantize, read_spec
from .fuse_bitlinear import users_of
from .graph_view import GraphView, apply_rewriter

__all__ = ["FuseNormQuantize", "match_rmsnorm"]


def _mean_square(g: GraphView, expr: relax.Expr) -> relax.Expr | None:
    """``h`` if ``expr`` is ``mean(h*h | square(h) | power(h, 2), axis=-1, keepdims)``."""
    mean = g.call(expr, "mean")
    if mean is None or not mean.attrs.keepdims or len(mean.attrs.axis) != 1:
        return None
    if int(mean.attrs.axis[0]) not in (-1, len(mean.args[0].ty.shape) - 1):
        return None
    sq = g.call(mean.args[0], "square", "power", "multiply")
    if sq is None:
        return None
    if sq.op.name == "relax.square":
        return sq.args[0]
    if sq.op.name == "relax.power":
        return sq.args[0] if g.scalar(sq.args[1]) == 2.0 else None
    return sq.args[0] if g.same(sq.args[0], sq.args[1]) else None


def _inv_rms(g: GraphView, expr: relax.Expr) -> tuple[relax.Expr, float] | None:
    """``(h, eps)`` if ``expr`` is ``1 / sqrt(mean(h^2) + eps)`` or ``rsqrt(...)``."""
    if (div := g.call(expr, "divide")) is not None:
        if g.scalar(div.args[0]) != 1.0 or (sqrt := g.call(div.args[1], "sqrt")) is None:
            return None
        inner = sqrt.args[0]
    elif (rsqrt := g.call(expr, "rsqrt")) is not None:
        inner = rsqrt.args[0]
    else:
        return None
    add = g.call(inner, "add")
    if add is None:
        return None
    for ms, eps in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
        if (e := g.scalar(eps)) is not None and (h := _mean_square(g, ms)) is not None:
            return h, e
    return None


def match_rmsnorm(
    g: GraphView, expr: relax.Expr
) -> tuple[relax.Expr, relax.Expr | None, float] | None:
    """``(h, gamma or None, eps)`` if ``expr`` is an RMSNorm over the last axis of ``h``."""
    if (rms := g.call(expr, "nn.rms_norm")) is not None:
        axes = [int(a) for a in rms.attrs.axes]
        if axes not in ([-1], [len(rms.args[0].ty.shape) - 1]):
            return None
        return rms.args[0], rms.args[1], float(rms.attrs.epsilon)
    mul = g.call(expr, "multiply")
    if mul is None:
        return None
    for inner, gamma in ((mul.args[0], mul.args[1]), (mul.args[1], mul.args[0])):
        if g.constant(gamma) is not None and (norm := g.call(inner, "multiply")) is not None:
            found = _normalized(g, norm)
            if found is not None:
                return found[0], gamma, found[1]
    found = _normalized(g, mul)
    return (found[0], None, found[1]) if found is not None else None


def _normalized(g: GraphView, mul: relax.Call) -> tuple[relax.Expr, float] | None:
    for h, r in ((mul.args[0], mul.args[1]), (mul.args[1], mul.args[0])):
        found = _inv_rms(g, r)
        if found is not None and g.same(found[0], h):
            return h, found[1]
    return None


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, plan: dict) -> None:
        super().__init__(mod)
        self.plan = plan

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        item = self.plan.get(binding.var)
        if item is None:
            super().visit_var_binding_(binding)
            return
        spec, h, gamma = item
        h2d, _ = as_rows(self.builder_, self.visit_expr(h))
        gamma = None if gamma is None else self.visit_expr(gamma)
        quantized = emit_quantize(self.builder_, h2d, spec, gamma)
        if not isinstance(binding.var, relax.DataflowVar):  # bound to a function output
            quantized = emit_like(self.builder_, binding.var, quantized)
        self.set_var_remap(binding.var, quantized)


@tvm.transform.module_pass(opt_level=0, name="bitnet.FuseNormQuantize")
class FuseNormQuantize:
    """Fuse RMSNorm into the quantizer it feeds (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            g = GraphView.of(mod, func)
            users = users_of(g)
            plan = {}
            for var in g.var2val:
                found = read_spec(g, var)
                if found is None or not isinstance(found[0], QuantizeSpec):
                    continue
                spec, call = found
                if spec.norm_eps is not None:
                    continue
                x = call.args[1].fields[0]
                normed = _before_reshape(g, x)
                if len(users.get(normed, [])) != 1 or len(users.get(x, [])) != 1:
                    continue  # the normalized tensor is needed elsewhere too
                norm = match_rmsnorm(g, normed)
                if norm is None:
                    continue
                h, gamma, eps = norm
                new_spec = replace(spec, norm_eps=eps, has_weight=gamma is not None)
                plan[var] = (new_spec, h, gamma)
            if not plan:
                continue
            rewriter = _Rewriter(mod, plan)
            mod = apply_rewriter(rewriter, gvar, func)
        return mod


def _before_reshape(g: GraphView, x: relax.Expr) -> relax.Expr:
    reshape = g.call(x, "reshape")
    return reshape.args[0] if reshape is not None else x
