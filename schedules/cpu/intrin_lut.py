"""x86 tensor intrinsic: ternary x INT4 by ``vpermb`` table lookups, two weights per lookup.

One application covers ``kc`` pairs of 64-byte index vectors and adds, for 16 output rows ``i``,
the int32 sum of ``8 kc`` table entries (``vpermb`` reads entry ``index & 63``)::

    acc[i] += sum_{j < kc, h < 2, b < 4} int32(tab[j, h, w[128 j + 64 h + 4 i + b] & 63])

The index bytes are made once per call from the ``2bit`` weight (see
:mod:`~bitnet_tvm.schedules.cpu.lut_gemm`): byte ``4 i + b`` of vector ``(j, h)`` is
``16 b + nibble``, where ``nibble`` holds 2 codes of row ``i`` (``h = 0``: codes 0, 1 of its
``2bit`` byte ``b``; ``h = 1``: codes 2, 3).  So one 64-byte table ``tab[j, h]`` holds four
16-entry sub-tables, one per byte place ``b``, each the 9 possible partial sums
``x[k0] (c0 - 1) + x[k1] (c1 - 1)`` of two INT4 activations (``|sum| <= 16``).

The implementation: ``2 kc`` ``vpermb`` (``llvm.x86.avx512.permvar.qi.512``), the int8 lookups
summed with ``vpaddb`` (``|sum| <= 32 kc <= 96`` for ``kc <= 3``: no int8 overflow), and one
``vpdpbusd`` against a vector of ones that widens them into the int32 lanes (a lane sums its 4
bytes, which all belong to row ``i``).  Per 256 weights and activation row that is 2 ``vpermb``
+ about 2 cheap ops, against 4 ``vpdpbusd`` + decode for the VNNI kernel.  INT8 activations do
not fit (a sum of two can reach 256), so this is INT4 only.
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from bitnet_tvm.schedules.cpu.intrin_x86 import vpdpbusd

__all__ = ["LUT_REPACK_VNNI_INTRIN", "MAX_KC", "index_byte", "lut_intrin", "lut_term"]

#: Most index-vector pairs per int8 partial sum: ``2 kc`` lookups of ``|v| <= 16`` stay in int8.
MAX_KC = 3
_I0, _I16, _I64 = T.int64(0), T.int64(16), T.int64(64)


def index_byte(byte: tirx.PrimExpr, half: tirx.PrimExpr, place: tirx.PrimExpr) -> tirx.PrimExpr:
    """uint8 ``16 place + nibble half`` of the int32 ``2bit`` byte ``byte`` (the vpermb index).

    Kernels tensorized with the repack intrinsic must spell it exactly like this.
    """
    nibble = T.bitwise_and(T.shift_right(byte, T.Cast("int32", half) * 4), 15)
    return T.Cast("uint8", T.bitwise_or(nibble, T.Cast("int32", place) * 16))


def lut_term(index: tirx.PrimExpr, entry: tirx.PrimExpr, value: tirx.PrimExpr) -> tirx.PrimExpr:
    """``int32(value)`` if ``index & 63`` is ``entry`` (0..63), else 0.

    Summed over the 64 entries of a table this is ``vpermb``'s lookup ``table[index & 63]``
    written without a data-dependent buffer index (tensorize cannot match one).  Kernels
    tensorized with :func:`lut_intrin` must spell the term exactly like this.
    """
    hit = T.bitwise_and(T.Cast("int32", index), 63) == T.Cast("int32", entry)
    return T.if_then_else(hit, T.Cast("int32", value), 0)


def _desc(kc: int) -> tirx.PrimFunc:
    KC, W = T.int64(kc), T.int64(128 * kc)

    @T.prim_func(s_tir=True)
    def desc(
        w: T.Buffer((W,), "uint8", offset_factor=1),
        tab: T.Buffer((KC, T.int64(2), _I64), "int8", offset_factor=1),
        acc: T.Buffer((_I16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(acc[_I0:_I16], w[_I0:W], tab[_I0:KC, _I0 : T.int64(2), _I0:_I64])
            T.writes(acc[_I0:_I16])
            for i, j, h, b, e in T.grid(_I16, KC, T.int64(2), T.int64(4), _I64):
                with T.sblock("update"):
                    vi, vj, vh, vb, ve = T.axis.remap("SRRRR", [i, j, h, b, e])
                    acc[vi] = acc[vi] + lut_term(
                        w[vj * T.int64(128) + vh * _I64 + vi * T.int64(4) + vb],
                        ve,
                        tab[vj, vh, ve],
                    )

    @T.prim_func(s_tir=True)
    def desc_one(  # kc = 1: blockize keeps the unit j loop but drops its block iterator
        w: T.Buffer((T.int64(128),), "uint8", offset_factor=1),
        tab: T.Buffer((T.int64(1), T.int64(2), _I64), "int8", offset_factor=1),
        acc: T.Buffer((_I16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(
                acc[_I0:_I16],
                w[_I0 : T.int64(128)],
                tab[_I0 : T.int64(1), _I0 : T.int64(2), _I0:_I64],
            )
            T.writes(acc[_I0:_I16])
            for i, _j, h, b, e in T.grid(_I16, T.int64(1), T.int64(2), T.int64(4), _I64):
                with T.sblock("update"):
                    vi, vh, vb, ve = T.axis.remap("SRRR", [i, h, b, e])
                    acc[vi] = acc[vi] + lut_term(
                        w[vh * _I64 + vi * T.int64(4) + vb], ve, tab[_I0, vh, ve]
                    )

    return desc_one if kc == 1 else desc


def _impl(kc: int) -> tirx.PrimFunc:
    KC, W = T.int64(kc), T.int64(128 * kc)

    def lookups(w, tab):
        out = [
            T.call_llvm_pure_intrin(
                "int8x64",
                "llvm.x86.avx512.permvar.qi.512",
                tab.vload([j, h, 0], "int8x64"),
                T.reinterpret("int8x64", w.vload([128 * j + 64 * h], "uint8x64")),
            )
            for j in range(kc)
            for h in range(2)
        ]
        total = out[0]
        for term in out[1:]:
            total = total + term
        return total

    @T.prim_func(s_tir=True)
    def impl(
        w: T.Buffer((W,), "uint8", offset_factor=1),
        tab: T.Buffer((KC, T.int64(2), _I64), "int8", offset_factor=1),
        acc: T.Buffer((_I16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(acc[_I0:_I16], w[_I0:W], tab[_I0:KC, _I0 : T.int64(2), _I0:_I64])
            T.writes(acc[_I0:_I16])
            acc[T.Ramp(0, 1, 16)] = vpdpbusd(
                acc.vload([0], "int32x16"), T.Broadcast(T.int8(1), 64), lookups(w, tab)
            )

    return impl


def lut_intrin(kc: int) -> str:
    """Register (once) and return the name of the intrinsic covering ``kc`` index-vector pairs."""
    if isinstance(kc, bool) or not isinstance(kc, int) or not 1 <= kc <= MAX_KC:
        raise ValueError(f"kc must be an int in [1, {MAX_KC}], got {kc!r}")
    name = f"bitnet_lut_ternary_int4_kc{kc}"
    TensorIntrin.register(name, _desc(kc), _impl(kc), override=True)
    return name


# ------------------------------------------------------------------ repack of 2bit_vnni blocks
#: Name of the intrinsic that turns one 256-byte ``2bit_vnni`` block (16 rows x 64 K) into the
#: 8 index vectors of its 4 16-K blocks.
LUT_REPACK_VNNI_INTRIN = "bitnet_lut_repack_2bit_vnni"


@T.prim_func(s_tir=True)
def _repack_desc(
    src: T.Buffer((T.int64(256),), "uint8", offset_factor=1),
    dst: T.Buffer((T.int64(512),), "uint8", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(src[_I0 : T.int64(256)])
        T.writes(dst[_I0 : T.int64(512)])
        for t, h, i, b in T.grid(T.int64(4), T.int64(2), _I16, T.int64(4)):
            with T.sblock("repack"):
                vt, vh, vi, vb = T.axis.remap("SSSS", [t, h, i, b])
                dst[vt * T.int64(128) + vh * _I64 + vi * T.int64(4) + vb] = index_byte(
                    T.Cast("int32", src[vi * _I16 + vt * T.int64(4) + vb]), vh, vb
                )


def _repack_vector(src: tirx.Buffer, t: int, h: int) -> tirx.PrimExpr:
    """Index vector ``(t, h)`` of a 256-byte block: dword ``4 i + t`` of the block is row
    ``i``'s bytes ``4 t .. 4 t + 3``; gather them (one shuffle) and keep nibble ``h`` + place."""
    words = [T.reinterpret("uint32x16", src.vload([64 * q], "uint8x64")) for q in range(4)]
    lane = T.Shuffle(words, [4 * i + t for i in range(16)])
    nibbles = lane if h == 0 else T.shift_right(lane, T.Broadcast(T.uint32(4), 16))
    index = T.bitwise_or(
        T.bitwise_and(nibbles, T.Broadcast(T.uint32(0x0F0F0F0F), 16)),
        T.Broadcast(T.uint32(0x30201000), 16),
    )
    return T.reinterpret("uint8x64", index)


@T.prim_func(s_tir=True)
def _repack_impl(
    src: T.Buffer((T.int64(256),), "uint8", offset_factor=1),
    dst: T.Buffer((T.int64(512),), "uint8", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(src[_I0 : T.int64(256)])
        T.writes(dst[_I0 : T.int64(512)])
        dst[T.Ramp(0, 1, 64)] = _repack_vector(src, 0, 0)
        dst[T.Ramp(64, 1, 64)] = _repack_vector(src, 0, 1)
        dst[T.Ramp(128, 1, 64)] = _repack_vector(src, 1, 0)
        dst[T.Ramp(192, 1, 64)] = _repack_vector(src, 1, 1)
        dst[T.Ramp(256, 1, 64)] = _repack_vector(src, 2, 0)
        dst[T.Ramp(320, 1, 64)] = _repack_vector(src, 2, 1)
        dst[T.Ramp(384, 1, 64)] = _repack_vector(src, 3, 0)
        dst[T.Ramp(448, 1, 64)] = _repack_vector(src, 3, 1)


TensorIntrin.register(LUT_REPACK_VNNI_INTRIN, _repack_desc, _repack_impl, override=True)
