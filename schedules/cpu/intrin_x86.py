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
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

__all__ = ["VNNI_TERNARY_2BIT_INTRIN", "code_2bit"]

#: Name under which the intrinsic is registered with :class:`tvm.s_tir.TensorIntrin`.
VNNI_TERNARY_2BIT_INTRIN = "bitnet_vnni_ternary_2bit_16x4"
# The operators index with int64; tensorize compares index types too.
_I0, _I16, _I64 = T.int64(0), T.int64(16), T.int64(64)


def code_2bit(byte: tirx.PrimExpr, position: tirx.PrimExpr) -> tirx.PrimExpr:
    """int32 code at 2-bit ``position`` (0..3) of the packed uint8 ``byte``.

    The kernels that are tensorized with this intrinsic must spell the decode exactly like this
    (tensorize matches expressions structurally).
    """
    return T.bitwise_and(T.shift_right(T.Cast("int32", byte), position * 2), 3)


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
        words = T.reinterpret("int32x4", w.vload([0], "uint8x16"))
        wide = T.Shuffle([words, words, words, words], list(range(16)))
        shifts = T.shift_left(
            T.shift_right(T.Ramp(0, 1, 16), T.Broadcast(2, 16)), T.Broadcast(1, 16)
        )
        codes = T.bitwise_and(T.shift_right(wide, shifts), T.Broadcast(0x03030303, 16))
        c[T.Ramp(0, 1, 16)] = T.call_llvm_pure_intrin(
            "int32x16",
            "llvm.x86.avx512.vpdpbusd.512",
            c.vload([0], "int32x16"),
            T.reinterpret("int8x64", codes),
            x.vload([0], "int8x64"),
        )


TensorIntrin.register(VNNI_TERNARY_2BIT_INTRIN, _desc, _impl, override=True)
