"""Recognize BitLinears in an imported graph: ternary weight constants and activation quantizers.

A BitLinear computes ``y = matmul(dequant(quant(x)), W)`` where ``W`` is a ternary constant.
This module turns the many ways exporters write that into a :class:`BitLinearMatch`, or None.
Everything below is checked structurally; a value that merely looks right is not enough:

Activation quantizer (per token, ``q`` is integer-valued float)::

    stat  = max(abs(x), axis=-1, keepdims) | mean(abs(x), axis=-1, keepdims)
    guard = stat + eps | maximum(stat, eps) | clip(stat, eps, big)
    mult  = L / guard | (1 / guard) * L                 L = 127 (absmax) or sqrt(7) (absmean)
    q     = clip(round(x * mult), lo, hi)   [astype int8 -> astype float32]

Dequantization, one of::

    matmul(q * (guard / L), W)          ours, the a4.8 spec
    matmul(q / mult, W)                 HF AutoBitLinear (ActQuant)
    matmul(q, W) * (guard / L)          ours, integer form (``weights="ternary"`` exports)
    matmul(q, W) / (ws * mult)          HF packed BitLinear (ws: weight scale)

Weight ``W`` (after constant folding, ``[K, N]``): values in ``{-a, 0, a}`` (alpha = a), or
``{-1, 0, 1}`` with the scale applied after the matmul (``* ws``, ``/ ws`` or as above).  An
integer constant of codes is read through the casts and transposes that make it ``[K, N]``
float (``int8`` exports: ``permute_dims(astype(C))`` with ``C`` int8 ``[N, K]``), see
:func:`weight_codes`.

TopK (a4.8's o_proj input): ``x = x0 * mask`` or ``where(mask, x0, 0)`` where ``mask`` marks
the ``k`` largest ``|x0|`` of each row (``topk`` indices scattered into zeros); the ratio is
``k / d``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from bitnet_tvm.schemes import ActQuant, EpsMode, QuantMethod

from .graph_view import GraphView

__all__ = ["ActMatch", "BitLinearMatch", "match_bitlinear", "ternary_codes", "weight_codes"]

_LEVELS = {(-8.0, 7.0): 4, (-128.0, 127.0): 8}


@dataclass(frozen=True)
class ActMatch:
    """A recognized per-token activation quantizer."""

    source: relax.Expr  # what the fused quantizer reads (before any TopK)
    act: ActQuant
    q: relax.Expr  # the integer-valued tensor
    mult: relax.Expr  # L / guard
    guard: relax.Expr


@dataclass(frozen=True)
class BitLinearMatch:
    """A recognized BitLinear: ``root`` computes ``(act(source) @ q_w.T) * alpha``."""

    root: relax.Var
    act: ActMatch
    q_w: np.ndarray  # int8 [N, K]
    alpha: float


def ternary_codes(w: np.ndarray) -> tuple[np.ndarray, float] | None:
    """``(q [N, K] int8, a)`` if the ``[K, N]`` matrix ``w`` only holds ``{-a, 0, a}``."""
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.floating):
        return None
    # Cheap rejection of large float weights (embeddings, LM heads) before full-size passes:
    # the nonzero magnitudes of a sample must already be all equal.
    sample = np.abs(np.ravel(w, order="K")[:4096])
    sample = sample[sample != 0]
    if sample.size and not np.all(sample == sample[0]):
        return None
    if not np.all(np.isfinite(w)):
        return None
    a = float(np.max(np.abs(w))) if w.size else 0.0
    if a == 0.0:
        return np.zeros(w.T.shape, dtype=np.int8), 1.0
    mag = np.abs(w)
    if not np.all((mag == 0) | (mag == np.float32(a))):
        return None
    return np.sign(w.T).astype(np.int8), a


def weight_codes(g: GraphView, expr: relax.Expr) -> tuple[np.ndarray, float] | None:
    """``(q [N, K] int8, a)`` if ``expr`` is a ternary ``[K, N]`` weight, else None.

    ``expr`` is a constant (float: see :func:`ternary_codes`), possibly below a chain of 2-D
    ``permute_dims`` and widening ``astype`` (integer -> float).  An integer constant must hold
    codes in {-1, 0, 1} (alpha 1).  Integer codes are read without a copy.
    """
    transposed = False
    while True:
        if (perm := g.call(expr, "permute_dims")) is not None:
            axes = perm.attrs.axes
            if _rank(perm.args[0]) != 2 or (axes is not None and [int(a) for a in axes] != [1, 0]):
                return None
            transposed, expr = not transposed, perm.args[0]
        elif (cast := g.call(expr, "astype")) is not None:
            src = getattr(cast.args[0].ty, "dtype", None)
            if src is None or not str(src).startswith(("int", "uint")):
                return None  # a float -> float or float -> int cast is no identity on codes
            expr = cast.args[0]
        else:
            break
    value = g.value(expr)
    if not isinstance(value, tvm.ir.GenericConst) or len(value.value.shape) != 2:
        return None
    w = np.from_dlpack(value.value)  # a view: large constants are not copied
    if not str(value.value.dtype).startswith(("int", "uint")):
        return ternary_codes(w.T if transposed else w)
    q = w  # [K, N] unless transposed
    if q.size and (int(q.min()) < -1 or int(q.max()) > 1):
        return None
    q = q if transposed else q.T
    if q.dtype != np.int8:
        q = q.astype(np.int8)
    q.flags.writeable = False  # may be a view of the constant
    return q, 1.0


def _stat(g: GraphView, expr: relax.Expr) -> tuple[QuantMethod, relax.Expr] | None:
    for name, method in (("max", QuantMethod.ABSMAX), ("mean", QuantMethod.ABSMEAN)):
        call = g.call(expr, name)
        if call is None:
            continue
        axis = call.attrs.axis
        if axis is None or len(axis) != 1 or int(axis[0]) not in (-1, _rank(call.args[0]) - 1):
            return None
        if not call.attrs.keepdims:
            return None
        absx = g.call(call.args[0], "abs")
        return (method, absx.args[0]) if absx is not None else None
    return None


def _guard(g: GraphView, expr: relax.Expr):
    """``(method, x, eps_mode, eps)`` of ``stat + eps`` / ``maximum(stat, eps)`` / clip."""
    if (add := g.call(expr, "add")) is not None:
        for stat, eps in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
            if (e := g.scalar(eps)) is not None and (s := _stat(g, stat)) is not None:
                return (*s, EpsMode.ADD, e)
        return None
    if (mx := g.elementwise(expr, "maximum")) is not None:
        if (e := g.scalar(mx[1])) is not None and (s := _stat(g, mx[0])) is not None:
            return (*s, EpsMode.CLAMP, e)
        return None
    if (cl := g.clip(expr)) is not None and cl[2] >= 1e30:
        if (s := _stat(g, cl[0])) is not None:
            return (*s, EpsMode.CLAMP, cl[1])
    return None


def _topk(g: GraphView, expr: relax.Expr) -> tuple[relax.Expr, float] | None:
    """``(x0, ratio)`` if ``expr`` keeps the top-k magnitudes of each row of ``x0``."""
    from .topk_match import match_topk_mask

    return match_topk_mask(g, expr)


def _levels_over(g: GraphView, mult: relax.Expr) -> tuple[float, relax.Expr] | None:
    """``(L, guard)`` if ``mult`` is ``L / guard``, ``(1 / guard) * L`` or ``rsqrt``-free kin."""
    div = g.call(mult, "divide")
    if div is not None and (levels := g.scalar(div.args[0])) is not None:
        return levels, div.args[1]
    mul = g.call(mult, "multiply")
    if mul is None:
        return None
    for inv, lv in ((mul.args[0], mul.args[1]), (mul.args[1], mul.args[0])):
        levels = g.scalar(lv)
        if levels is None:
            continue
        recip = g.call(inv, "divide")
        if recip is not None and g.scalar(recip.args[0]) == 1.0:
            return levels, recip.args[1]
        if (recip := g.call(inv, "reciprocal")) is not None:
            return levels, recip.args[0]
    return None


def match_quantizer(g: GraphView, expr: relax.Expr) -> ActMatch | None:
    """Recognize ``expr`` as ``clip(round(x * mult))`` (under casts) of a per-token quantizer."""
    clipped = g.clip(g.strip_casts(expr))
    if clipped is None or (bits := _LEVELS.get((clipped[1], clipped[2]))) is None:
        return None
    rnd = g.call(clipped[0], "round")
    mul = g.call(rnd.args[0], "multiply") if rnd is not None else None
    if mul is None:
        return None
    for x, mult in ((mul.args[0], mul.args[1]), (mul.args[1], mul.args[0])):
        found = _levels_over(g, mult)
        if found is None:
            continue
        levels, guard_expr = found
        guard = _guard(g, guard_expr)
        if guard is None or not g.same(guard[1], x):
            continue
        method, _, eps_mode, eps = guard
        want = (
            math.sqrt(7.0) if (method is QuantMethod.ABSMEAN and bits == 4) else 2 ** (bits - 1) - 1
        )
        if not math.isclose(levels, want, rel_tol=1e-6):
            return None
        source, topk = x, None
        if (found := _topk(g, x)) is not None:
            source, topk = found
        act = ActQuant(method, bits=bits, topk=topk, eps_mode=eps_mode, eps=eps)
        return ActMatch(source, act, expr, mult, guard_expr)
    return None


def _dequant_scale_ok(g: GraphView, scale: relax.Expr, m: ActMatch) -> bool:
    """Whether ``q * scale`` dequantizes: ``scale = guard / L``."""
    div = g.call(scale, "divide")
    return (
        div is not None
        and g.same(div.args[0], m.guard)
        and g.scalar(div.args[1]) is not None
        and math.isclose(g.scalar(div.args[1]), m.act.levels, rel_tol=1e-6)
    )


def _match_lhs(g: GraphView, lhs: relax.Expr) -> tuple[ActMatch | None, bool]:
    """``(quantizer, dequantized_before_matmul)`` of a matmul's left operand."""
    if (mul := g.call(lhs, "multiply")) is not None:
        for q, scale in ((mul.args[0], mul.args[1]), (mul.args[1], mul.args[0])):
            m = match_quantizer(g, q)
            if m is not None and _dequant_scale_ok(g, scale, m):
                return m, True
    if (div := g.call(lhs, "divide")) is not None:
        m = match_quantizer(g, div.args[0])
        if m is not None and g.same(div.args[1], m.mult):
            return m, True
    return match_quantizer(g, lhs), False


def _rank(expr: relax.Expr) -> int:
    shape = getattr(expr.ty, "shape", None)
    return len(shape) if shape is not None else -1


def match_bitlinear(
    g: GraphView, var: relax.Var, users: dict[relax.Var, list[relax.Var]]
) -> BitLinearMatch | None:
    """Recognize the BitLinear whose matmul is bound to ``var``.

    Returns the match rooted at the last binding of the BitLinear (the matmul, or the
    post-matmul rescale that completes it), or None.
    """
    if not isinstance(g.var2val.get(var), relax.Call):
        return None  # an alias (``gv = lv``): the BitLinear is matched at ``lv``
    call = g.call(var, "matmul")
    if call is None or (codes := weight_codes(g, call.args[1])) is None:
        return None
    q_w, alpha = codes
    act, dequantized = _match_lhs(g, call.args[0])
    if act is None:
        return None
    root = var
    # After the matmul: scalar weight scales, and the activation dequant when it was not
    # applied before (``* (guard / L)`` as our exporter writes it, ``/ (ws * mult)`` as HF's).
    while len(users.get(root, [])) == 1:
        user = users[root][0]
        post = g.call(user, "multiply", "divide")
        if post is None:
            break
        operands = list(post.args)
        if not any(g.same(a, root) for a in operands):
            break
        other = operands[1] if g.same(operands[0], root) else operands[0]
        is_mul = post.op.name == "relax.multiply"
        if not is_mul and not g.same(operands[0], root):
            break  # c / y is not a rescale of y
        if (ws := g.scalar(other)) is not None:
            alpha = alpha * ws if is_mul else alpha / ws
        elif not dequantized and is_mul and _dequant_scale_ok(g, other, act):
            dequantized = True
        elif not dequantized and not is_mul and (ws := _is_ws_times(g, other, act)) is not None:
            alpha, dequantized = alpha / ws, True
        else:
            break
        root = user
    if not dequantized:
        return None
    return BitLinearMatch(root, act, q_w, float(alpha))


def _is_ws_times(g: GraphView, expr: relax.Expr, m: ActMatch) -> float | None:
    """``ws`` if ``expr`` is ``ws * mult`` or ``mult * ws`` with scalar constant ``ws``."""
    mul = g.call(expr, "multiply")
    if mul is None:
        return None
    for ws, mult in ((mul.args[0], mul.args[1]), (mul.args[1], mul.args[0])):
        if g.same(mult, m.mult) and (s := g.scalar(ws)) is not None:
            return s
    return None


def quantized_float_matmul(g: GraphView, var: relax.Var) -> bool:
    """Whether ``var`` is a matmul of quantized activations by a constant, non-ternary weight.

    Such a MatMul looks like a BitLinear whose weight is not ternary: left alone by default,
    an error when a scheme that requires ternary weights is forced on the graph.
    """
    if not isinstance(g.var2val.get(var), relax.Call):
        return False
    call = g.call(var, "matmul")
    if call is None or g.constant(call.args[1]) is None:
        return False
    if weight_codes(g, call.args[1]) is not None:
        return False
    return _match_lhs(g, call.args[0])[0] is not None
