"""Prefill GEMM for ternary x INT4 by ``vpermb`` table lookups (AVX-512 VBMI).

INT4 activations give partial sums of two weights that fit in int8 (``|x0 w0 + x1 w1| <= 16``),
so one 64-entry table per (activation row, 16 K, half) answers 64 byte lookups at a time, two
weights each (T-MAC style; :mod:`~bitnet_tvm.schedules.cpu.intrin_lut` has the intrinsics).
With ``NB = ceil(N / 16)``, ``KD`` 16-K blocks (``ceil(K / 16)``; whole 64-K blocks for
``2bit_vnni``), ``row = min(mo mt + mi, M - 1)``, ``x`` read as 0 past ``K`` and ``byte(n, c)``
the ``2bit`` byte ``c`` of weight row ``n`` (4 codes)::

    wt[nb, 128 kd + 64 h + 4 i + b] = 16 b + nibble h of byte(16 nb + i, 4 kd + b)
    tab[mo, mi, kd, h, 16 b + e]    = int8(x[row, k0] (e % 4 - 1) + x[row, k0 + 1] (e // 4 - 1)),
                                      k0 = 16 kd + 4 b + 2 h
    dot[mo, mi, nb, i]             += int32(tab[mo, mi, kd, h, wt[nb, 128 kd + 64 h + 4 i + b]])
    y[row, 16 nb + i]               = float32(dot) * x_scale[row] * alpha[16 nb + i]

``wt`` holds the ready ``vpermb`` indices of a tile of 16-row groups: a repack of the weight done
once per call and shared by all M rows (one ``vpermd``-style shuffle per 64 bytes for
``2bit_vnni``), so the model keeps the one weight copy that the decode kernels read.  ``dot``
runs over ``KD // kc`` chunks of ``kc`` 16-K blocks (one int8 partial sum each) and a
``KD % kc`` rest; lane ``i`` of ``dot`` is output row ``16 nb + i``.  The epilogue multiplies in
the reference's order: results equal :func:`bitnet_tvm.reference.ternary_matmul` bit for bit.

Schedule (``rows`` 16-row groups by ``mt`` activation rows per register tile)::

    parallel for n_outer:                         # NB / rows
      wt[tile] = repack(w)                        # rows x 16 weight rows, all K
      dot[M, tile] = 0                            # memory: M x rows x 64 bytes
      for k_outer:                                # K blocks of kblock x 16 K (stay in L1)
        for mo:
          for c in the K block:
            for r (unrolled), mi (unrolled):
              dot[mo, mi, r] = lut(dot[mo, mi, r], wt[r, c], tab[mo, mi, c])
      for mo: rest, epilogue of the tile

The tables (``M KD 128`` bytes) are built before, in parallel over activation rows.  Every
``n_outer`` tile reads all of them, so where they would outgrow the cache (``bitnet.m_hint``
above ``m_block`` rows, by default the rows whose tables fit :data:`TABLE_BYTES`) the kernel
runs in M blocks::

    parallel for n_outer: wt[tile] = repack(w)    # once per call, into memory (N K / 2 bytes)
    for m_outer:                                  # M blocks of m_block rows (the last predicated)
      parallel for n_outer:
        dot[block, tile] = 0; for k_outer: for mo in the block: ... (as above)
        for mo in the block: epilogue of the tile

(the ``rest`` block cannot be placed under the predicated block: there ``kc`` is a divisor of
``KD``).

The fused gate/up (``ternary_int4_gate_up``, ``2bit`` ``[2I, K]``) runs the same lookups over
2I rows with group ``q`` holding the gate (``q`` even) or up (``q`` odd) rows of outputs
``16 (q // 2) + i``, so every tile has both halves of its outputs and the ReLU^2 GLU epilogue
(the operator's expression order) stays in the tile.  Prefill computes every up row (no gate
first skipping: the skip pays at decode, where the VNNI gate/up kernel does it).

Why LUTs beat VNNI here (Zen 5, measured): ``vpdpbusd`` and ``vpermb`` both issue 2 per cycle,
but one ``vpermb`` covers 128 ternary MACs (64 lanes x 2 weights) against 64 for ``vpdpbusd``,
and the decode is done once per call instead of once per activation-row tile.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.script import tirx as T
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule, split_factor
from bitnet_tvm.schedules.cpu.intrin_lut import (
    LUT_REPACK_VNNI_INTRIN,
    MAX_KC,
    index_byte,
    lut_intrin,
    lut_term,
)
from bitnet_tvm.schedules.layouts import WeightLayout, packed_shape
from bitnet_tvm.schedules.target import has_llvm_features

__all__ = ["LutGemm", "LutKnobs", "lut_gemm"]

#: Smallest ``bitnet.m_hint`` the rule takes: the tables cost ``O(M K)`` per call and the
#: lookups only pay off when each weight vector serves several activation rows.
MIN_M = 16
#: Table bytes one M block may hold: every N tile reads all of its block's tables (``KD x 128``
#: bytes per activation row) again, so they should stay in L3 (32 MiB on this Zen 4, shared by
#: its cores and whatever else runs: half).  Measured (1 thread, noisy): at M=512 the down shape
#: 2560x6912 (28 MiB of tables) took 32.8 ms unblocked, 17.4-18.4 ms in blocks of 64-256 rows
#: (INT8 VNNI 28.3 ms); 13824x2560 (10 MiB) gained nothing from blocks.
TABLE_BYTES = 16 << 20
_FEATURES = ("avx512vbmi", "avx512vnni", "avx512bw", "avx512f")
#: Weight layouts the kernel reads: the plain one and the VNNI decode kernel's interleaved one.
_LAYOUTS = (WeightLayout.TWO_BIT, WeightLayout.TWO_BIT_VNNI)


@dataclass(frozen=True)
class LutKnobs:
    """Tunable choices of :class:`LutGemm`.

    Defaults: the best of a sweep on Zen 5, 13824x2560, 1 thread, CPU time (noisy machine):
    at M=128 rows x mt x kc 8x2x1 ~1050 GOP/s, 6x2x1 ~1070, 4x4x1 ~870, 4x2x3 ~900, 16x2x1
    ~770; kblock 16/32 ~equal at M=128, 16 better at M=512 (855 vs 780: the M x kblock tables
    stay in L2; 4-8 measured 820-1030 there, within the noise, so they are in the tuning
    space).  kc > 1 saves ``vpdpbusd`` but costs registers (8x2x3 ~800).

    Attributes
    ----------
    rows : int
        Blocks of 16 output rows per register tile (the largest divisor of ``ceil(N / 16)``
        up to this is used).
    mt : int
        Activation rows sharing each weight vector (M is padded to a multiple).
    kc : int
        Weight vectors (16 K each) summed in int8 before one widening ``vpdpbusd``; at most 3.
    kblock : int
        16-K blocks per K block (rounded to a divisor of the chunk count): one K block of the
        weight tile stays in L1 while every activation row of the M block passes over it.
    m_block : int
        Activation rows per M block (rounded down to a multiple of ``mt``; 0: as many as fit
        :data:`TABLE_BYTES`).  Calls with ``bitnet.m_hint`` above it run the lookups and
        epilogue once per block of this many rows (the weight is repacked once per call, before
        them), so the block's tables stay in cache while every N tile reads them.
    """

    rows: int = 8
    mt: int = 2
    kc: int = 1
    kblock: int = 16
    m_block: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.m_block, bool) or not isinstance(self.m_block, int) or self.m_block < 0:
            raise ValueError(f"LutKnobs.m_block must be an int >= 0, got {self.m_block!r}")
        for name in ("rows", "mt", "kc", "kblock"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LutKnobs.{name} must be a positive int, got {value!r}")
        if self.kc > MAX_KC:
            raise ValueError(f"LutKnobs.kc must be at most {MAX_KC} (int8 sums), got {self.kc}")


def lut_gemm(
    n: int, k: int, mt: int, kc: int, layout: WeightLayout, gate_up: bool = False
) -> tirx.PrimFunc:
    """The LUT formulation of ``ternary_matmul(n, k, layout=layout)`` (same signature), or with
    ``gate_up`` of ``ternary_gate_up(n, k, layout=layout)`` (``n`` = I; ``2bit`` only).

    Parameters
    ----------
    n, k : int
        Output features and reduction length.
    mt : int
        Activation-row tile (the tables' rows are padded to a multiple of it).
    kc : int
        Weight vectors per int8 partial sum (1 to 3).
    layout : WeightLayout
        ``2bit`` or ``2bit_vnni`` (only the repack's addressing differs).
    """
    if layout not in _LAYOUTS or (gate_up and layout is not WeightLayout.TWO_BIT):
        raise ValueError(f"layout must be one of {[x.value for x in _LAYOUTS]}, got {layout!r}")
    interleaved = layout is WeightLayout.TWO_BIT_VNNI
    rows_w = 2 * n if gate_up else n  # weight rows (gate then up)
    W0, W1 = (T.int64(d) for d in packed_shape(rows_w, k, layout))
    i64 = T.int64
    N_, K_, NW = i64(n), i64(k), i64(rows_w)
    # gate_up: 16-row group q is the gate (q even) or up (q odd) rows of outputs 16 (q // 2) + i
    nb_, kd_ = -(-n // 16) * (2 if gate_up else 1), _kd(k, layout)
    NB, KD, KB4 = i64(nb_), i64(kd_), i64(-(-k // 4))
    MT, KC = i64(mt), i64(kc)
    chunks, rest = kd_ // kc, kd_ % kc
    K_MAIN = i64(chunks * kc)

    def tiles(m):
        return (m + MT - i64(1)) // MT

    def row(m, vmo, vmi):
        """Activation row of tile row ``(vmo, vmi)``, clamped (padded rows repeat the last)."""
        return T.min(vmo * MT + vmi, m - i64(1))

    def pair(vkd, vb, vh):
        """First K index of the activation pair of table ``(vkd, vh)``, byte place ``vb``."""
        return vkd * i64(16) + vb * i64(4) + vh * i64(2)

    def weight(code):
        return T.Cast("int32", code) - 1

    def act(x_q, r, kk):
        return T.if_then_else(kk < K_, T.Cast("int32", x_q[r, kk]), 0)

    def lookup(tab, wt, vmo, vmi, vnb, vkd, vi, vh, vb, ve):
        index = wt[vnb, vkd * i64(128) + vh * i64(64) + vi * i64(4) + vb]
        return lut_term(index, ve, tab[vmo, vmi, vkd, vh, ve])

    def weight_row(vnb, vi):
        """Weight row of lane ``i`` of 16-row group ``nb`` (clamped: padded lanes repeat one)."""
        if gate_up:
            return vnb % i64(2) * N_ + T.min(vnb // i64(2) * i64(16) + vi, N_ - i64(1))
        return T.min(vnb * i64(16) + vi, N_ - i64(1))

    def source_byte(w, vnb, vi, col):
        """int32 ``2bit`` byte ``col`` of the weight row of lane ``i`` of group ``nb``."""
        return T.if_then_else(col < KB4, T.Cast("int32", w[weight_row(vnb, vi), col]), 0)

    def scaled(dot, rest_buf, x_scale, alpha, vmo, vmi, vnb, vi, n0):
        """``float32(acc) * x_scale * alpha[n0 + n]`` of lane ``i`` of group ``nb``."""
        return (
            T.Cast("float32", total(dot, rest_buf, vmo, vmi, vnb, vi))
            * x_scale[vmo * MT + vmi, i64(0)]
            * alpha[n0 + vnb // i64(2) * i64(16) + vi]
        )

    def total(dot, rest_buf, vmo, vmi, vnb, vi):
        return (
            dot[vmo, vmi, vnb, vi] + rest_buf[vmo, vmi, vnb, vi] if rest else dot[vmo, vmi, vnb, vi]
        )

    @T.prim_func(s_tir=True)
    def func(
        var_x_q: T.handle,
        var_x_scale: T.handle,
        w: T.Buffer((W0, W1), "uint8"),
        alpha: T.Buffer((NW,), "float32"),
        var_y: T.handle,
    ):
        M = T.int64()
        x_q = T.match_buffer(var_x_q, (M, K_), "int8")
        x_scale = T.match_buffer(var_x_scale, (M, i64(1)), "float32")
        y = T.match_buffer(var_y, (M, N_), "float32")
        wt = T.sblock_alloc_buffer((NB, KD * i64(128)), "uint8")
        tab = T.sblock_alloc_buffer((tiles(M), MT, KD, i64(2), i64(64)), "int8")
        dot = T.sblock_alloc_buffer((tiles(M), MT, NB, i64(16)), "int32")
        rest_buf = T.sblock_alloc_buffer((tiles(M), MT, NB, i64(16)), "int32")
        if interleaved:  # whole 64-K blocks (the layout pads K), one repack intrinsic each
            for nb, kb, t, h, i, b in T.grid(NB, KD // i64(4), i64(4), i64(2), i64(16), i64(4)):
                with T.sblock("repack"):
                    vnb, vkb, vt, vh, vi, vb = T.axis.remap("SSSSSS", [nb, kb, t, h, i, b])
                    wt[vnb, vkb * i64(512) + vt * i64(128) + vh * i64(64) + vi * i64(4) + vb] = (
                        index_byte(
                            T.Cast(
                                "int32", w[vnb, vkb * i64(256) + vi * i64(16) + vt * i64(4) + vb]
                            ),
                            vh,
                            vb,
                        )
                    )
        else:
            for nb, kd, h, i, b in T.grid(NB, KD, i64(2), i64(16), i64(4)):
                with T.sblock("repack"):
                    vnb, vkd, vh, vi, vb = T.axis.remap("SSSSS", [nb, kd, h, i, b])
                    wt[vnb, vkd * i64(128) + vh * i64(64) + vi * i64(4) + vb] = index_byte(
                        source_byte(w, vnb, vi, vkd * i64(4) + vb), vh, vb
                    )
        for mo, mi, kd, h, b, e in T.grid(tiles(M), MT, KD, i64(2), i64(4), i64(16)):
            with T.sblock("table"):
                vmo, vmi, vkd, vh, vb, ve = T.axis.remap("SSSSSS", [mo, mi, kd, h, b, e])
                tab[vmo, vmi, vkd, vh, vb * i64(16) + ve] = T.Cast(
                    "int8",
                    act(x_q, row(M, vmo, vmi), pair(vkd, vb, vh)) * weight(ve % i64(4))
                    + act(x_q, row(M, vmo, vmi), pair(vkd, vb, vh) + i64(1)) * weight(ve // i64(4)),
                )
        for mo, mi, nb, c, i, j, h, b, e in T.grid(
            tiles(M), MT, NB, i64(chunks), i64(16), KC, i64(2), i64(4), i64(64)
        ):
            with T.sblock("dot"):
                vmo, vmi, vnb, vc, vi, vj, vh, vb, ve = T.axis.remap(
                    "SSSRSRRRR", [mo, mi, nb, c, i, j, h, b, e]
                )
                with T.init():
                    dot[vmo, vmi, vnb, vi] = 0
                dot[vmo, vmi, vnb, vi] = dot[vmo, vmi, vnb, vi] + lookup(
                    tab, wt, vmo, vmi, vnb, vc * KC + vj, vi, vh, vb, ve
                )
        if rest > 0:
            for mo, mi, nb, c, i, j, h, b, e in T.grid(
                tiles(M), MT, NB, i64(1), i64(16), i64(rest), i64(2), i64(4), i64(64)
            ):
                with T.sblock("rest"):
                    vmo, vmi, vnb, vc, vi, vj, vh, vb, ve = T.axis.remap(
                        "SSSRSRRRR", [mo, mi, nb, c, i, j, h, b, e]
                    )
                    with T.init():
                        rest_buf[vmo, vmi, vnb, vi] = 0
                    rest_buf[vmo, vmi, vnb, vi] = rest_buf[vmo, vmi, vnb, vi] + lookup(
                        tab, wt, vmo, vmi, vnb, K_MAIN + vc * i64(rest) + vj, vi, vh, vb, ve
                    )
        if gate_up:  # h = (max(g, 0) max(g, 0)) u, the operator's order
            for mo, mi, nb, i in T.grid(tiles(M), MT, NB // i64(2), i64(16)):
                with T.sblock("epilogue"):
                    vmo, vmi, vnb, vi = T.axis.remap("SSSS", [mo, mi, nb, i])
                    if vmo * MT + vmi < M and vnb * i64(16) + vi < N_:
                        y[vmo * MT + vmi, vnb * i64(16) + vi] = (
                            T.max(
                                scaled(dot, rest_buf, x_scale, alpha, vmo, vmi, vnb * 2, vi, 0),
                                T.float32(0),
                            )
                            * T.max(
                                scaled(dot, rest_buf, x_scale, alpha, vmo, vmi, vnb * 2, vi, 0),
                                T.float32(0),
                            )
                        ) * scaled(dot, rest_buf, x_scale, alpha, vmo, vmi, vnb * 2 + 1, vi, N_)
        else:
            for mo, mi, nb, i in T.grid(tiles(M), MT, NB, i64(16)):
                with T.sblock("epilogue"):
                    vmo, vmi, vnb, vi = T.axis.remap("SSSS", [mo, mi, nb, i])
                    if vmo * MT + vmi < M and vnb * i64(16) + vi < N_:
                        y[vmo * MT + vmi, vnb * i64(16) + vi] = (
                            T.Cast("float32", total(dot, rest_buf, vmo, vmi, vnb, vi))
                            * x_scale[vmo * MT + vmi, i64(0)]
                            * alpha[vnb * i64(16) + vi]
                        )

    return func


def _tensorize_reduction(sch: s_tir.Schedule, block, kc: int, kblock: int) -> None:
    """Tensorize the lookups of reduction ``block`` (placed under ``n_outer`` or ``mo``).

    Under ``n_outer`` (``dot``: ``kblock > 0``) the K loop is split into blocks of ``kblock``
    chunks that wrap the activation-row tiles, so one K block of the weight tile stays in L1
    for all rows of the M block (accumulators in memory); under ``mo`` (``rest``) the
    accumulators are registers.
    """
    # compute_at leaves the tile loops as (mo, mi, nb) above the block's (c, i, j, h, b, e)
    d_mo, d_mi, d_r, c, i = sch.get_loops(block)[-9:-4]
    if kblock:
        extent = int(sch.get(c).extent)
        k_outer, c = sch.split(c, [None, split_factor(extent, kblock)])
        sch.reorder(k_outer, d_mo, c, d_r, d_mi, i)
        init = sch.decompose_reduction(block, k_outer)
        sch.blockize(c)  # an M block's predicate (on mo) stays out of the tensorized block
    else:
        sch.reorder(c, d_r, d_mi, i)
        init = sch.decompose_reduction(block, c)
    sch.tensorize(sch.blockize(i), lut_intrin(kc))
    for loop in (d_r, d_mi):
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(init)[-1])
    if not kblock:
        sch.set_scope(init, 0, "local")


def schedule_lut_gemm(func: tirx.PrimFunc, knobs: LutKnobs) -> s_tir.Schedule:
    """Build and schedule the LUT formulation of the ``2bit`` INT4 matmul ``func``."""
    sch = s_tir.Schedule(prepare_lut_gemm(func, knobs))
    _schedule(sch, knobs)
    return sch


def prepare_lut_gemm(func: tirx.PrimFunc, knobs: LutKnobs) -> tirx.PrimFunc:
    """``lut_gemm`` for ``func``'s shapes, carrying ``func``'s attributes."""
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    layout = WeightLayout(str(func.attrs[attrs.LAYOUT]))
    kc = _kc(func, knobs)
    gate_up = attrs.get_op(func) is attrs.OpName.TERNARY_INT4_GATE_UP
    return lut_gemm(n, k, knobs.mt, kc, layout, gate_up).with_attrs(dict(func.attrs))


def _blocked(func: tirx.PrimFunc, knobs: LutKnobs) -> bool:
    """Whether ``func`` is scheduled in M blocks: ``bitnet.m_hint`` above :func:`_m_block`."""
    m_hint = attrs.get_int(func, attrs.M_HINT)
    return m_hint is not None and m_hint > _m_block(func, knobs)


def _m_block(func: tirx.PrimFunc, knobs: LutKnobs) -> int:
    """Activation rows per M block, a multiple of ``mt``: ``knobs.m_block`` or, if 0, the most
    whose tables fit :data:`TABLE_BYTES`."""
    kd = _kd(attrs.get_int(func, attrs.K), WeightLayout(str(func.attrs[attrs.LAYOUT])))
    rows = knobs.m_block or TABLE_BYTES // (kd * 128)
    return max(1, rows // knobs.mt) * knobs.mt


def _kc(func: tirx.PrimFunc, knobs: LutKnobs) -> int:
    """Weight vectors per int8 sum: ``knobs.kc`` (at most the 16-K block count), in M blocks a
    divisor of that count (no ``rest`` block, which could not be placed under a predicated
    M block)."""
    kd = _kd(attrs.get_int(func, attrs.K), WeightLayout(str(func.attrs[attrs.LAYOUT])))
    kc = min(knobs.kc, kd)
    return split_factor(kd, kc) if _blocked(func, knobs) else kc


def _kd(k: int, layout: WeightLayout) -> int:
    """16-K blocks the kernel runs over: ``ceil(K / 16)``, or whole 64-K blocks of ``2bit_vnni``
    (its padding reads as zero weights; the tables are zero past K either way)."""
    blocks = 64 if layout is WeightLayout.TWO_BIT_VNNI else 16
    return -(-k // blocks) * blocks // 16


def _schedule(sch: s_tir.Schedule, knobs: LutKnobs) -> None:
    func = sch.mod["main"]
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    # a predicated row tile would not tensorize; gate_up tiles hold gate and up groups in pairs
    pairs = attrs.get_op(func) is attrs.OpName.TERNARY_INT4_GATE_UP
    rows = split_factor(-(-n // 16), max(1, knobs.rows // 2) if pairs else knobs.rows)
    epilogue = sch.get_sblock("epilogue")
    mo, mi, nb, i = sch.get_loops(epilogue)
    n_outer, r = sch.split(nb, [None, rows])
    blocked = _blocked(func, knobs)
    if blocked:  # the last block is predicated: place only the dot below it (see the class doc)
        m_outer, mo = sch.split(mo, [None, _m_block(func, knobs) // knobs.mt])
        sch.reorder(m_outer, n_outer, mo, r, mi, i)
    else:
        sch.reorder(n_outer, mo, r, mi, i)
    sch.parallel(n_outer)
    sch.vectorize(i)

    kd = _kd(k, WeightLayout(str(func.attrs[attrs.LAYOUT])))
    kc = _kc(func, knobs)
    dot = sch.get_sblock("dot")
    sch.compute_at(dot, n_outer, preserve_unit_loops=True)
    _tensorize_reduction(sch, dot, kc, max(1, knobs.kblock // kc))
    if kd % kc:  # never blocked (_kc)
        rest = sch.get_sblock("rest")
        sch.compute_at(rest, mo, preserve_unit_loops=True)
        _tensorize_reduction(sch, rest, kd % kc, 0)
    repack = sch.get_sblock("repack")
    if blocked:  # once per call, for all M blocks
        sch.parallel(sch.get_loops(repack)[0])
    else:
        sch.compute_at(repack, n_outer)
    if str(func.attrs[attrs.LAYOUT]) == WeightLayout.TWO_BIT_VNNI.value:
        sch.tensorize(sch.blockize(sch.get_loops(repack)[-4]), LUT_REPACK_VNNI_INTRIN)
    else:
        sch.vectorize(sch.get_loops(repack)[-1])

    table = sch.get_sblock("table")
    sch.parallel(sch.get_loops(table)[0])
    sch.vectorize(sch.get_loops(table)[-1])


class LutGemm(BitnetCPURule):
    """INT4 prefill (``bitnet.m_hint >= 16``) on AVX-512 VBMI + VNNI CPUs: ``ternary_int4_matmul``
    and ``ternary_int4_gate_up`` (the latter in ``2bit``, the layout gate/up gets).

    Reads ``2bit`` or ``2bit_vnni`` (the layout
    :func:`~bitnet_tvm.schedules.selection.select_layout`
    gives dense matmuls on VNNI CPUs, which the VNNI decode kernel reads too: one weight copy
    serves decode and prefill).  Declines INT8 activations (their pair sums overflow int8),
    targets without ``avx512vbmi``/``avx512vnni``, decode calls (``m_hint`` absent or below
    16), other layouts and every other PrimFunc.  Exact for INT4 codes in [-8, 7] (what
    :func:`~bitnet_tvm.reference.quantize_act_int4` produces); wider codes would overflow the
    int8 tables.
    """

    ops = (attrs.OpName.TERNARY_INT4_MATMUL, attrs.OpName.TERNARY_INT4_GATE_UP)
    Knobs = LutKnobs
    structural_knobs = ("mt", "kc", "m_block")

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """See the class doc."""
        if not self.matches(func, target) or not has_llvm_features(target, *_FEATURES):
            return False
        layouts = (
            _LAYOUTS[:1] if attrs.get_op(func) is attrs.OpName.TERNARY_INT4_GATE_UP else _LAYOUTS
        )
        if str(func.attrs[attrs.LAYOUT]) not in {x.value for x in layouts}:
            return False
        m_hint = attrs.get_int(func, attrs.M_HINT)
        return m_hint is not None and m_hint >= MIN_M

    def prepare(self, func: tirx.PrimFunc, knobs: LutKnobs) -> tirx.PrimFunc:
        """The LUT formulation of ``func`` (same signature and attributes)."""
        return prepare_lut_gemm(func, knobs)

    def schedule(self, sch: s_tir.Schedule, knobs: LutKnobs) -> None:
        """Schedule the LUT formulation in place."""
        _schedule(sch, knobs)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Candidate tiles: row blocks, activation rows, vectors per int8 sum, K block, M block."""
        m_hint = attrs.get_int(func, attrs.M_HINT) or 0
        return {
            "rows": (2, 4, 6, 8, 12),
            "mt": (1, 2, 3, 4),
            "kc": (1, 2, 3),
            "kblock": (4, 8, 16, 32),
            # only blocks smaller than the bucket's M change anything
            "m_block": (0, *(v for v in (64, 128, 256) if v < m_hint)),
        }
