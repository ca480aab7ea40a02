"""AVX-512 VNNI formulation of the dense ternary matmul, for any M (decode and prefill tiles).

The fused operator computes ``acc = sum_k int32(x[m, k]) * (c[n, k] - 1)`` with codes
``c = W + 1`` in {0, 1, 2}.  ``vpdpbusd`` multiplies unsigned by signed bytes, so this
formulation computes the same int32 value as ``sum_k c * x - sum_k x`` (exact: integers) over
the 64-aligned head of K and adds the ``K % 64`` tail directly (``row = min(mo mt + mi, M - 1)``)::

    x_pack[mo, mi, kb, p] = x[row, 64 kb + 4 (p % 16) + p // 16]
    x_sum[mo, mi]         = sum_{kb, p} x_pack[mo, mi, kb, p]
    dot[mo, mi, n, i]    += code(w[n, 16 kb + 4 (i % 4) + j], i // 4) * x_pack[mo, mi, kb, 4 i + j]
    tail[mo, mi, n]       = sum_{64 KB <= k < K} x[row, k] * (code(n, k) - 1)
    y[row, n]             = float32(sum_i dot[..., i] - x_sum + tail) * x_scale[row] * alpha[n]

Lane ``i`` of ``dot`` sums bytes ``4 i + j`` of the 64-code vector: code ``(4 i + j) // 16`` of
packed byte ``(4 i + j) % 16`` (written in the simplified form that ``blockize`` produces, so
that it matches the intrinsic of :mod:`~bitnet_tvm.schedules.cpu.intrin_x86`).  Permuting the
activations (once per call, ``x_pack``) instead of the weights keeps the plain ``2bit`` layout:
one weight row streams as contiguous 16-byte pieces, each broadcast, shifted and masked in
registers, so no VNNI-specific weight layout is needed.

M is padded to a multiple of the row tile ``mt``: padded rows repeat the last activation row
and are never stored (the epilogue checks ``row < M``), so all intermediates share one padded
domain.  The epilogue multiplies in the reference's order, so results equal
:func:`bitnet_tvm.reference.ternary_matmul` bit for bit.

Schedule (``rows`` weight rows by ``mt`` activation rows per register tile)::

    parallel for n_outer:                       # N / rows chunks
      for mo:
        dot[mt, rows, 16] = 0                   # registers
        for kb:                                 # K / 64
          for r (unrolled), mi (unrolled):
            dot[mi, r, :] = vpdpbusd(dot[mi, r, :], decode(w[n, 16 kb : +16]), x_pack[mo, mi, kb])
        tail, epilogue of the tile
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.script import tirx as T
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule, split_factor
from bitnet_tvm.schedules.cpu.intrin_x86 import VNNI_TERNARY_2BIT_INTRIN, code_2bit
from bitnet_tvm.schedules.layouts import WeightLayout
from bitnet_tvm.schedules.target import has_avx512_vnni

__all__ = ["VnniKnobs", "VnniMatmul", "VnniTile", "schedule_vnni_matmul", "vnni_matmul"]

_BLOCK = 64  # codes per vpdpbusd (16 packed bytes)
_DENSE = (attrs.OpName.TERNARY_INT4_MATMUL, attrs.OpName.TERNARY_INT8_MATMUL)


@dataclass(frozen=True)
class VnniTile:
    """Register tile of the VNNI matmul.

    Attributes
    ----------
    rows : int
        Weight rows decoded per step (independent accumulators per activation row); the
        largest divisor of N up to this is used.
    mt : int
        Activation rows sharing each decoded weight vector (M is padded to a multiple).
    """

    rows: int = 4
    mt: int = 1

    def __post_init__(self) -> None:
        for name in ("rows", "mt"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VnniTile.{name} must be a positive int, got {value!r}")


def vnni_matmul(n: int, k: int, mt: int) -> tirx.PrimFunc:
    """The VNNI formulation of ``ternary_matmul(n, k, layout="2bit")`` (same signature).

    Parameters
    ----------
    n, k : int
        Output features and reduction length (``k >= 64``).
    mt : int
        Activation-row tile (rows of ``x_pack`` are padded to a multiple of it).
    """
    if k < _BLOCK:
        raise ValueError(f"k must be at least {_BLOCK} for the VNNI matmul, got {k}")
    i64 = T.int64
    N_, K_ = i64(n), i64(k)
    KB = i64(k // _BLOCK)
    K0 = k // _BLOCK * _BLOCK
    MT = i64(mt)
    tail = k - K0

    def tiles(m):
        return (m + MT - i64(1)) // MT

    def row(m, vmo, vmi):
        """Activation row of tile row ``(vmo, vmi)``, clamped (padded rows repeat the last)."""
        return T.min(vmo * MT + vmi, m - i64(1))

    def rest_shape(m):
        return (tiles(m), MT, N_) if tail > 0 else (i64(1),)

    def total(dot, x_sum, rest, vmo, vmi, vn):
        lanes = _tree_sum([dot[vmo, vmi, vn, i64(i)] for i in range(16)]) - x_sum[vmo, vmi]
        return lanes + rest[vmo, vmi, vn] if tail > 0 else lanes

    def tail_code(w, vn, vk):
        return code_2bit(w[vn, vk // i64(4)], T.Cast("int32", vk % i64(4))) - 1

    @T.prim_func(s_tir=True)
    def func(
        var_x_q: T.handle,
        var_x_scale: T.handle,
        w: T.Buffer((N_, i64(-(-k // 4))), "uint8"),
        alpha: T.Buffer((N_,), "float32"),
        var_y: T.handle,
    ):
        M = T.int64()
        x_q = T.match_buffer(var_x_q, (M, K_), "int8")
        x_scale = T.match_buffer(var_x_scale, (M, i64(1)), "float32")
        y = T.match_buffer(var_y, (M, N_), "float32")
        x_pack = T.sblock_alloc_buffer((tiles(M), MT, KB, i64(64)), "int8")
        x_sum = T.sblock_alloc_buffer((tiles(M), MT), "int32")
        dot = T.sblock_alloc_buffer((tiles(M), MT, N_, i64(16)), "int32")
        rest = T.sblock_alloc_buffer(rest_shape(M), "int32")  # K % 64 part (unused if 0)
        for mo, mi, kb, p in T.grid(tiles(M), MT, KB, i64(64)):
            with T.sblock("x_pack"):
                vmo, vmi, vkb, vp = T.axis.remap("SSSS", [mo, mi, kb, p])
                x_pack[vmo, vmi, vkb, vp] = x_q[
                    row(M, vmo, vmi), vkb * i64(64) + vp % i64(16) * i64(4) + vp // i64(16)
                ]
        for mo, mi, kb, p in T.grid(tiles(M), MT, KB, i64(64)):
            with T.sblock("x_sum"):
                vmo, vmi, vkb, vp = T.axis.remap("SSRR", [mo, mi, kb, p])
                with T.init():
                    x_sum[vmo, vmi] = 0
                x_sum[vmo, vmi] = x_sum[vmo, vmi] + T.Cast("int32", x_pack[vmo, vmi, vkb, vp])
        for mo, mi, nn, kb, i, j in T.grid(tiles(M), MT, N_, KB, i64(16), i64(4)):
            with T.sblock("dot"):
                vmo, vmi, vn, vkb, vi, vj = T.axis.remap("SSSRSR", [mo, mi, nn, kb, i, j])
                with T.init():
                    dot[vmo, vmi, vn, vi] = 0
                dot[vmo, vmi, vn, vi] = dot[vmo, vmi, vn, vi] + code_2bit(
                    w[vn, vkb * i64(16) + vi % i64(4) * i64(4) + vj], T.Cast("int32", vi) // 4
                ) * T.Cast("int32", x_pack[vmo, vmi, vkb, vi * i64(4) + vj])
        if tail > 0:
            for mo, mi, nn, kk in T.grid(tiles(M), MT, N_, i64(tail)):
                with T.sblock("tail"):
                    vmo, vmi, vn, vk = T.axis.remap("SSSR", [mo, mi, nn, kk])
                    with T.init():
                        rest[vmo, vmi, vn] = 0
                    rest[vmo, vmi, vn] = rest[vmo, vmi, vn] + T.Cast(
                        "int32", x_q[row(M, vmo, vmi), i64(K0) + vk]
                    ) * tail_code(w, vn, i64(K0) + vk)
        for mo, mi, nn in T.grid(tiles(M), MT, N_):
            with T.sblock("epilogue"):
                vmo, vmi, vn = T.axis.remap("SSS", [mo, mi, nn])
                if vmo * MT + vmi < M:
                    y[vmo * MT + vmi, vn] = (
                        T.Cast("float32", total(dot, x_sum, rest, vmo, vmi, vn))
                        * x_scale[vmo * MT + vmi, i64(0)]
                        * alpha[vn]
                    )

    return func


def _tree_sum(terms: list) -> tirx.PrimExpr:
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] for i in range(0, len(terms), 2)]
    return terms[0]


def schedule_vnni_matmul(func: tirx.PrimFunc, tile: VnniTile) -> s_tir.Schedule:
    """Build and schedule the VNNI formulation of the dense ternary matmul ``func``.

    ``func`` must be a ``2bit`` ``ternary_int{4,8}_matmul`` with ``K >= 64``; the returned
    schedule's function has ``func``'s signature, name and attributes.
    """
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    kernel = vnni_matmul(n, k, tile.mt).with_attrs(dict(func.attrs))
    sch = s_tir.Schedule(kernel)
    rows = split_factor(n, tile.rows)  # a predicated row tile would not tensorize
    epilogue = sch.get_sblock("epilogue")
    mo, mi, nn = sch.get_loops(epilogue)
    n_outer, r = sch.split(nn, [None, rows])
    sch.reorder(n_outer, mo, r, mi)
    sch.parallel(n_outer)

    dot = sch.get_sblock("dot")
    sch.compute_at(dot, mo, preserve_unit_loops=True)
    d_mi, d_r, kb, i, _ = sch.get_loops(dot)[-5:]
    sch.reorder(kb, d_r, d_mi, i)
    init = sch.decompose_reduction(dot, kb)
    sch.tensorize(sch.blockize(i), VNNI_TERNARY_2BIT_INTRIN)
    for loop in (d_r, d_mi):
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.set_scope(init, 0, "local")
    if k % _BLOCK:
        tail = sch.get_sblock("tail")
        sch.compute_at(tail, mo)
        sch.set_scope(tail, 0, "local")

    sch.vectorize(sch.get_loops(sch.get_sblock("x_pack"))[-1])
    return sch


@dataclass(frozen=True)
class VnniKnobs:
    """Tunable choices of :class:`VnniMatmul` (defaults: best measured on Zen 4, one thread).

    Decode is latency-bound on the ``vpdpbusd`` chains below ~8 rows (rows 2/4/8/16 gave
    162/92/69/62 µs for 2560x2560, M=1); prefill 4x4 beat 8x2, 6x3 and 4x3 (~650-720 GOP/s).

    Attributes
    ----------
    decode : VnniTile
        Tile for decode calls (``bitnet.m_hint`` absent or at most ``max_decode_m``).
    prefill : VnniTile
        Tile for prefill calls.
    max_decode_m : int
        Largest ``bitnet.m_hint`` scheduled with the decode tile.
    """

    decode: VnniTile = VnniTile(rows=16, mt=1)
    prefill: VnniTile = VnniTile(rows=4, mt=4)
    max_decode_m: int = 8


class VnniMatmul(BitnetCPURule):
    """``ternary_int{4,8}_matmul`` in the ``2bit`` layout on AVX-512 VNNI CPUs, any M.

    Declines (returns None) for targets without ``avx512vnni`` (the generic
    :class:`~bitnet_tvm.schedules.cpu.gemv.TernaryGemv` / ``TernaryGemm`` take those), other
    layouts, ``K < 64`` and every other PrimFunc.  INT4 and INT8 activations run the same
    kernel (both are int8 codes; ``vpdpbusd`` needs no narrower type).
    """

    ops = _DENSE

    def __init__(self, knobs: VnniKnobs | None = None) -> None:
        self.knobs = knobs or VnniKnobs()

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        """Schedule ``func``, or return None when this rule does not apply (see class doc)."""
        if not self.matches(func, target) or not has_avx512_vnni(target):
            return None
        if str(func.attrs[attrs.LAYOUT]) != WeightLayout.TWO_BIT.value:
            return None
        if attrs.get_int(func, attrs.K) < _BLOCK:
            return None
        m_hint = attrs.get_int(func, attrs.M_HINT)
        decode = m_hint is None or m_hint <= self.knobs.max_decode_m
        return schedule_vnni_matmul(func, self.knobs.decode if decode else self.knobs.prefill)
