"""AVX-512 VNNI sparse INT8 decode GEMV: only the weight rows of non-zero activations are read.

``sparse_int8_matmul`` in the K-major ``2bit_kmajor`` layout (row ``k`` of ``W^T`` holds the
codes of every output ``n`` for activation ``k``, byte ``n // 4`` at bits ``2 (n % 4)``).  Per
activation row ``m``::

    idx, xv, cnt = indices and values of the non-zero x[m, :]   # branch-free compaction
    pad idx, xv to a multiple of 4 (row 0, value 0)
    parallel for chunk of 64 outputs (``chunks`` of them per task):
      acc[4][16] = 0                                           # registers
      for g < cnt / 4:                                         # 4 non-zeros at a time
        Z = w[idx[4g + j], 16 chunk : +16] for j < 4           # four 16-byte row pieces
        Y[4 l + j] = Z[16 j + l]                               # one byte shuffle
        for s < 4: acc[s] = vpdpbusd(acc[s], (Y >> 2 s) & 3, xv[4g : 4g + 4] x 16)
      y[m, 64 chunk + 4 l + s] = float32(acc[s][l] - sum(x)) * x_scale[m] * alpha[n]

Lane ``l`` of ``acc[s]`` is output ``4 l + s`` of the chunk: its four bytes are the codes
``W[n, k_j] + 1`` of the four non-zeros, multiplied by their activations (``vpdpbusd`` takes
them as u8 x s8), so ``sum(x)`` is subtracted once.  Bytes read fall with the density: 16 bytes
per non-zero and chunk (a quarter of a cache line; consecutive chunks of one task share lines).
Outputs past the last full chunk (``N % 64``) are summed by a scalar loop over the non-zeros.
The epilogue multiplies in the reference's order, so results equal
:func:`bitnet_tvm.reference.ternary_matmul` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.script import tirx as T
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule, split_factor
from bitnet_tvm.schedules.cpu.intrin_x86 import vpdpbusd
from bitnet_tvm.schedules.layouts import WeightLayout, packed_shape
from bitnet_tvm.schedules.operators.common import ternary_code
from bitnet_tvm.schedules.target import has_avx512_vnni

__all__ = [
    "AHEAD_CHOICES",
    "LANE_INTERLEAVE",
    "VnniSparseGemv",
    "VnniSparseKnobs",
    "check_sparse_knobs",
    "compact_row",
    "gather_pieces",
    "prefetch_rows",
    "sparse_knob_space",
    "vnni_sparse_gemv",
]

_CHUNK = 64  # outputs per chunk (16 bytes of a K-major row)
# Y[4 l + j] = Z[16 j + l]: byte j of lane l comes from row j.
LANE_INTERLEAVE = [16 * j + lane for lane in range(16) for j in range(4)]
#: Prefetch distances (groups of four non-zeros) tried at decode, the default's first.
AHEAD_CHOICES = (8, 4, 16, 2)


def gather_pieces(w: tirx.Buffer, idx: tirx.Buffer, g, chunk) -> tirx.PrimExpr:
    """Bytes (uint8x64) of the 16-byte pieces ``chunk`` of the K-major rows ``idx[4 g + j]``
    (``j < 4``), interleaved so that int32 lane ``l`` holds byte ``l`` of each row."""
    pieces = [w.vload([T.int64(idx[g * 4 + j]), chunk * T.int64(16)], "uint8x16") for j in range(4)]
    return T.Shuffle(pieces, LANE_INTERLEAVE)


@T.macro
def compact_row(x_q, m, k, idx, xv, state):
    """Branch-free compaction of row ``m`` of ``x_q``: the indices ``idx`` and values ``xv`` of
    its non-zeros, their count in ``state[0]`` and ``sum(x)`` in ``state[1]``, then four
    padding entries (row 0, value 0)."""
    state[0] = 0
    state[1] = 0
    for kk in range(k):
        idx[state[0]] = T.Cast("int32", kk)
        xv[state[0]] = x_q[m, kk]
        state[1] = state[1] + T.Cast("int32", x_q[m, kk])
        state[0] = state[0] + T.Cast("int32", x_q[m, kk] != T.int8(0))
    for j in range(4):
        idx[state[0] + j] = 0
        xv[state[0] + j] = T.int8(0)


@T.macro
def prefetch_rows(w, idx, state, g, ahead, column, lines):
    """Prefetch ``lines`` cache lines from byte ``column`` of the rows of group ``g + ahead``."""
    for j, line in T.grid(4, lines):
        T.evaluate(
            T.call_llvm_intrin(
                "void",
                "llvm.prefetch.p0",
                T.address_of(
                    w[
                        T.int64(idx[T.min(g * 4 + 4 * ahead + j, state[0] + 3)]),
                        column + T.Cast("int64", line) * T.int64(64),
                    ]
                ),
                T.int32(0),
                T.int32(3),
                T.int32(1),
            )
        )


def check_sparse_knobs(knobs) -> None:
    """Raise ValueError unless ``knobs.chunks`` and ``knobs.ahead`` are positive ints."""
    for name in ("chunks", "ahead"):
        value = getattr(knobs, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{type(knobs).__name__}.{name} must be a positive int, got {value!r}")


def sparse_knob_space(func: tirx.PrimFunc, chunks: tuple[int, ...]) -> dict[str, tuple]:
    """The knob space of a sparse GEMV rule whose ``chunks`` choices are ``chunks`` (default
    first).  Decode (``bitnet.m_hint`` absent or 1) streams its weight rows from DRAM: the
    prefetch distance is what to tune, the default's chunks give every thread a task.  For
    more tokens the rows come from cache and the chunks (accumulators per task) matter."""
    m_hint = attrs.get_int(func, attrs.M_HINT)
    if m_hint is None or m_hint <= 1:
        return {"chunks": chunks[:1], "ahead": AHEAD_CHOICES}
    return {"chunks": chunks, "ahead": AHEAD_CHOICES[:1]}


@dataclass(frozen=True)
class VnniSparseKnobs:
    """Tunable choices of :class:`VnniSparseGemv`.

    Attributes
    ----------
    chunks : int
        64-output chunks per parallel task (4 accumulators each); the largest divisor of
        ``N // 64`` up to this is used.
    ahead : int
        Prefetch distance: the weight rows of the group ``ahead`` groups (of four non-zeros)
        on are prefetched.
    """

    chunks: int = 20
    ahead: int = AHEAD_CHOICES[0]

    def __post_init__(self) -> None:
        check_sparse_knobs(self)


def vnni_sparse_gemv(n: int, k: int, chunks: int, ahead: int = 8) -> tirx.PrimFunc:
    """The VNNI sparse GEMV for ``sparse_int8_matmul(n, k, layout="2bit_kmajor")`` (same
    signature), ``chunks`` 64-output chunks per parallel task (must divide ``n // 64``)."""
    i64 = T.int64
    full = n // _CHUNK
    if full and full % chunks:
        raise ValueError(f"chunks ({chunks}) must divide n // 64 = {full}")
    tasks = full // chunks if full else 0
    N_, K_ = i64(n), i64(k)
    rows, width = packed_shape(n, k, WeightLayout.TWO_BIT_KMAJOR)
    GROUPS = i64(-(-k // 4) * 4)
    tail0 = full * _CHUNK
    lines = -(-chunks * 16 // 64)  # cache lines of a row piece per task

    def codes(y, s):
        words = T.reinterpret("int32x16", y)
        shifted = T.shift_right(words, T.Broadcast(2 * s, 16))
        return T.reinterpret("int8x64", T.bitwise_and(shifted, T.Broadcast(0x03030303, 16)))

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
                acc = T.decl_buffer((chunks * 64,), "int32", scope="local")
                for i in T.vectorized(chunks * 64):
                    acc[i] = 0
                for g in range((state[0] + 3) // 4):
                    prefetch_rows(w, idx, state, g, ahead, task * i64(chunks * 16), lines)
                    xg = T.reinterpret(
                        "int8x64",
                        T.Broadcast(T.reinterpret("int32", xv.vload([g * 4], "int8x4")), 16),
                    )
                    for c in T.unroll(chunks):
                        piece = gather_pieces(w, idx, g, task * i64(chunks) + T.Cast("int64", c))
                        for s in T.unroll(4):
                            acc[T.Ramp((c * 4 + s) * 16, 1, 16)] = vpdpbusd(
                                acc[T.Ramp((c * 4 + s) * 16, 1, 16)], codes(piece, s), xg
                            )
                for c, s, lane in T.grid(chunks, 4, 16):
                    nn = (task * i64(chunks) + i64(c)) * i64(64) + i64(lane * 4 + s)
                    y[m, nn] = (
                        T.Cast("float32", acc[(c * 4 + s) * 16 + lane] - state[1])
                        * x_scale[m, i64(0)]
                        * alpha[nn]
                    )
            for nt in range(N_ - i64(tail0)):  # outputs past the last full chunk
                nn = i64(tail0) + nt
                state[1] = 0
                for i in range(state[0]):
                    state[1] = state[1] + T.Cast("int32", xv[i]) * (
                        ternary_code(w, WeightLayout.TWO_BIT_KMAJOR, nn, T.Cast("int64", idx[i]))
                        - 1
                    )
                y[m, nn] = T.Cast("float32", state[1]) * x_scale[m, i64(0)] * alpha[nn]

    return func


class VnniSparseGemv(BitnetCPURule):
    """``sparse_int8_matmul`` in the ``2bit_kmajor`` layout on AVX-512 VNNI CPUs (any M, meant
    for decode).  Declines other layouts, targets without ``avx512vnni`` (the generic
    :class:`~bitnet_tvm.schedules.cpu.sparse_gemv.SparseGemv` takes those) and every other
    PrimFunc.

    The 1.6-bit rule (:class:`~bitnet_tvm.schedules.cpu.vnni_sparse_base3.VnniSparseBase3`)
    is this one with another ``layout``, ``chunk`` (outputs per 16-byte row piece),
    ``chunk_choices`` and ``kernel``."""

    ops = (attrs.OpName.SPARSE_INT8_MATMUL,)
    Knobs = VnniSparseKnobs
    structural_knobs = ("chunks", "ahead")
    layout = WeightLayout.TWO_BIT_KMAJOR
    chunk = _CHUNK
    chunk_choices = (20, 4, 8, 10, 40)
    kernel = staticmethod(vnni_sparse_gemv)

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """A sparse matmul in :attr:`layout` for an AVX-512 VNNI target."""
        return (
            self.matches(func, target)
            and has_avx512_vnni(target)
            and str(func.attrs[attrs.LAYOUT]) == self.layout.value
        )

    def prepare(self, func: tirx.PrimFunc, knobs: VnniSparseKnobs) -> tirx.PrimFunc:
        """The compaction + ``vpdpbusd`` kernel for ``func`` (same signature and attributes)."""
        n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
        chunks = split_factor(max(n // self.chunk, 1), knobs.chunks)
        kernel = self.kernel(n, k, chunks, knobs.ahead)
        return kernel.with_attrs({**dict(func.attrs), "tirx.noalias": True})

    def schedule(self, sch: s_tir.Schedule, knobs: VnniSparseKnobs) -> None:
        """Nothing left to schedule: :meth:`prepare` builds the loop nest."""

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Chunks of outputs per task, prefetch distance (see :func:`sparse_knob_space`)."""
        return sparse_knob_space(func, self.chunk_choices)
