"""Decode schedule of ``sparse_int8_matmul`` on 1.6-bit K-major weights (``base3_kmajor``).

The loop nest of :class:`~bitnet_tvm.schedules.cpu.sparse_gemv.SparseGemv` (K outside N, the
rows of zero activations skipped by a scalar branch, N in vectors), with the output columns
permuted so that no lane gathers: byte ``b`` of a weight row holds the base-3 digits of columns
``5 b .. 5 b + 4``, so a chunk of ``lanes = 5 * row_bytes`` columns is ``row_bytes``
contiguous bytes, and with the accumulator stored ``[M, N / lanes, 5, row_bytes]`` the vector of
digit ``d`` is ``bytes // 3**d % 3`` of one contiguous load (constant divisors: multiplies)::

    parallel for n_outer:
      for m:
        acc[d, 0:row_bytes] = 0                                  # d < 5
        for k:
          if x_q[m, k] != 0:
            for d in 0..4 (unrolled):
              acc[d, :] += int32(x_q[m, k]) * (w[k, chunk] // 3**d % 3 - 1)
        y[m, n..] = float32(acc) * x_scale[m] * alpha[n..]

When N is not a multiple of ``lanes`` the plain column split of ``SparseGemv`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule
from bitnet_tvm.schedules.cpu.sparse_gemv import schedule_sparse_columns
from bitnet_tvm.schedules.layouts import WeightLayout

__all__ = ["Base3SparseGemv", "Base3SparseKnobs"]

_DIGITS = 5


@dataclass(frozen=True)
class Base3SparseKnobs:
    """Tunable choices of :class:`Base3SparseGemv`.

    Attributes
    ----------
    row_bytes : int
        Weight bytes of one row per parallel task (``5 * row_bytes`` output columns, int32
        accumulator lanes); 16 (80 columns, five zmm accumulators) measured fastest of 16/32/64.
    """

    row_bytes: int = 16

    def __post_init__(self) -> None:
        b = self.row_bytes
        if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
            raise ValueError(f"Base3SparseKnobs.row_bytes must be a positive int, got {b!r}")


class Base3SparseGemv(BitnetCPURule):
    """Schedule of ``sparse_int8_matmul`` with ``base3_kmajor`` weights, any M (decode-tuned)."""

    ops = (attrs.OpName.SPARSE_INT8_MATMUL,)
    Knobs = Base3SparseKnobs

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """A sparse matmul on 1.6-bit K-major weights, any CPU target."""
        return (
            self.matches(func, target)
            and str(func.attrs[attrs.LAYOUT]) == WeightLayout.BASE3_KMAJOR.value
        )

    def schedule(self, sch: s_tir.Schedule, knobs: Base3SparseKnobs) -> None:
        """K outside N, N in permuted digit vectors (see the module docstring)."""
        schedule_sparse_columns(sch, _DIGITS * knobs.row_bytes, _DIGITS)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Weight bytes per row and task."""
        return {"row_bytes": (16, 32, 64)}
