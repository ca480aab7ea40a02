"""CUDA tensor intrinsic: ``__dp4a`` on four int8 values held in thread-local buffers.

TVM registers ``dp4a_s8s8s32`` for int32-indexed ``shared`` buffers; the fused operators index
with int64 and our GEMV keeps both operands in registers (``local``), and tensorize compares
index types and scopes, so this module registers the same computation for that case::

    c[0] += sum_{i < 4} int32(a[i]) * int32(b[i])        # one dp4a.s32.s32

``a`` and ``b`` are read as one 32-bit word each (``int8x4``, byte ``i`` = element ``i``, as
``__dp4a`` expects on a little-endian GPU), so both must be 4-byte aligned: the schedule places
them at offsets that are multiples of 4 in arrays TVM aligns to 64 bytes.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

__all__ = ["DP4A_LOCAL_INTRIN"]

#: Name under which the intrinsic is registered with :class:`tvm.s_tir.TensorIntrin`.
DP4A_LOCAL_INTRIN = "bitnet_cuda_dp4a_s8s8s32_local"
_I0, _I4 = T.int64(0), T.int64(4)


@T.prim_func(s_tir=True)
def _desc(
    a: T.Buffer((T.int64(4),), "int8", offset_factor=1, align=4, scope="local"),
    b: T.Buffer((T.int64(4),), "int8", offset_factor=1, align=4, scope="local"),
    c: T.Buffer((T.int64(1),), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(c[_I0], a[_I0:_I4], b[_I0:_I4])
        T.writes(c[_I0])
        for i in range(T.int64(4)):
            with T.sblock("update"):
                vi = T.axis.remap("R", [i])
                c[_I0] = c[_I0] + T.Cast("int32", a[vi]) * T.Cast("int32", b[vi])


@T.prim_func(s_tir=True)
def _impl(
    a: T.Buffer((T.int64(4),), "int8", offset_factor=1, align=4, scope="local"),
    b: T.Buffer((T.int64(4),), "int8", offset_factor=1, align=4, scope="local"),
    c: T.Buffer((T.int64(1),), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(c[_I0], a[_I0:_I4], b[_I0:_I4])
        T.writes(c[_I0])
        c[_I0] = T.call_pure_extern(
            "int32", "__dp4a", a.vload([_I0], "int8x4"), b.vload([_I0], "int8x4"), c[_I0]
        )


TensorIntrin.register(DP4A_LOCAL_INTRIN, _desc, _impl, override=True)
