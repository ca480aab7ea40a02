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

Weight layouts (:class:`~bitnet_tvm.schedules.layouts.WeightLayout`):

* ``2bit``: the formulation above, one row's 16-byte pieces strided by the row length.
* ``2bit_vnni``: the same codes, 16 rows interleaved per 16-byte piece, so the 16-row decode tile
  reads one linear stream (N padded to 16 rows and K to 64 codes by the packing: the activations
  are padded with zeros, so there is no ``tail`` and padded rows are never stored).
* ``base3_vnni``: 1.6 bits per weight, blocks of 320 codes in 64 bytes per row; digit ``d`` of
  byte ``b`` multiplies ``x[320 kb + 64 d + b]`` (``x_pack`` is then ``x`` itself, zero-padded),
  decoded by table lookups (:data:`~bitnet_tvm.schedules.cpu.intrin_x86.VNNI_TERNARY_BASE3_INTRIN`).

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

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule, split_factor
from bitnet_tvm.schedules.cpu.intrin_x86 import (
    VNNI_TERNARY_2BIT_INTRIN,
    VNNI_TERNARY_BASE3_INT4_INTRIN,
    VNNI_TERNARY_BASE3_INTRIN,
    code_2bit,
    mulshift_term,
)
from bitnet_tvm.schedules.layouts import WeightLayout, packed_shape
from bitnet_tvm.schedules.target import has_avx512_vnni, has_llvm_features

__all__ = [
    "VnniKnobs",
    "VnniMatmul",
    "VnniTile",
    "schedule_vnni_matmul",
    "schedule_vnni_tiles",
    "vnni_matmul",
]

_BLOCK = 64  # codes per vpdpbusd (16 packed bytes)
_DENSE = (attrs.OpName.TERNARY_INT4_MATMUL, attrs.OpName.TERNARY_INT8_MATMUL)
_GATE_UP = (attrs.OpName.TERNARY_INT4_GATE_UP, attrs.OpName.TERNARY_INT8_GATE_UP)
_ROWS = reference.VNNI_ROWS


@dataclass(frozen=True)
class _Format:
    """How a weight layout feeds ``vpdpbusd``: codes and bytes per row and block, digits (one
    ``vpdpbusd`` each) per block, intrinsic, whether rows are interleaved in groups of 16."""

    codes: int
    nbytes: int
    digits: int
    intrin: str
    interleaved: bool
    folded: bool = False  # base 3, INT4: x_pack holds 3 x_e - x_(e-1) (6 digits, 16 lanes)


_FORMATS = {
    WeightLayout.TWO_BIT: _Format(64, 16, 1, VNNI_TERNARY_2BIT_INTRIN, False),
    WeightLayout.TWO_BIT_VNNI: _Format(64, 16, 1, VNNI_TERNARY_2BIT_INTRIN, True),
    WeightLayout.BASE3_VNNI: _Format(320, 64, 5, VNNI_TERNARY_BASE3_INTRIN, True),
}
_BASE3_INT4 = _Format(320, 64, 6, VNNI_TERNARY_BASE3_INT4_INTRIN, True, True)


def _format(layout: WeightLayout, act_bits: int) -> _Format:
    """INT4 activations fold the base-3 weight terms (``|3 x_e - x_(e-1)| <= 32`` fits int8)."""
    if layout is WeightLayout.BASE3_VNNI and act_bits == 4:
        return _BASE3_INT4
    return _FORMATS[layout]


@dataclass(frozen=True)
class VnniTile:
    """Register tile of the VNNI matmul.

    Attributes
    ----------
    rows : int
        Weight rows decoded per step (independent accumulators per activation row); the
        largest divisor of N (of N padded to 16 for the interleaved layouts) up to this is used.
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


def vnni_matmul(
    n: int,
    k: int,
    mt: int,
    layout: WeightLayout | str = WeightLayout.TWO_BIT,
    act_bits: int = 8,
    gate_up: bool = False,
) -> tirx.PrimFunc:
    """The VNNI formulation of ``ternary_matmul(n, k, layout=layout)`` (same signature).

    Parameters
    ----------
    n, k : int
        Output features and reduction length (``k >= 64`` for the ``2bit`` layout).
    mt : int
        Activation-row tile (rows of ``x_pack`` are padded to a multiple of it).
    layout : WeightLayout
        ``2bit``, ``2bit_vnni`` or ``base3_vnni``.
    act_bits : {4, 8}
        Activation width; with 4 (values in [-8, 7]) ``base3_vnni`` takes one ``vpdpbusd`` per
        weight byte power ``t_e`` (6 per 320 codes) instead of two per digit (10).
    gate_up : bool
        Build ``ternary_gate_up(n, k, layout="2bit")`` instead (``n`` = I, weight ``[2I, K]``):
        ``dot`` row ``2 i + s`` is weight row ``s I + i`` (gate, then up), so a tile of
        outputs reads one contiguous run of ``dot`` rows, and the epilogue is the operator's
        ``(max(g, 0) max(g, 0)) u``.
    """
    layout = WeightLayout(layout)
    if layout not in _FORMATS:
        raise ValueError(f"layout must be one of {[str(f) for f in _FORMATS]}, got {layout!r}")
    fmt = _format(layout, act_bits)
    if gate_up and layout is not WeightLayout.TWO_BIT:
        raise ValueError(f"the VNNI gate/up needs the 2bit layout, got {layout!r}")
    if not fmt.interleaved and k < _BLOCK:
        raise ValueError(f"k must be at least {_BLOCK} for the VNNI matmul, got {k}")
    i64 = T.int64
    N_, K_, MT = i64(n), i64(k), i64(mt)
    kb_count = -(-k // fmt.codes) if fmt.interleaved else k // fmt.codes
    KB, CODES, K0 = i64(kb_count), i64(fmt.codes), kb_count * fmt.codes
    tail = 0 if fmt.interleaved else k - K0
    n_pad = -(-n // _ROWS) * _ROWS if fmt.interleaved else n
    n_rows = 2 * n if gate_up else n  # weight rows (and dot rows of the plain layout)
    NP, NR = i64(2 * n if gate_up else n_pad), i64(n_rows)
    LANES = i64(32 if fmt.digits == 5 else 16)
    XC = i64(fmt.digits * 64 if fmt.folded else fmt.codes)  # x_pack entries per block
    k_head = min(K0, k)  # activations summed into x_sum (the tail is added separately)
    w_shape = tuple(i64(d) for d in packed_shape(n_rows, k, layout))

    def tiles(m):
        return (m + MT - i64(1)) // MT

    def row(m, vmo, vmi):
        """Activation row of tile row ``(vmo, vmi)``, clamped (padded rows repeat the last)."""
        return T.min(vmo * MT + vmi, m - i64(1))

    def rest_shape(m):
        return (tiles(m), MT, NR) if tail > 0 else (i64(1),)

    def total(dot, x_sum, rest, vmo, vmi, vn):
        lanes = _tree_sum([dot[vmo, vmi, vn, i64(i)] for i in range(16)])
        if fmt.digits == 5:  # (3 sum t_d x - sum t_{d+1} x) / 256, exact
            high = _tree_sum([dot[vmo, vmi, vn, i64(16 + i)] for i in range(16)])
            lanes = T.shift_right(lanes * 3 - high, 8)
        elif fmt.folded:  # sum_e t_e (3 x_e - x_(e-1)) / 256, exact
            lanes = T.shift_right(lanes, 8)
        lanes = lanes - x_sum[vmo, vmi]
        return lanes + rest[vmo, vmi, vn] if tail > 0 else lanes

    def weight_row(vn):
        """Weight row of ``dot`` row ``vn`` (gate_up: gate and up rows alternate)."""
        return vn % i64(2) * N_ + vn // i64(2) if gate_up else vn

    def tail_code(w, vn, vk):
        return code_2bit(w[weight_row(vn), vk // i64(4)], T.Cast("int32", vk % i64(4))) - 1

    def x_at(x_q, m, vmo, vmi, vk):
        if K0 <= k:  # no padding (2bit: the tail is added separately)
            return x_q[row(m, vmo, vmi), vk]
        return T.if_then_else(vk < K_, x_q[row(m, vmo, vmi), T.min(vk, K_ - i64(1))], T.int8(0))

    def x_value(x_q, m, vmo, vmi, vkb, vp):
        """``x_pack`` entry ``p`` of block ``kb``: lane order for 2-bit, identity for base 3,
        ``3 x_e - x_(e-1)`` (digit ``e = p // 64``, zero outside 0..4) folded."""
        if fmt.folded:
            e, b = vp // i64(64), vp % i64(64)
            base = vkb * CODES + b

            def digit_x(d):
                x = x_at(x_q, m, vmo, vmi, base + T.min(T.max(d, i64(0)), i64(4)) * i64(64))
                return T.if_then_else(T.And(d >= i64(0), d < i64(5)), T.Cast("int32", x), 0)

            return T.Cast("int8", digit_x(e) * 3 - digit_x(e - i64(1)))
        if fmt.digits == 1:
            vp = vp % i64(16) * i64(4) + vp // i64(16)
        return x_at(x_q, m, vmo, vmi, vkb * CODES + vp)

    def w_byte(w, vn, vkb, b):
        if fmt.interleaved:
            piece = i64(_ROWS * fmt.nbytes)
            return w[vn // i64(_ROWS), vkb * piece + vn % i64(_ROWS) * i64(fmt.nbytes) + b]
        return w[weight_row(vn), vkb * i64(fmt.nbytes) + b]

    def scaled(dot, x_sum, rest, x_scale, alpha, vmo, vmi, vn, up):
        """gate_up: ``float32(acc) x_scale alpha`` of the gate (``up`` 0) or up row of ``vn``."""
        acc = total(dot, x_sum, rest, vmo, vmi, vn * i64(2) + i64(up))
        return T.Cast("float32", acc) * x_scale[vmo * MT + vmi, i64(0)] * alpha[up * N_ + vn]

    def glu(gate, up):
        return (T.max(gate, T.float32(0)) * T.max(gate, T.float32(0))) * up

    def stored(m, vmo, vmi, vn):
        in_m = vmo * MT + vmi < m
        return T.And(in_m, vn < N_) if n_pad != n else in_m

    @T.prim_func(s_tir=True)
    def func(
        var_x_q: T.handle,
        var_x_scale: T.handle,
        w: T.Buffer(w_shape, "uint8"),
        alpha: T.Buffer((NR,), "float32"),
        var_y: T.handle,
    ):
        M = T.int64()
        x_q = T.match_buffer(var_x_q, (M, K_), "int8")
        x_scale = T.match_buffer(var_x_scale, (M, i64(1)), "float32")
        y = T.match_buffer(var_y, (M, N_), "float32")
        x_pack = T.sblock_alloc_buffer((tiles(M), MT, KB, XC), "int8")
        x_sum = T.sblock_alloc_buffer((tiles(M), MT), "int32")
        dot = T.sblock_alloc_buffer((tiles(M), MT, NP, LANES), "int32")
        rest = T.sblock_alloc_buffer(rest_shape(M), "int32")  # K % 64 part (unused if 0)
        for mo, mi, kb, p in T.grid(tiles(M), MT, KB, XC):
            with T.sblock("x_pack"):
                vmo, vmi, vkb, vp = T.axis.remap("SSSS", [mo, mi, kb, p])
                x_pack[vmo, vmi, vkb, vp] = x_value(x_q, M, vmo, vmi, vkb, vp)
        for mo, mi, kk in T.grid(tiles(M), MT, i64(k_head)):
            with T.sblock("x_sum"):
                vmo, vmi, vk = T.axis.remap("SSR", [mo, mi, kk])
                with T.init():
                    x_sum[vmo, vmi] = 0
                x_sum[vmo, vmi] = x_sum[vmo, vmi] + T.Cast("int32", x_q[row(M, vmo, vmi), vk])
        if fmt.digits == 1:
            for mo, mi, nn, kb, i, j in T.grid(tiles(M), MT, NP, KB, i64(16), i64(4)):
                with T.sblock("dot"):
                    vmo, vmi, vn, vkb, vi, vj = T.axis.remap("SSSRSR", [mo, mi, nn, kb, i, j])
                    with T.init():
                        dot[vmo, vmi, vn, vi] = 0
                    dot[vmo, vmi, vn, vi] = dot[vmo, vmi, vn, vi] + code_2bit(
                        w_byte(w, vn, vkb, vi % i64(4) * i64(4) + vj), T.Cast("int32", vi) // 4
                    ) * T.Cast("int32", x_pack[vmo, vmi, vkb, vi * i64(4) + vj])
        elif fmt.folded:
            for mo, mi, nn, kb, e, i, j in T.grid(tiles(M), MT, NP, KB, i64(6), LANES, i64(4)):
                with T.sblock("dot"):
                    vmo, vmi, vn, vkb, ve, vi, vj = T.axis.remap(
                        "SSSRRSR", [mo, mi, nn, kb, e, i, j]
                    )
                    with T.init():
                        dot[vmo, vmi, vn, vi] = 0
                    dot[vmo, vmi, vn, vi] = dot[vmo, vmi, vn, vi] + mulshift_term(
                        w_byte(w, vn, vkb, vi * i64(4) + vj), ve, i64(0)
                    ) * T.Cast("int32", x_pack[vmo, vmi, vkb, ve * i64(64) + vi * i64(4) + vj])
        else:
            for mo, mi, nn, kb, d, i, j in T.grid(tiles(M), MT, NP, KB, i64(5), LANES, i64(4)):
                with T.sblock("dot"):
                    vmo, vmi, vn, vkb, vd, vi, vj = T.axis.remap(
                        "SSSRRSR", [mo, mi, nn, kb, d, i, j]
                    )
                    with T.init():
                        dot[vmo, vmi, vn, vi] = 0
                    dot[vmo, vmi, vn, vi] = dot[vmo, vmi, vn, vi] + mulshift_term(
                        w_byte(w, vn, vkb, vi % i64(16) * i64(4) + vj), vd, vi
                    ) * T.Cast(
                        "int32", x_pack[vmo, vmi, vkb, vd * i64(64) + vi % i64(16) * i64(4) + vj]
                    )
        if tail > 0:
            for mo, mi, nn, kk in T.grid(tiles(M), MT, NR, i64(tail)):
                with T.sblock("tail"):
                    vmo, vmi, vn, vk = T.axis.remap("SSSR", [mo, mi, nn, kk])
                    with T.init():
                        rest[vmo, vmi, vn] = 0
                    rest[vmo, vmi, vn] = rest[vmo, vmi, vn] + T.Cast(
                        "int32", x_q[row(M, vmo, vmi), i64(K0) + vk]
                    ) * tail_code(w, vn, i64(K0) + vk)
        if gate_up:  # h = (max(g, 0) max(g, 0)) u, the operator's order
            for mo, mi, nn in T.grid(tiles(M), MT, N_):
                with T.sblock("epilogue"):
                    vmo, vmi, vn = T.axis.remap("SSS", [mo, mi, nn])
                    if vmo * MT + vmi < M:
                        y[vmo * MT + vmi, vn] = glu(
                            scaled(dot, x_sum, rest, x_scale, alpha, vmo, vmi, vn, 0),
                            scaled(dot, x_sum, rest, x_scale, alpha, vmo, vmi, vn, 1),
                        )
        else:
            for mo, mi, nn in T.grid(tiles(M), MT, NP):
                with T.sblock("epilogue"):
                    vmo, vmi, vn = T.axis.remap("SSS", [mo, mi, nn])
                    if stored(M, vmo, vmi, vn):
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


def schedule_vnni_tiles(sch: s_tir.Schedule, tile: VnniTile, intrin: str | None = None) -> None:
    """Schedule the VNNI formulation in ``sch`` (made by :func:`vnni_matmul`) with ``tile``,
    tensorized with ``intrin`` (default: the layout's ``vpdpbusd`` intrinsic; the AVX2 rule passes
    its ``vpmaddubsw`` one, which has the same description)."""
    func = sch.mod["main"]
    layout = WeightLayout(str(func.attrs[attrs.LAYOUT]))
    fmt = _format(layout, attrs.get_int(func, attrs.ACT_BITS))
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    n_pad = -(-n // _ROWS) * _ROWS if fmt.interleaved else n
    rows = split_factor(n_pad, tile.rows)  # a predicated row tile would not tensorize
    if attrs.get_op(func) in _GATE_UP:  # outputs of a gate and an up row each
        rows = split_factor(n, max(1, tile.rows // 2))
    epilogue = sch.get_sblock("epilogue")
    mo, mi, nn = sch.get_loops(epilogue)
    n_outer, r = sch.split(nn, [None, rows])
    sch.reorder(n_outer, mo, r, mi)
    sch.parallel(n_outer)

    dot = sch.get_sblock("dot")
    sch.compute_at(dot, mo, preserve_unit_loops=True)
    loops = sch.get_loops(dot)
    if fmt.digits == 1:
        d_mi, d_r, kb, inner = loops[-5], loops[-4], loops[-3], loops[-2]
    else:
        d_mi, d_r, kb, inner = loops[-6], loops[-5], loops[-4], loops[-3]
    sch.reorder(kb, d_r, d_mi, inner)
    init = sch.decompose_reduction(dot, kb)
    sch.tensorize(sch.blockize(inner), intrin or fmt.intrin)
    for loop in (d_r, d_mi):
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.set_scope(init, 0, "local")
    if not fmt.interleaved and k % _BLOCK:
        tail = sch.get_sblock("tail")
        sch.compute_at(tail, mo)
        sch.set_scope(tail, 0, "local")
    sch.vectorize(sch.get_loops(sch.get_sblock("x_pack"))[-1])


def schedule_vnni_matmul(func: tirx.PrimFunc, tile: VnniTile) -> s_tir.Schedule:
    """Build and schedule the VNNI formulation of the dense ternary matmul ``func``.

    ``func`` must be a ``ternary_int{4,8}_matmul`` in a layout of :func:`vnni_matmul`; the
    returned schedule's function has ``func``'s signature, name and attributes.
    """
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    layout, act_bits = str(func.attrs[attrs.LAYOUT]), attrs.get_int(func, attrs.ACT_BITS)
    kernel = vnni_matmul(n, k, tile.mt, layout, act_bits, attrs.get_op(func) in _GATE_UP)
    sch = s_tir.Schedule(kernel.with_attrs(dict(func.attrs)))
    schedule_vnni_tiles(sch, tile)
    return sch


@dataclass(frozen=True)
class VnniKnobs:
    """Tunable choices of :class:`VnniMatmul` (defaults: best measured on Zen 4, one thread).

    Decode is latency-bound on the ``vpdpbusd`` chains below ~8 rows (rows 2/4/8/16 gave
    162/92/69/62 µs for 2560x2560, M=1); prefill 4x4 beat 8x2, 6x3 and 4x3 (~650-720 GOP/s).

    Attributes
    ----------
    decode_rows : int
        Weight rows per register tile for decode calls (``bitnet.m_hint`` absent or at most
        ``max_decode_m``; one activation row per tile).
    prefill_rows, prefill_mt : int
        Weight rows by activation rows per register tile for prefill calls.  ``prefill_mt`` is
        structural (it shapes the formulation ``prepare`` builds).
    max_decode_m : int
        Largest ``bitnet.m_hint`` scheduled with the decode tile (structural).
    """

    decode_rows: int = 16
    prefill_rows: int = 4
    prefill_mt: int = 4
    max_decode_m: int = 8

    def __post_init__(self) -> None:
        VnniTile(self.decode_rows, 1)
        VnniTile(self.prefill_rows, self.prefill_mt)
        if not isinstance(self.max_decode_m, int) or self.max_decode_m < 0:
            raise ValueError(
                f"VnniKnobs.max_decode_m must be an int >= 0, got {self.max_decode_m!r}"
            )

    def tile(self, m_hint: int | None) -> VnniTile:
        """The register tile for calls of ``m_hint`` tokens (None: decode)."""
        if m_hint is None or m_hint <= self.max_decode_m:
            return VnniTile(rows=self.decode_rows, mt=1)
        return VnniTile(rows=self.prefill_rows, mt=self.prefill_mt)


class VnniMatmul(BitnetCPURule):
    """``ternary_int{4,8}_matmul`` on AVX-512 VNNI CPUs, any M, in the ``2bit``, ``2bit_vnni``
    and ``base3_vnni`` layouts.

    Declines (returns None) for targets without ``avx512vnni`` (the generic
    :class:`~bitnet_tvm.schedules.cpu.gemv.TernaryGemv` / ``TernaryGemm`` take those), other
    layouts, ``K < 64`` in the ``2bit`` layout, ``base3_vnni`` without GFNI and every other
    PrimFunc.  INT4 and INT8
    activations run the same kernel (both are int8 codes; ``vpdpbusd`` needs no narrower type).
    Also the prefill (``bitnet.m_hint > max_decode_m``) ``ternary_int{4,8}_gate_up`` in ``2bit``
    (every up row computed; decode goes to the gate-first
    :class:`~bitnet_tvm.schedules.cpu.vnni_gate_up.VnniGateUp`).
    """

    ops = _DENSE + _GATE_UP
    Knobs = VnniKnobs
    structural_knobs = ("prefill_mt", "max_decode_m")

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """A dense ternary matmul in a VNNI-fed layout, for an AVX-512 VNNI target."""
        if not self.matches(func, target) or not has_avx512_vnni(target):
            return False
        layout = str(func.attrs[attrs.LAYOUT])
        if layout not in {str(f) for f in _FORMATS}:
            return False
        if attrs.get_op(func) in _GATE_UP:  # prefill only (decode: VnniGateUp, gate first)
            m_hint = attrs.get_int(func, attrs.M_HINT)
            prefill = m_hint is not None and m_hint > self.knobs.max_decode_m
            if layout != WeightLayout.TWO_BIT or not prefill:
                return False
        if layout == WeightLayout.BASE3_VNNI and not has_llvm_features(target, "gfni"):
            return False
        return _FORMATS[WeightLayout(layout)].interleaved or attrs.get_int(func, attrs.K) >= _BLOCK

    def prepare(self, func: tirx.PrimFunc, knobs: VnniKnobs) -> tirx.PrimFunc:
        """The VNNI formulation of ``func`` for the tile ``knobs`` picks (same signature)."""
        n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
        mt = knobs.tile(attrs.get_int(func, attrs.M_HINT)).mt
        layout, act_bits = str(func.attrs[attrs.LAYOUT]), attrs.get_int(func, attrs.ACT_BITS)
        gate_up = attrs.get_op(func) in _GATE_UP
        return vnni_matmul(n, k, mt, layout, act_bits, gate_up).with_attrs(dict(func.attrs))

    def schedule(self, sch: s_tir.Schedule, knobs: VnniKnobs) -> None:
        """Tile, tensorize and parallelize the formulation in ``sch``."""
        schedule_vnni_tiles(sch, knobs.tile(attrs.get_int(sch.mod["main"], attrs.M_HINT)))

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Decode row tiles (M = 1) and prefill register tiles (rows x activation rows)."""
        return {
            "decode_rows": (16, 4, 8),
            "prefill_rows": (4, 2, 6, 8),
            "prefill_mt": (4, 2, 3),
            "max_decode_m": (8,),
        }
