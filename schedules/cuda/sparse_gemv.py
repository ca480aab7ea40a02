"""CUDA schedule of ``sparse_int8_matmul``: threads own columns, skip zero activations.

The weight is K-major (``2bit_kmajor``: row ``k`` of ``W^T`` packed, 4 columns per byte), so a
thread that owns ``cols`` consecutive columns reads ``cols / 4`` bytes of a row, and the
``threads_n`` threads along ``threadIdx.x`` read consecutive bytes of that row (coalesced).  K
is split across ``threadIdx.y`` lanes, whose partial sums are combined by a cross-thread
reduction (``rfactor``)::

    for bx in blockIdx.x:                         # (m, block of threads_n * cols columns)
      for tx in threadIdx.x, ty in threadIdx.y:
        acc[0:cols] = 0
        for kr in K / threads_k:                  # rows k = ty * K / threads_k + kr
          if x_q[m, k] != 0:                      # the same for all columns: zero rows unread
            acc[c] += x_q[m, k] * (code(w[k, n + c]) - 1)    # decode in int32
        y[m, n + c] = float32(sum_ty(acc[c])) * x_scale[m] * alpha[n + c]

The skip comes from the operator's ``if_then_else(x_q != 0, x * w, 0)``, which CUDA C evaluates
lazily (``?:``), so the weight byte of a zero activation is never loaded; the condition is
uniform across the block for M = 1, so no warp diverges.  Every split uses divisors of N and K
(TVM 0.27's ``compute_at`` drops the tail predicate of a moved rfactor block), so no tail.

Default knobs are unmeasured guesses for sm_80/sm_90; they keep ~40+ blocks busy for
N = 2560.  Integer sums in any order, reference epilogue: bit-identical to
:func:`bitnet_tvm.reference.ternary_matmul`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cuda.common import BitnetCUDARule, pow2_divisor, split_factor

__all__ = ["SparseGemv", "SparseGemvKnobs", "schedule_sparse_gemv"]


@dataclass(frozen=True)
class SparseGemvKnobs:
    """Tunable choices of :class:`SparseGemv`.

    Attributes
    ----------
    cols : int
        Output columns per thread (4 = one packed byte per row).
    threads_n : int
        Threads along N (``threadIdx.x``); the largest divisor of ``N / cols`` up to this.
    threads_k : int
        Threads along K (``threadIdx.y``, reduced across); the largest power of two up to this
        that divides K.
    """

    cols: int = 4
    threads_n: int = 16
    threads_k: int = 16

    def __post_init__(self) -> None:
        for name in ("cols", "threads_n", "threads_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SparseGemvKnobs.{name} must be a positive int, got {value!r}")
        if self.threads_n * self.threads_k > 1024:
            raise ValueError("SparseGemvKnobs: threads_n * threads_k must be at most 1024")


class SparseGemv(BitnetCUDARule):
    """Schedule of ``sparse_int8_matmul`` on CUDA, any M (tuned for decode)."""

    ops = (attrs.OpName.SPARSE_INT8_MATMUL,)
    Knobs = SparseGemvKnobs

    def schedule(self, sch: s_tir.Schedule, knobs: SparseGemvKnobs) -> None:
        """Columns per thread, threads along N and K, zero-activation rows skipped."""
        _schedule(sch, knobs, bind_threads=True)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Columns per thread and the thread grid (every pair is within 1024 threads)."""
        return {"cols": (4, 8), "threads_n": (8, 16, 32), "threads_k": (4, 8, 16, 32)}


def schedule_sparse_gemv(
    func: tirx.PrimFunc, knobs: SparseGemvKnobs, *, bind_threads: bool = True
) -> s_tir.Schedule:
    """The sparse GEMV schedule; ``bind_threads=False`` leaves a CPU-buildable loop nest."""
    sch = s_tir.Schedule(func)
    _schedule(sch, knobs, bind_threads=bind_threads)
    return sch


def _schedule(sch: s_tir.Schedule, knobs: SparseGemvKnobs, *, bind_threads: bool) -> None:
    def bind(loop, thread: str) -> None:
        if bind_threads:
            sch.bind(loop, thread)

    func = sch.mod["main"]
    n_total, k_total = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    cols = split_factor(n_total, knobs.cols)
    threads_n = split_factor(n_total // cols, knobs.threads_n)
    threads_k = pow2_divisor(k_total, knobs.threads_k)
    sch.compute_inline(sch.get_sblock("decode"))
    block = sch.get_sblock("matmul")
    rf = None
    if threads_k > 1:
        _, _, k = sch.get_loops(block)
        ky, _ = sch.split(k, [threads_k, None])
        rf = sch.rfactor(ky, factor_axis=0)
        sch.set_scope(rf, 0, "local")
    sch.set_scope(block, 0, "local")

    m, n = sch.get_loops(sch.get_sblock("epilogue"))
    n_outer, tx, _ = sch.split(n, [None, threads_n, cols])
    bx = sch.fuse(m, n_outer)
    bind(bx, "blockIdx.x")
    bind(tx, "threadIdx.x")
    sch.compute_at(block, tx)
    if rf is None:
        _columns_inside_rows(sch, block, sch.get_loops(block)[2:])
        return
    sch.compute_at(rf, tx)
    # regenerated loops, one per block iter of extent > 1: total (ty, c), rf (ty, c, kr)
    ty, *c = sch.get_loops(block)[2:]
    if c:
        sch.reorder(c[0], ty)
    bind(ty, "threadIdx.y")
    ty, *rest = sch.get_loops(rf)[2:]
    bind(ty, "threadIdx.y")
    _columns_inside_rows(sch, rf, rest)


def _columns_inside_rows(sch: s_tir.Schedule, block, loops: list) -> None:
    """Order the ``(c, kr)`` loops of a partial sum as ``kr, c`` (one test of ``x_q[m, k]``
    per row), unroll the columns and split off the initialization."""
    if len(loops) == 2:
        c, kr = loops
        sch.reorder(kr, c)
        sch.unroll(c)
        sch.decompose_reduction(block, kr)
    elif loops:
        sch.decompose_reduction(block, loops[-1])
