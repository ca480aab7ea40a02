"""x86 tensor intrinsic: decode 64 packed 2-bit ternary codes and ``vpdpbusd`` them with int8.

TVM's own ``dot_16x4_vnni`` fails LLVM 22's verifier (``llvm.x86.avx512.vpdpbusd.512`` now takes
``<16 x i32>, <64 x i8>, <64 x i8>``); this intrinsic calls it with those types.

One application covers 16 packed weight bytes ``w[0:16]`` (64 codes ``c = W + 1`` in {0, 1, 2},
code ``q`` of byte ``b`` at bits ``2 q``, as :func:`bitnet_tvm.reference.pack_ternary_2bit`) and
64 int8 activations ``x[0:64]`` in *lane order*: ``x[p]`` multiplies code ``p // 16`` of byte
``p % 16``.  It adds into 16 int32 partial sums::

    c[i] += sum_{j < 4} int32(code(w[(4 i + j) % 16], (4 i + j) // 16)) * int32(x[4 i + j])

The implementation loads the 16 bytes once, broadcasts them to the four 128-bit quarters of a
zmm register, shifts quarter ``q`` right by ``2 q`` (``vpsrlvd``), masks every byte to its low
two bits and feeds the unsigned codes and signed activations to ``vpdpbusd``.  The caller
subtracts ``sum(x)`` once per row of ``x`` (``sum(c * x) - sum(x) = sum(W * x)``).

:data:`VNNI_TERNARY_BASE3_INTRIN` covers 320 codes stored 5 per byte (1.6 bits, the
multiply-shift bytes of :func:`bitnet_tvm.reference.pack_ternary_base3_vnni`): 64 bytes ``w``
and 320 activations ``x``.  With ``t_e = w * 3**e mod 256`` (``t_{e+1} = 3 t_e`` in byte
arithmetic) digit ``d`` is ``(3 t_d) >> 8``, i.e. ``256 c_d = 3 t_d - t_{d+1}`` exactly, so no
digit is ever extracted: 32 partial sums hold::

    c[i]      += sum_{d < 5, j < 4} int32(t_d(w[4 i + j]))     * int32(x[64 d + 4 i + j])
    c[16 + i] += sum_{d < 5, j < 4} int32(t_{d+1}(w[4 i + j])) * int32(x[64 d + 4 i + j])

and the caller takes ``(3 sum c[:16] - sum c[16:]) >> 8`` (exact: every lane is a multiple of
256).  Per 64 codes that is ``t *= 3`` (one ``vgf2p8affineqb`` for ``2 t``, one byte add) and
two ``vpdpbusd``, the instruction count of the 2-bit decode, for 20 % fewer weight bytes; it
needs GFNI (every AVX-512 VNNI core we target has it).

With INT4 activations (``|x| <= 8``) :data:`VNNI_TERNARY_BASE3_INT4_INTRIN` folds the two sums:
``sum_d x_d (3 t_d - t_(d+1)) = sum_(e <= 5) t_e y_e`` with ``y_e = 3 x_e - x_(e-1)`` (zero
outside digits 0..4, ``|y| <= 32`` fits int8), prepared once per call, so 16 partial sums take
``c[i] += sum_(e < 6, j < 4) t_e(w[4 i + j]) * y[64 e + 4 i + j]`` (``sum c >> 8`` is the dot):
six ``vpdpbusd`` per 320 codes instead of ten.

:data:`AVX2_TERNARY_2BIT_INTRIN` has the 2-bit description for CPUs without VNNI: two ymm
halves (codes 0-1 and 2-3 of the 16 bytes, :func:`decode_2bit_x32`), each ``vpmaddubsw`` then
``vpmaddwd`` by ones (:func:`pmaddubsw_dot`; exact, as ternary codes never saturate int16).
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from bitnet_tvm.schedules.operators.common import mulshift_t

__all__ = [
    "AVX2_TERNARY_2BIT_INTRIN",
    "VNNI_TERNARY_2BIT_INTRIN",
    "VNNI_TERNARY_BASE3_INT4_INTRIN",
    "VNNI_TERNARY_BASE3_INTRIN",
    "code_2bit",
    "decode_2bit_x32",
    "decode_2bit_x64",
    "mulshift_term",
    "pmaddubsw_dot",
    "vpdpbusd",
]

#: Name under which the intrinsic is registered with :class:`tvm.s_tir.TensorIntrin`.
VNNI_TERNARY_2BIT_INTRIN = "bitnet_vnni_ternary_2bit_16x4"
#: Name of the base-3 (5 codes per byte) intrinsic.
VNNI_TERNARY_BASE3_INTRIN = "bitnet_vnni_ternary_base3_32x20"
#: Name of the base-3 intrinsic for INT4 activations folded as ``3 x_e - x_(e-1)``.
VNNI_TERNARY_BASE3_INT4_INTRIN = "bitnet_vnni_ternary_base3_int4_16x24"
# The operators index with int64; tensorize compares index types too.
_I0, _I16, _I64 = T.int64(0), T.int64(16), T.int64(64)


def code_2bit(byte: tirx.PrimExpr, position: tirx.PrimExpr) -> tirx.PrimExpr:
    """int32 code at 2-bit ``position`` (0..3) of the packed uint8 ``byte``.

    The kernels that are tensorized with this intrinsic must spell the decode exactly like this
    (tensorize matches expressions structurally).
    """
    return T.bitwise_and(T.shift_right(T.Cast("int32", byte), position * 2), 3)


def decode_2bit_x64(piece: tirx.PrimExpr) -> tirx.PrimExpr:
    """int8x64 codes of 16 packed bytes ``piece`` (uint8x16) in lane order: byte ``p`` is code
    ``p // 16`` of packed byte ``p % 16`` (broadcast, shift quarter ``q`` by ``2 q``, mask)."""
    words = T.reinterpret("int32x4", piece)
    wide = T.Shuffle([words, words, words, words], list(range(16)))
    shifts = T.shift_left(T.shift_right(T.Ramp(0, 1, 16), T.Broadcast(2, 16)), T.Broadcast(1, 16))
    codes = T.bitwise_and(T.shift_right(wide, shifts), T.Broadcast(0x03030303, 16))
    return T.reinterpret("int8x64", codes)


def vpdpbusd(acc: tirx.PrimExpr, u8: tirx.PrimExpr, s8: tirx.PrimExpr) -> tirx.PrimExpr:
    """``acc`` (int32x16) plus the 4-byte dot products of ``u8`` (unsigned) and ``s8`` (int8x64)."""
    u8 = T.reinterpret("int8x64", u8)  # (a no-op when it is int8x64 already)
    return T.call_llvm_pure_intrin("int32x16", "llvm.x86.avx512.vpdpbusd.512", acc, u8, s8)


@T.prim_func(s_tir=True)
def _desc(
    w: T.Buffer((T.int64(16),), "uint8", offset_factor=1),
    x: T.Buffer((T.int64(64),), "int8", offset_factor=1),
    c: T.Buffer((T.int64(16),), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(c[_I0:_I16], w[_I0:_I16], x[_I0:_I64])
        T.writes(c[_I0:_I16])
        for i, j in T.grid(T.int64(16), T.int64(4)):
            with T.sblock("update"):
                vi, vj = T.axis.remap("SR", [i, j])
                c[vi] = c[vi] + code_2bit(
                    w[vi % T.int64(4) * T.int64(4) + vj], T.Cast("int32", vi) // 4
                ) * T.Cast("int32", x[vi * T.int64(4) + vj])


@T.prim_func(s_tir=True)
def _impl(
    w: T.Buffer((T.int64(16),), "uint8", offset_factor=1),
    x: T.Buffer((T.int64(64),), "int8", offset_factor=1),
    c: T.Buffer((T.int64(16),), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(c[_I0:_I16], w[_I0:_I16], x[_I0:_I64])
        T.writes(c[_I0:_I16])
        c[T.Ramp(0, 1, 16)] = vpdpbusd(
            c.vload([0], "int32x16"),
            decode_2bit_x64(w.vload([0], "uint8x16")),
            x.vload([0], "int8x64"),
        )


TensorIntrin.register(VNNI_TERNARY_2BIT_INTRIN, _desc, _impl, override=True)


_I320, _I32 = T.int64(320), T.int64(32)


def mulshift_term(byte: tirx.PrimExpr, vd: tirx.PrimExpr, vi: tirx.PrimExpr) -> tirx.PrimExpr:
    """``t_{d + i // 16}`` of the packed uint8 ``byte``: the weight factor of lane ``i`` (< 32)
    of the base-3 intrinsic for digit ``d`` (kernels tensorized with it spell it like this)."""
    return mulshift_t(T.Cast("int32", byte), T.Cast("int32", vd + vi // T.int64(16)))


@T.prim_func(s_tir=True)
def _desc_base3(
    w: T.Buffer((T.int64(64),), "uint8", offset_factor=1),
    x: T.Buffer((T.int64(320),), "int8", offset_factor=1),
    c: T.Buffer((T.int64(32),), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(c[_I0:_I32], w[_I0:_I64], x[_I0:_I320])
        T.writes(c[_I0:_I32])
        for d, i, j in T.grid(T.int64(5), T.int64(32), T.int64(4)):
            with T.sblock("update"):
                vd, vi, vj = T.axis.remap("RSR", [d, i, j])
                c[vi] = c[vi] + mulshift_term(
                    w[vi % T.int64(16) * T.int64(4) + vj], vd, vi
                ) * T.Cast("int32", x[vd * T.int64(64) + vi % T.int64(16) * T.int64(4) + vj])


def _dot_base3(c: tirx.Buffer, w: tirx.Buffer, x: tirx.Buffer) -> tuple:
    """The two updated halves of ``c``: five ``vpdpbusd`` each, ``t *= 3`` between them."""
    low, high = c.vload([0], "int32x16"), c.vload([16], "int32x16")
    t = w.vload([0], "uint8x64")
    for d in range(5):
        xd = x.vload([64 * d], "int8x64")
        low = vpdpbusd(low, t, xd)
        t = t + _times2(t)
        high = vpdpbusd(high, t, xd)
    return low, high


# GF(2) matrix of ``byte << 1`` for vgf2p8affineqb (row ``7 - i`` selects source bit ``i - 1``).
_SHL1 = 0x0001020408102040


def _times2(t: tirx.PrimExpr) -> tirx.PrimExpr:
    """``2 t mod 256`` per byte as ``vgf2p8affineqb`` (a shift is GF(2)-linear).  Written with
    byte adds, LLVM folds ``t + t + t`` chains into byte multiplies by 3, 9, ... 243, which x86
    lacks (it emulates them with ~4 instructions each)."""
    matrix = T.reinterpret("uint8x64", T.Broadcast(T.uint64(_SHL1), 8))
    return T.call_llvm_pure_intrin("uint8x64", "llvm.x86.vgf2p8affineqb.512", t, matrix, T.uint8(0))


@T.prim_func(s_tir=True)
def _impl_base3(
    w: T.Buffer((T.int64(64),), "uint8", offset_factor=1),
    x: T.Buffer((T.int64(320),), "int8", offset_factor=1),
    c: T.Buffer((T.int64(32),), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(c[_I0:_I32], w[_I0:_I64], x[_I0:_I320])
        T.writes(c[_I0:_I32])
        low, high = _dot_base3(c, w, x)
        c[T.Ramp(0, 1, 16)] = low
        c[T.Ramp(16, 1, 16)] = high


TensorIntrin.register(VNNI_TERNARY_BASE3_INTRIN, _desc_base3, _impl_base3, override=True)


_I384 = T.int64(384)


@T.prim_func(s_tir=True)
def _desc_base3_int4(
    w: T.Buffer((T.int64(64),), "uint8", offset_factor=1),
    y: T.Buffer((T.int64(384),), "int8", offset_factor=1),
    c: T.Buffer((T.int64(16),), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(c[_I0:_I16], w[_I0:_I64], y[_I0:_I384])
        T.writes(c[_I0:_I16])
        for e, i, j in T.grid(T.int64(6), T.int64(16), T.int64(4)):
            with T.sblock("update"):
                ve, vi, vj = T.axis.remap("RSR", [e, i, j])
                c[vi] = c[vi] + mulshift_term(w[vi * T.int64(4) + vj], ve, T.int64(0)) * T.Cast(
                    "int32", y[ve * T.int64(64) + vi * T.int64(4) + vj]
                )


def _dot_base3_int4(c: tirx.Buffer, w: tirx.Buffer, y: tirx.Buffer) -> tirx.PrimExpr:
    acc = c.vload([0], "int32x16")
    t = w.vload([0], "uint8x64")
    for e in range(6):
        acc = vpdpbusd(acc, t, y.vload([64 * e], "int8x64"))
        if e < 5:
            t = t + _times2(t)
    return acc


@T.prim_func(s_tir=True)
def _impl_base3_int4(
    w: T.Buffer((T.int64(64),), "uint8", offset_factor=1),
    y: T.Buffer((T.int64(384),), "int8", offset_factor=1),
    c: T.Buffer((T.int64(16),), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(c[_I0:_I16], w[_I0:_I64], y[_I0:_I384])
        T.writes(c[_I0:_I16])
        c[T.Ramp(0, 1, 16)] = _dot_base3_int4(c, w, y)


TensorIntrin.register(
    VNNI_TERNARY_BASE3_INT4_INTRIN, _desc_base3_int4, _impl_base3_int4, override=True
)


#: Name of the AVX2 intrinsic: :data:`VNNI_TERNARY_2BIT_INTRIN`'s description (16 int32 sums of
#: 64 codes by 64 lane-ordered activations), computed on 256-bit vectors without VNNI.
AVX2_TERNARY_2BIT_INTRIN = "bitnet_avx2_ternary_2bit_16x4"


def decode_2bit_x32(piece: tirx.PrimExpr, half: int) -> tirx.PrimExpr:
    """int8x32 codes ``2 half`` and ``2 half + 1`` of 16 packed bytes ``piece`` (uint8x16): bytes
    ``32 half + p`` of :func:`decode_2bit_x64`'s lane order, on a ymm register (broadcast the 16
    bytes to both 128-bit halves, ``vpsrlvd`` half ``h`` by ``2 (2 half + h)``, mask to 2 bits).
    The shifts are on int32 lanes: AVX2 has no byte shift."""
    words = T.reinterpret("int32x4", piece)
    wide = T.Shuffle([words, words], list(range(8)))
    shifts = T.shift_left(T.shift_right(T.Ramp(0, 1, 8), T.Broadcast(2, 8)), T.Broadcast(1, 8))
    shifts = shifts + T.Broadcast(4 * half, 8)
    codes = T.bitwise_and(T.shift_right(wide, shifts), T.Broadcast(0x03030303, 8))
    return T.reinterpret("int8x32", codes)


def pmaddubsw_dot(acc: tirx.PrimExpr, u8: tirx.PrimExpr, s8: tirx.PrimExpr) -> tirx.PrimExpr:
    """``acc`` (int32x8) plus the 4-byte dot products of ``u8`` (unsigned) and ``s8`` (int8x32):
    ``vpmaddubsw`` (byte pairs to int16) then ``vpmaddwd`` by ones (int16 pairs to int32).

    ``vpmaddubsw`` saturates its int16 pair sums: exact only while ``|u0 s0 + u1 s1| < 2**15``,
    which holds for ternary codes (``u <= 2``: at most ``2 * 2 * 128 = 512``).
    """
    pairs = T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", u8, s8)
    ones = T.Broadcast(T.int16(1), 16)
    return acc + T.call_llvm_pure_intrin("int32x8", "llvm.x86.avx2.pmadd.wd", pairs, ones)


@T.prim_func(s_tir=True)
def _impl_avx2(
    w: T.Buffer((T.int64(16),), "uint8", offset_factor=1),
    x: T.Buffer((T.int64(64),), "int8", offset_factor=1),
    c: T.Buffer((T.int64(16),), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(c[_I0:_I16], w[_I0:_I16], x[_I0:_I64])
        T.writes(c[_I0:_I16])
        piece = w.vload([0], "uint8x16")
        c[T.Ramp(0, 1, 8)] = pmaddubsw_dot(
            c.vload([0], "int32x8"), decode_2bit_x32(piece, 0), x.vload([0], "int8x32")
        )
        c[T.Ramp(8, 1, 8)] = pmaddubsw_dot(
            c.vload([8], "int32x8"), decode_2bit_x32(piece, 1), x.vload([32], "int8x32")
        )


TensorIntrin.register(AVX2_TERNARY_2BIT_INTRIN, _desc, _impl_avx2, override=True)
