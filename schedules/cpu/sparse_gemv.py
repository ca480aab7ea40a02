"""Decode schedule of ``sparse_int8_matmul``: K outer, skip zero activations, N in vectors.

Loop nest (columns split into parallel chunks of ``lanes``)::

    parallel for n_outer:
      for m:
        acc[0:lanes] = 0
        for k:
          if x_q[m, k] != 0:                      # scalar branch: zero rows are never read
            acc[0:lanes] += int32(x_q[m, k]) * (code(w[k, n..]) - 1)
        y[m, n..] = float32(acc) * x_scale[m] * alpha[n..]

With the K-major layout a chunk of one weight row is ``lanes / 4`` contiguous bytes.  The
branch comes from the operator's ``if_then_else(x_q != 0, ...)``: TIR keeps a condition that does
not depend on the vectorized loop as a branch around the vector body.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule

__all__ = ["SparseGemv", "SparseGemvKnobs"]


@dataclass(frozen=True)
class SparseGemvKnobs:
    """Tunable choices of :class:`SparseGemv`.

    Attributes
    ----------
    lanes : int
        Output columns per vector accumulator and parallel task (int32 lanes).
    """

    lanes: int = 64


class SparseGemv(BitnetCPURule):
    """Schedule of ``sparse_int8_matmul`` for any M (tuned for decode)."""

    ops = (attrs.OpName.SPARSE_INT8_MATMUL,)

    def __init__(self, knobs: SparseGemvKnobs | None = None) -> None:
        self.knobs = knobs or SparseGemvKnobs()

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        """Schedule ``func``, or return None when it is not ``sparse_int8_matmul`` on a CPU."""
        if not self.matches(func, target):
            return None
        sch = s_tir.Schedule(func)
        sch.compute_inline(sch.get_sblock("decode"))
        block = sch.get_sblock("matmul")
        m, n, k = sch.get_loops(block)
        n_outer, n_inner = sch.split(n, [None, self.knobs.lanes])
        sch.reorder(n_outer, m, k, n_inner)
        sch.parallel(n_outer)
        sch.vectorize(n_inner)
        sch.decompose_reduction(block, k)
        sch.reverse_compute_at(sch.get_sblock("epilogue"), m)
        return sch
