"""AVX-512 VNNI sparse INT8 decode GEMV on 1.6-bit K-major weights (``base3_kmajor``).

The kernel of :mod:`~bitnet_tvm.schedules.cpu.vnni_sparse` (branch-free compaction of the
non-zero activations, four K-major row pieces per ``vpdpbusd``, prefetch ahead) with the
multiply-shift bytes of :func:`bitnet_tvm.reference.pack_ternary_base3_mulshift`: byte ``l`` of
a 16-byte row piece holds the codes ``c_d`` of outputs ``5 l + d`` (``d < 5``), a chunk is 80
outputs.  With ``t_0 = byte`` and ``t_(e+1) = 3 t_e mod 256`` (two byte adds),
``256 c_d = 3 t_d - t_(d+1)``, so no digit is ever extracted::

    for g < cnt / 4:                                     # 4 non-zeros at a time
      T = interleave(w[idx[4g + j], 16 chunk : +16])     # lane l: byte l of the four rows
      for e <= 5: A[e] = vpdpbusd(A[e], T, xv[4g : +4] x 16); T = T + T + T
    y[m, 80 chunk + 5 l + d] = float32(((3 A[d][l] - A[d+1][l]) >> 8) - sum(x)) * x_scale * alpha

``3 A_d - A_(d+1) = 256 sum_j x_j c_d`` exactly, so the shift is an exact division; the codes
are ``W + 1``, hence ``- sum(x)``.  Six ``vpdpbusd`` and ten byte adds per 80 outputs and four
non-zeros (2-bit: four ``vpdpbusd``, four shifts and masks per 64).  Outputs past the last full
chunk (``N % 80``) are summed by a scalar loop; results equal
:func:`bitnet_tvm.reference.ternary_matmul` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from bitnet_tvm.schedules.cpu.intrin_x86 import vpdpbusd
from bitnet_tvm.schedules.cpu.vnni_sparse import (
    AHEAD_CHOICES,
    VnniSparseGemv,
    check_sparse_knobs,
    compact_row,
    gather_pieces,
    prefetch_rows,
)
from bitnet_tvm.schedules.layouts import WeightLayout, packed_shape
from bitnet_tvm.schedules.operators.common import ternary_code

__all__ = ["VnniSparseBase3", "VnniSparseBase3Knobs", "vnni_sparse_base3_gemv"]

_CHUNK = 80  # outputs per chunk (16 bytes of a K-major row, 5 codes each)
_TERMS = 6  # t_0 .. t_5


@dataclass(frozen=True)
class VnniSparseBase3Knobs:
    """Tunable choices of :class:`VnniSparseBase3`.

    Attributes
    ----------
    chunks : int
        80-output chunks per parallel task (6 accumulators each); the largest divisor of
        ``N // 80`` up to this is used.
    ahead : int
        Prefetch distance in groups of four non-zeros (as ``VnniSparseKnobs.ahead``).
    """

    chunks: int = 16
    ahead: int = AHEAD_CHOICES[0]

    def __post_init__(self) -> None:
        check_sparse_knobs(self)


def vnni_sparse_base3_gemv(n: int, k: int, chunks: int, ahead: int = 8) -> tirx.PrimFunc:
    """The VNNI sparse GEMV for ``sparse_int8_matmul(n, k, layout="base3_kmajor")`` (same
    signature), ``chunks`` 80-output chunks per parallel task (must divide ``n // 80``)."""
    i64 = T.int64
    full = n // _CHUNK
    if full and full % chunks:
        raise ValueError(f"chunks ({chunks}) must divide n // 80 = {full}")
    tasks = full // chunks if full else 0
    N_, K_ = i64(n), i64(k)
    layout = WeightLayout.BASE3_KMAJOR
    rows, width = packed_shape(n, k, layout)
    GROUPS = i64(-(-k // 4) * 4)
    tail0 = full * _CHUNK
    lines = -(-chunks * 16 // 64)  # cache lines of a row piece per task
    stride = _TERMS * 16  # accumulator ints per chunk

    @T.prim_func
    def func(
        var_x_q: T.handle,
        var_x_scale: T.handle,
        w: T.Buffer((i64(rows), i64(width)), "uint8"),
        alpha: T.Buffer((N_,), "float32"),
        var_y: T.handle,
    ):
        T.func_attr({"tirx.noalias": True})
        M = T.int64()
        x_q = T.match_buffer(var_x_q, (M, K_), "int8")
        x_scale = T.match_buffer(var_x_scale, (M, i64(1)), "float32")
        y = T.match_buffer(var_y, (M, N_), "float32")
        idx = T.decl_buffer((GROUPS + i64(4),), "int32")
        xv = T.decl_buffer((GROUPS + i64(4),), "int8")
        state = T.decl_buffer((2,), "int32", scope="local")  # count, sum(x)
        for m in range(M):
            compact_row(x_q, m, K_, idx, xv, state)
            for task in T.parallel(i64(tasks)):
                acc = T.decl_buffer((chunks * stride,), "int32", scope="local")
                terms = T.decl_buffer((64,), "uint8", scope="local")
                for i in T.vectorized(chunks * stride):
                    acc[i] = 0
                for g in range((state[0] + 3) // 4):
                    prefetch_rows(w, idx, state, g, ahead, task * i64(chunks * 16), lines)
                    xg = T.reinterpret(
                        "int8x64",
                        T.Broadcast(T.reinterpret("int32", xv.vload([g * 4], "int8x4")), 16),
                    )
                    for c in T.unroll(chunks):
                        terms[T.Ramp(0, 1, 64)] = gather_pieces(
                            w, idx, g, task * i64(chunks) + T.Cast("int64", c)
                        )
                        for e in T.unroll(_TERMS):
                            acc[T.Ramp(c * stride + e * 16, 1, 16)] = vpdpbusd(
                                acc[T.Ramp(c * stride + e * 16, 1, 16)],
                                terms[T.Ramp(0, 1, 64)],
                                xg,
                            )
                            t = terms[T.Ramp(0, 1, 64)]
                            terms[T.Ramp(0, 1, 64)] = t + t + t
                for c, d, lane in T.grid(chunks, 5, 16):
                    nn = (task * i64(chunks) + i64(c)) * i64(_CHUNK) + i64(lane * 5 + d)
                    a_d = acc[c * stride + d * 16 + lane]
                    a_next = acc[c * stride + (d + 1) * 16 + lane]
                    y[m, nn] = (
                        T.Cast("float32", T.shift_right(3 * a_d - a_next, 8) - state[1])
                        * x_scale[m, i64(0)]
                        * alpha[nn]
                    )
            for nt in range(N_ - i64(tail0)):  # outputs past the last full chunk
                nn = i64(tail0) + nt
                state[1] = 0
                for i in range(state[0]):
                    state[1] = state[1] + T.Cast("int32", xv[i]) * (
                        ternary_code(w, layout, nn, T.Cast("int64", idx[i])) - 1
                    )
                y[m, nn] = T.Cast("float32", state[1]) * x_scale[m, i64(0)] * alpha[nn]

    return func


class VnniSparseBase3(VnniSparseGemv):
    """``sparse_int8_matmul`` in the ``base3_kmajor`` layout on AVX-512 VNNI CPUs (any M, meant
    for decode).  Declines other layouts and targets without ``avx512vnni`` (the generic
    :class:`~bitnet_tvm.schedules.cpu.base3_sparse.Base3SparseGemv` takes those)."""

    Knobs = VnniSparseBase3Knobs
    layout = WeightLayout.BASE3_KMAJOR
    chunk = _CHUNK
    chunk_choices = (16, 4, 8, 32)
    kernel = staticmethod(vnni_sparse_base3_gemv)
