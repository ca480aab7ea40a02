"""FuseProjections: one ternary matmul per shared quantized input (fused QKV and gate/up + GLU).

Runs after FuseBitLinear and common-subexpression elimination (so projections of one input
read the same ``norm_quantize`` result).

Before::

    q = call_tir(ternary_matmul, [xq, xs, Wq, aq])     k = ... Wk ...     v = ... Wv ...

After (per-column alpha keeps the three weight scales)::

    qkv = call_tir(ternary_matmul, [xq, xs, concat(Wq, Wk, Wv), concat(aq, ak, av)])
    q, k, v = strided_slice(qkv, ...)

Gate/up pairs in a layout no gate/up kernel reads fast (``gate_up_unfused``: 1.6-bit
``base3_vnni``) are concatenated like QKV instead (one dense VNNI matmul, the GLU elementwise).
Other gate/up pairs whose outputs only feed ``relu(gate)**2 * up`` (spelled ``square``, ``power 2``
or ``multiply(r, r)`` of ``relu``) become one ``ternary_gate_up`` whose epilogue computes the
GLU; the kernel computes gate first and can skip an up row where ``relu(gate)`` is zero::

    h = call_tir(ternary_gate_up, [xq, xs, concat(Wgate, Wup), concat(ag, au)])
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from bitnet_tvm.schedules.layouts import unpack_weight
from bitnet_tvm.schedules.selection import gate_up_layout, gate_up_unfused

from .emit import MatmulSpec, emit_like, emit_matmul, read_spec
from .fuse_bitlinear import users_of
from .graph_view import GraphView, apply_rewriter

__all__ = ["FuseProjections"]


def _codes(g: GraphView, call: relax.Call, spec: MatmulSpec) -> tuple[np.ndarray, np.ndarray]:
    packed = g.constant(call.args[1].fields[2])
    alpha = g.constant(call.args[1].fields[3])
    return unpack_weight(packed, spec.weight_rows, spec.k, spec.layout), alpha


def _glu(g: GraphView, users: dict, gate: relax.Var, up: relax.Var) -> relax.Var | None:
    """The var computing ``relu(gate)**2 * up`` from the two projections (2-D or reshaped)."""
    gate_out, up_out = _through_reshape(g, users, gate), _through_reshape(g, users, up)
    for relu_var in users.get(gate_out, []):
        if g.call(relu_var, "nn.relu") is None or len(users.get(relu_var, [])) != 1:
            continue
        sq = users[relu_var][0]
        square = g.call(sq, "square", "power", "multiply")
        if square is None or not _is_square(g, square, relu_var):
            continue
        for mul_var in users.get(sq, []):
            mul = g.call(mul_var, "multiply")
            if mul is None:
                continue
            a, b = mul.args
            if (g.same(a, sq) and g.same(b, up_out)) or (g.same(b, sq) and g.same(a, up_out)):
                return mul_var
    return None


def _is_square(g: GraphView, call: relax.Call, base: relax.Var) -> bool:
    name = call.op.name
    if name == "relax.square":
        return True
    if name == "relax.power":
        return g.scalar(call.args[1]) == 2.0
    return g.same(call.args[0], base) and g.same(call.args[1], base)


def _through_reshape(g: GraphView, users: dict, var: relax.Var) -> relax.Var:
    """The single user of ``var`` when that user is a reshape back to N-D, else ``var``."""
    nxt = users.get(var, [])
    return nxt[0] if len(nxt) == 1 and g.call(nxt[0], "reshape") is not None else var


def _reshape_like(h: relax.Expr, like: relax.Var) -> relax.Expr:
    shape = list(like.ty.shape)
    return h if len(shape) == 2 else relax.op.reshape(h, shape)


Build = Callable[[relax.BlockBuilder, Callable], dict]


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    """At each var of ``replace_at`` emit the new bindings it builds; skip the ``drop`` vars."""

    def __init__(self, mod: tvm.IRModule, replace_at: dict[relax.Var, Build], drop: set) -> None:
        super().__init__(mod)
        self.replace_at = replace_at
        self.drop = drop

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.drop:
            return
        build = self.replace_at.get(binding.var)
        if build is None:
            super().visit_var_binding_(binding)
            return
        for old, new in build(self.builder_, self.visit_expr).items():
            if isinstance(new, relax.Var) and isinstance(old, relax.DataflowVar):
                self.set_var_remap(old, new)  # no alias binding for an already bound value
                continue
            self.set_var_remap(old, emit_like(self.builder_, old, new))


Member = tuple[relax.Var, MatmulSpec, relax.Call]


@tvm.transform.module_pass(opt_level=0, name="bitnet.FuseProjections")
class FuseProjections:
    """Fuse ternary matmuls that share a quantized input (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod = self._rewrite(mod, gvar, func)
        return mod

    def _rewrite(self, mod: tvm.IRModule, gvar: tvm.ir.GlobalVar, func: relax.Function):
        g = GraphView.of(mod, func)
        users = users_of(g)
        groups: dict[tuple, list[Member]] = defaultdict(list)
        for var in g.var2val:
            found = read_spec(g, var)
            if found is None or not isinstance(found[0], MatmulSpec) or found[0].kind != "dense":
                continue
            spec, call = found
            xq, xs = (g.value(a) for a in call.args[1].fields[:2])
            groups[(xq, xs, spec.k, spec.act_bits, spec.layout)].append((var, spec, call))
        replace_at: dict[relax.Var, Build] = {}
        drop: set[relax.Var] = set()
        for members in groups.values():
            if len(members) < 2:
                continue
            glu = _glu(g, users, members[0][0], members[1][0]) if len(members) == 2 else None
            if glu is not None and gate_up_unfused(members[0][1].layout):
                # One dense matmul of [W_gate; W_up], the GLU left to elementwise ops.
                replace_at[members[0][0]] = _concat(g, members, "gate_up_proj")
                drop.update(m[0] for m in members[1:])
            elif glu is not None:
                # The GLU product is bound after both projections; they become dead code.
                replace_at[glu] = _gate_up(g, members, glu)
            else:
                # Emit at the first projection: its users may come before the later ones.
                replace_at[members[0][0]] = _concat(g, members)
                drop.update(m[0] for m in members[1:])
        if not replace_at:
            return mod
        rewriter = _Rewriter(mod, replace_at, drop)
        mod = apply_rewriter(rewriter, gvar, func)
        return mod


def _fused_name(members: list[Member], suffix: str) -> str:
    """``layers_3_qkv_proj`` from members named ``layers_3_q_proj``... (FuseBitLinear's names)."""
    prefix = members[0][0].name.rsplit("_", 2)[0]
    return f"{prefix}_{suffix}" if prefix.startswith("layers_") else suffix


def _concat(g: GraphView, members: list[Member], suffix: str = "qkv_proj") -> Build:
    codes = [_codes(g, call, spec) for _, spec, call in members]
    q_w = np.concatenate([c[0] for c in codes])
    alpha = np.concatenate([c[1] for c in codes])
    first = members[0][1]
    spec = MatmulSpec("dense", q_w.shape[0], first.k, first.act_bits, first.layout)

    def build(bb: relax.BlockBuilder, visit: Callable) -> dict:
        xq, xs = (visit(a) for a in members[0][2].args[1].fields[:2])
        y = emit_matmul(bb, xq, xs, spec, q_w, alpha, _fused_name(members, suffix))
        out, start = {}, 0
        for var, member_spec, _ in members:
            end = start + member_spec.n
            out[var] = relax.op.strided_slice(y, axes=[1], begin=[start], end=[end])
            start = end
        return out

    return build


def _gate_up(g: GraphView, members: list[Member], glu: relax.Var) -> Build:
    (_, gate_spec, gate_call), (_, up_spec, up_call) = members
    if gate_spec.n != up_spec.n:
        raise ValueError(f"gate/up widths differ: {gate_spec.n} vs {up_spec.n}")
    (qg, ag), (qu, au) = _codes(g, gate_call, gate_spec), _codes(g, up_call, up_spec)
    q_w, alpha = np.concatenate([qg, qu]), np.concatenate([ag, au])
    layout = gate_up_layout(gate_spec.layout)
    spec = MatmulSpec("gate_up", gate_spec.n, gate_spec.k, gate_spec.act_bits, layout)

    def build(bb: relax.BlockBuilder, visit: Callable) -> dict:
        xq, xs = (visit(a) for a in gate_call.args[1].fields[:2])
        h = emit_matmul(bb, xq, xs, spec, q_w, alpha, _fused_name(members, "gate_up_proj"))
        return {glu: _reshape_like(h, glu)}

    return build
