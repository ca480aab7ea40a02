"""Fused RMSNorm + per-token activation quantizer (optionally TopK first).

``norm_quantize(k, act=..., norm_eps=..., has_weight=...)`` computes, per row ``m`` of
``x: float32[M, K]``, exactly :func:`bitnet_tvm.reference.rmsnorm` (when ``norm_eps`` is given)
followed by :func:`bitnet_tvm.reference.quantize_act`, bit for bit:

* RMSNorm: ``inv = 1 / sqrt(sum(x * x) / K + eps)``, ``y = x * inv`` then ``y * gamma``.
* TopK (``act.topk``): keep the ``kk = ceil(ratio * K)`` largest ``|y|``, ties to the lower
  index, without sorting.  ``|y|`` of a finite float is a non-negative float whose int32 bit
  pattern orders like the value, so the ``kk``-th largest magnitude ``t`` is found by bisection
  on the bit pattern (31 counting passes over the row: ``t`` is the largest pattern with
  ``count(bits >= t) >= kk``).  All ``bits > t`` are kept, and of the ``bits == t`` the first
  ``kk - count(bits > t)`` in index order: one scan finds the index ``k_cut`` of the last tie
  kept, so the mask is a pure function of ``k`` (``bits > t or (bits == t and k <= k_cut)``).
* statistic: absmax is a max (order-free); absmean is a float32 sum divided by K.
* ``d = stat + eps`` or ``max(stat, eps)``; ``q = clip(nearbyint(y * (L / d)))`` (round half to
  even: ``nearbyint`` lowers to ``llvm.nearbyint``; ``T.round`` would round half away from
  zero); ``x_scale = d / L``; ``L`` is float32(sqrt(7)) or 127 as in the reference.

Float sums (``sum(x * x)`` and the absmean) follow NumPy's pairwise summation of float32
(``numpy/_core/src/umath/loops_utils.h.src``: blocks of at most 128 values summed in 8
interleaved lanes, combined ``((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))``, the rest added in order;
longer ranges split at ``n/2`` rounded down to a multiple of 8 and the halves added).  K is
static, so the block structure is unrolled here at build time; runs of equal blocks become one
loop.  That makes the scale and the codes equal to the reference exactly, not within an ulp.

The whole row is one block ``norm_quantize`` over ``m`` (M symbolic); every pass recomputes
``y`` from ``x`` (two multiplies) instead of storing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script import builder as T

from bitnet_tvm.reference import topk_count
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.operators.common import check_dim
from bitnet_tvm.schemes import ActQuant, EpsMode, QuantMethod

__all__ = ["norm_quantize", "pairwise_blocks"]

_F32 = np.float32
_BLOCK = 128  # NumPy's PW_BLOCKSIZE
_INF_BITS = 0x7F800000  # int32 pattern of +inf: above every finite |y|


@dataclass(frozen=True)
class _Leaf:
    offset: int
    length: int


@dataclass(frozen=True)
class _Node:
    left: _Leaf | _Node
    right: _Leaf | _Node


def pairwise_blocks(n: int, offset: int = 0) -> _Leaf | _Node:
    """NumPy's pairwise-summation tree of a contiguous float32 range ``[offset, offset + n)``."""
    if n <= _BLOCK:
        return _Leaf(offset, n)
    half = n // 2
    half -= half % 8
    return _Node(pairwise_blocks(half, offset), pairwise_blocks(n - half, offset + half))


def _leaves(tree: _Leaf | _Node) -> list[_Leaf]:
    if isinstance(tree, _Leaf):
        return [tree]
    return _leaves(tree.left) + _leaves(tree.right)


def _f32(value: float) -> tirx.FloatImm:
    """A float32 immediate holding exactly ``np.float32(value)``."""
    return T.float32(float(_F32(value)))


def _i64(value: int) -> tirx.IntImm:
    return T.int64(value)


def _emit_pairwise_sum(term, k: int, lanes: tirx.Buffer, part: tirx.Buffer) -> tirx.PrimExpr:
    """Emit loops leaving NumPy's pairwise leaf sums of ``term(i)``, i < k, in ``part``.

    Returns the expression combining the leaves (in NumPy's order) into the total.
    """
    tree = pairwise_blocks(k)
    leaves = _leaves(tree)
    index = {leaf.offset: i for i, leaf in enumerate(leaves)}
    run_start = 0
    while run_start < len(leaves):
        run_end = run_start + 1
        while run_end < len(leaves) and leaves[run_end].length == leaves[run_start].length:
            run_end += 1
        length, first = leaves[run_start].length, leaves[run_start].offset
        with T.serial(_i64(0), _i64(run_end - run_start)) as j:
            base = _i64(first) + j * _i64(length)
            slot = _i64(run_start) + j
            groups, rest = divmod(length, 8)
            if groups:
                with T.serial(_i64(0), _i64(8)) as lane:
                    T.buffer_store(lanes, term(base + lane), [lane])
                with T.serial(_i64(0), _i64(groups - 1)) as g, T.serial(_i64(0), _i64(8)) as lane:
                    idx = base + (g + _i64(1)) * _i64(8) + lane
                    T.buffer_store(lanes, lanes[lane] + term(idx), [lane])
                r = [lanes[_i64(i)] for i in range(8)]
                T.buffer_store(
                    part, ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7])), [slot]
                )
            else:
                T.buffer_store(part, _f32(0.0), [slot])
            if rest:
                with T.serial(_i64(0), _i64(rest)) as t:
                    T.buffer_store(part, part[slot] + term(base + _i64(8 * groups) + t), [slot])
        run_start = run_end

    def combine(node: _Leaf | _Node) -> tirx.PrimExpr:
        if isinstance(node, _Leaf):
            return part[_i64(index[node.offset])]
        return combine(node.left) + combine(node.right)

    return combine(tree)


def _check_act(act: object) -> ActQuant:
    if not isinstance(act, ActQuant):
        raise TypeError(f"act must be an ActQuant, got {type(act).__name__}")
    if not act.enabled:
        raise ValueError("act must be an enabled ActQuant (method 'absmean' or 'absmax')")
    return act


def norm_quantize(
    k: int, *, act: ActQuant, norm_eps: float | None, has_weight: bool
) -> tirx.PrimFunc:
    """Build the fused (RMSNorm +) TopK + activation-quantizer PrimFunc.

    Parameters
    ----------
    k : int
        Row length (hidden size).
    act : ActQuant
        The site's quantizer (enabled).
    norm_eps : float or None
        RMSNorm epsilon; None for a plain quantizer (no norm).
    has_weight : bool
        Whether the RMSNorm multiplies by ``gamma`` (ignored, and must be False, without norm).

    Returns
    -------
    PrimFunc
        ``(x: float32[M, K], [gamma: float32[K],] x_q: int8[M, K], x_scale: float32[M, 1])``,
        M symbolic, ``bitnet.op = norm_quantize``.
    """
    k = check_dim(k, "k")
    act = _check_act(act)
    if norm_eps is not None and not (isinstance(norm_eps, float | int) and norm_eps > 0):
        raise ValueError(f"norm_eps must be a positive float or None, got {norm_eps!r}")
    if norm_eps is None and has_weight:
        raise ValueError("has_weight=True needs norm_eps (a gamma without RMSNorm is not a site)")
    levels = _f32(act.levels)
    keep = topk_count(k, act.topk) if act.topk is not None else None
    K_ = _i64(k)

    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            T.func_name(f"norm_quantize_k{k}")
            M = tirx.Var("M", "int64")
            x = T.match_buffer(T.arg("var_x", T.handle()), (M, K_), "float32")
            gamma = T.arg("gamma", T.buffer((K_,), "float32")) if has_weight else None
            x_q = T.match_buffer(T.arg("var_x_q", T.handle()), (M, K_), "int8")
            x_scale = T.match_buffer(T.arg("var_x_scale", T.handle()), (M, _i64(1)), "float32")
            T.func_attr(_attrs(k, act, norm_eps, has_weight))
            with T.grid(M) as m, T.sblock("norm_quantize"):
                vm = T.axis.spatial(M, m)
                T.reads(x[vm, 0:K_], *([gamma[0:K_]] if has_weight else []))
                T.writes(x_q[vm, 0:K_], x_scale[vm, 0])
                lanes = T.sblock_alloc_buffer((_i64(8),), "float32")
                part = T.sblock_alloc_buffer((_i64(len(_leaves(pairwise_blocks(k)))),), "float32")
                fs = T.sblock_alloc_buffer((_i64(2),), "float32")  # inv, stat
                ints = T.sblock_alloc_buffer((_i64(5),), "int64")  # lo, hi, mid, count, k_cut

                def y(i):
                    if norm_eps is None:
                        return x[vm, i]
                    value = x[vm, i] * fs[_i64(0)]
                    return value * gamma[i] if has_weight else value

                if norm_eps is not None:
                    total = _emit_pairwise_sum(lambda i: _square(x[vm, i]), k, lanes, part)
                    mean = total / _f32(k)
                    T.buffer_store(fs, _f32(1.0) / T.sqrt(mean + _f32(norm_eps)), [_i64(0)])
                masked = y if keep is None else _emit_topk(y, k, keep, ints)
                _emit_quantize(masked, k, act, levels, lanes, part, fs, x_q, x_scale, vm)
    return ib.get()


def _square(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """float32 ``value * value`` behind a barrier that keeps it out of an FMA.

    TVM's LLVM backend contracts ``a + b * c`` into an FMA (one rounding instead of two), which
    breaks bit equality with NumPy, and no target option turns that off.  ``min(v * v, +inf)``
    equals ``v * v`` for every finite ``v``, but LLVM must keep the ``min`` (it differs for a
    NaN input), so the add no longer sees a multiply.
    """
    return T.min(value * value, T.float32(math.inf))


def _bits(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """int64 of the int32 bit pattern of ``|value|`` (monotone in ``|value|``)."""
    return T.Cast("int64", T.reinterpret("int32", T.fabs(value)))


def _count(pred, k: int, ints: tirx.Buffer, slot: int) -> None:
    """``ints[slot] = number of i < k with pred(i)``."""
    T.buffer_store(ints, _i64(0), [_i64(slot)])
    with T.serial(_i64(0), _i64(k)) as i:
        T.buffer_store(ints, ints[_i64(slot)] + T.Cast("int64", pred(i)), [_i64(slot)])


def _emit_topk(y, k: int, keep: int, ints: tirx.Buffer):
    """Emit the threshold search; return ``ym(i)``, ``y(i)`` masked to the TopK entries."""
    lo, hi, mid, count, cut = (ints[_i64(s)] for s in range(5))
    T.buffer_store(ints, _i64(0), [_i64(0)])
    T.buffer_store(ints, _i64(_INF_BITS), [_i64(1)])
    with T.serial(_i64(0), _i64(31)):  # hi - lo < 2**31 halves to <= 1
        T.buffer_store(ints, lo + T.shift_right(hi - lo, _i64(1)), [_i64(2)])
        _count(lambda i: _bits(y(i)) >= mid, k, ints, 3)
        with T.If(count >= _i64(keep)):
            with T.Then():
                T.buffer_store(ints, mid, [_i64(0)])
            with T.Else():
                T.buffer_store(ints, mid, [_i64(1)])
    # lo is the keep-th largest pattern; keep the first (keep - count(> lo)) ties.
    _count(lambda i: _bits(y(i)) > lo, k, ints, 3)
    T.buffer_store(ints, _i64(keep) - count, [_i64(2)])  # ties still to keep
    T.buffer_store(ints, _i64(-1), [_i64(4)])
    with T.serial(_i64(0), _i64(k)) as i, T.If(T.And(_bits(y(i)) == lo, mid > _i64(0))):
        with T.Then():
            T.buffer_store(ints, mid - _i64(1), [_i64(2)])
            T.buffer_store(ints, i, [_i64(4)])

    def masked(i):
        bits = _bits(y(i))
        kept = T.Or(bits > lo, T.And(bits == lo, i <= cut))
        return T.Select(kept, y(i), _f32(0.0))

    return masked


def _emit_quantize(ym, k, act, levels, lanes, part, fs, x_q, x_scale, vm) -> None:
    """Emit statistic, guard, codes and scale of one row of ``ym(i)``."""
    if act.method is QuantMethod.ABSMEAN:
        total = _emit_pairwise_sum(lambda i: T.fabs(ym(i)), k, lanes, part)
        T.buffer_store(fs, total / _f32(k), [_i64(1)])
    else:
        T.buffer_store(fs, _f32(0.0), [_i64(1)])
        with T.serial(_i64(0), _i64(k)) as i:
            T.buffer_store(fs, T.max(fs[_i64(1)], T.fabs(ym(i))), [_i64(1)])
    stat, eps = fs[_i64(1)], _f32(act.eps)
    guarded = stat + eps if act.eps_mode is EpsMode.ADD else T.max(stat, eps)
    T.buffer_store(fs, guarded, [_i64(1)])
    mult = levels / fs[_i64(1)]
    with T.serial(_i64(0), _i64(k)) as i:
        rounded = T.nearbyint(ym(i) * mult)
        clipped = T.min(T.max(rounded, _f32(act.qmin)), _f32(act.qmax))
        T.buffer_store(x_q, T.Cast("int8", clipped), [vm, i])
    T.buffer_store(x_scale, fs[_i64(1)] / levels, [vm, _i64(0)])


def _attrs(k: int, act: ActQuant, norm_eps: float | None, has_weight: bool) -> dict:
    out = {
        attrs.OP: attrs.OpName.NORM_QUANTIZE.value,
        attrs.ACT_BITS: act.bits,
        attrs.K: k,
        attrs.ACT_METHOD: act.method.value,
        attrs.ACT_EPS_MODE: act.eps_mode.value,
        attrs.ACT_EPS: float(act.eps),
        attrs.HAS_WEIGHT: bool(has_weight),
        "tirx.noalias": True,
    }
    if act.topk is not None:
        out[attrs.ACT_TOPK] = float(act.topk)
    if norm_eps is not None:
        out[attrs.NORM_EPS] = float(norm_eps)
    assert not math.isnan(out[attrs.ACT_EPS])
    return out
