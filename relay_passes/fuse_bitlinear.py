"""FuseBitLinear: rewrite each recognized BitLinear into quantize + fused ternary matmul.

Runs after weight folding (the weight must be a constant) and before projection fusion.

Before (one of the spellings in :mod:`.quant_match`)::

    s  = L / (max(|x|, -1) + eps)
    q  = clip(round(x * s), -128, 127)
    y  = matmul(q * ((max(|x|, -1) + eps) / L), W)          # W: constant {-a, 0, a}

After::

    x2d      = reshape(x, [M, K])
    xq, xs   = call_tir(norm_quantize, [x2d])                # int8 [M, K], float32 [M, 1]
    y2d      = call_tir(ternary_matmul, [xq, xs, packed(W), alpha])
    y        = reshape(y2d, [..., N])

The BitLinear *site* (``qkv``, ``o``, ``gate_up``, ``down``) is read from the graph's structure:
in order of appearance, BitLinears sharing one quantized input in threes are q/k/v, in twos
gate/up, and the single ones alternate o_proj (after q/k/v) and down (after gate/up).  A
``scheme`` replaces each site's activation quantizer (re-quantization); by default the
graph's own quantizer is kept.  o_proj and down, which read INT8 activations that are mostly
zeros (TopK 50%, ReLU²), use the sparse operator; the others the dense one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from bitnet_tvm.errors import UnsupportedGraphError
from bitnet_tvm.schedules.selection import check_weights, select_layout
from bitnet_tvm.schemes import QuantScheme, WeightFormat

from .emit import MatmulSpec, emit_bitlinear, emit_like
from .graph_view import GraphView, apply_rewriter
from .quant_match import BitLinearMatch, match_bitlinear, quantized_float_matmul

__all__ = ["FuseBitLinear", "classify_sites", "find_bitlinears", "require_ternary", "users_of"]


def users_of(g: GraphView) -> dict[relax.Var, list[relax.Var]]:
    """For each variable, the variables whose bound value uses it."""
    users: dict[relax.Var, list[relax.Var]] = {}
    for var, value in g.var2val.items():
        for used in relax.analysis.free_vars(value):
            users.setdefault(used, []).append(var)
    return users


def find_bitlinears(g: GraphView) -> list[BitLinearMatch]:
    """Every BitLinear of the function, in binding order."""
    users = users_of(g)
    return [m for var in g.var2val if (m := match_bitlinear(g, var, users)) is not None]


@dataclass(frozen=True)
class Site:
    """Where a BitLinear sits: layer index, site name, and its name in reports and the IR."""

    layer: int
    site: str
    name: str


def classify_sites(g: GraphView, matches: list[BitLinearMatch]) -> list[Site]:
    """Assign layer and site to each match (see the module docstring)."""
    # Group by IR identity (``same_as``): Python wrappers of one Var are distinct objects.
    canon: list[relax.Expr] = []
    keys = []
    for m in matches:
        source = g.value(m.act.source)
        index = next((i for i, c in enumerate(canon) if c.same_as(source)), None)
        if index is None:
            canon.append(source)
            index = len(canon) - 1
        keys.append(index)
    group = Counter(keys)
    proj = {3: ("qkv", ("q_proj", "k_proj", "v_proj")), 2: ("gate_up", ("gate_proj", "up_proj"))}
    sites: list[Site] = []
    layer, seen, last = -1, Counter(), None
    for src in keys:
        size = group[src]
        if size == 3 and seen[src] == 0:
            layer += 1
        if size in proj:
            site, names = proj[size]
            sites.append(Site(max(layer, 0), site, names[seen[src] % size]))
        else:
            site = "o" if last == "qkv" else "down"
            sites.append(Site(max(layer, 0), site, "o_proj" if site == "o" else "down_proj"))
        seen[src] += 1
        last = sites[-1].site
    return [Site(s.layer, s.site, f"layers.{s.layer}.{s.name}") for s in sites]


def require_ternary(mod: tvm.IRModule, scheme: QuantScheme | None) -> None:
    """Raise if ``scheme`` needs ternary weights and a quantized MatMul has a float weight.

    Called by the pipeline before FuseBitLinear (outside the pass, so the error reaches the
    caller as :class:`~bitnet_tvm.errors.UnsupportedGraphError`, a ``ValueError``).
    """
    if scheme is None or scheme.weight is not WeightFormat.TERNARY:
        return
    for gvar, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        g = GraphView.of(mod, func)
        bad = [var.name for var in g.var2val if quantized_float_matmul(g, var)]
        if bad:
            raise UnsupportedGraphError(
                f"scheme {scheme.name!r} needs ternary weights, but {len(bad)} MatMul(s) of "
                f"quantized activations in {gvar.name_hint!r} have a weight that is not "
                f"{{-a, 0, a}} (bound to {bad[:5]}); compile without scheme= to keep them in float"
            )


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(
        self, mod: tvm.IRModule, plan: dict, target: tvm.target.Target, base3: bool
    ) -> None:
        super().__init__(mod)
        self.plan = plan
        self.target = target
        self.base3 = base3

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        item = self.plan.get(binding.var)
        if item is None:
            super().visit_var_binding_(binding)
            return
        match, act, site = item
        sparse = act.bits == 8 and site.site in ("o", "down")
        kind = "sparse" if sparse else "dense"
        n, k = match.q_w.shape
        spec = MatmulSpec(kind, n, k, act.bits, select_layout(kind, self.target, base3=self.base3))
        alpha = np.full((n,), match.alpha, dtype=np.float32)
        x = self.visit_expr(match.act.source)
        value = emit_bitlinear(
            self.builder_, x, act, spec, match.q_w, alpha, site.name.replace(".", "_")
        )
        self.set_var_remap(binding.var, emit_like(self.builder_, binding.var, value))


@tvm.transform.module_pass(opt_level=0, name="bitnet.FuseBitLinear")
class FuseBitLinear:
    """Rewrite BitLinears into fused ternary operators (see the module docstring).

    Parameters
    ----------
    target : tvm.target.Target
        Decides the packed weight layout of each operator.
    scheme : QuantScheme or None
        Replace each site's activation quantizer by the scheme's; None keeps the graph's.
    weights : {"2bit", "1.6bit"}
        Storage of every ternary weight: 2 bits (4 per byte) or 1.6 bits (5 per byte, base 3;
        ``select_layout(..., base3=True)``).  The numerics are the same.
    """

    def __init__(
        self,
        target: tvm.target.Target,
        scheme: QuantScheme | None = None,
        weights: str = "2bit",
    ) -> None:
        self.target = target
        self.scheme = scheme
        self.base3 = check_weights(weights) == "1.6bit"

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            g = GraphView.of(mod, func)
            matches = find_bitlinears(g)
            if not matches:
                continue
            plan = {}
            for match, site in zip(matches, classify_sites(g, matches), strict=True):
                act = match.act.act
                if self.scheme is not None and self.scheme.site(site.site).enabled:
                    act = self.scheme.site(site.site)
                plan[match.root] = (match, act, site)
            rewriter = _Rewriter(mod, plan, self.target, self.base3)
            mod = apply_rewriter(rewriter, gvar, func)
        return mod
