"""Decode schedule of ``sparse_int8_matmul``: K outer, skip zero activations, N in vectors.

Loop nest (columns split into parallel chunks of ``lanes``)::

    parallel for n_outer:
      for m:
        acc[0:lanes] = 0
        for k:
          if x_q[m, k] != 0:                      # scalar branch: zero rows are never read
            acc[0:lanes] += int32(x_q[m, k]) * (code(w[k, n..]) - 1)
        y[m, n..] = float32(acc) * x_scale[m] * alpha[n..]

With the K-major layout a chunk of one weight row is ``lanes / 4`` contiguous bytes; when N is a
multiple of ``lanes`` the accumulator is stored permuted (``[M, N / lanes, 4, lanes / 4]``) so that
every vector lane decodes the same 2-bit position of a different byte (no gathers).  The
branch comes from the operator's ``if_then_else(x_q != 0, ...)``: TIR keeps a condition that does
not depend on the vectorized loop as a branch around the vector body.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule

__all__ = ["SparseGemv", "SparseGemvKnobs", "schedule_sparse_columns"]


@dataclass(frozen=True)
class SparseGemvKnobs:
    """Tunable choices of :class:`SparseGemv`.

    Attributes
    ----------
    lanes : int
        Output columns per parallel task and int32 accumulator lanes (128: eight zmm
        registers, 32 weight bytes per activation; best of 64/128/256/512 on Zen 4).
    """

    lanes: int = 128

    def __post_init__(self) -> None:
        lanes = self.lanes
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes <= 0 or lanes % 4:
            raise ValueError(
                f"SparseGemvKnobs.lanes must be a positive multiple of 4, got {lanes!r}"
            )


class SparseGemv(BitnetCPURule):
    """Schedule of ``sparse_int8_matmul`` for any M (tuned for decode), any layout."""

    ops = (attrs.OpName.SPARSE_INT8_MATMUL,)
    Knobs = SparseGemvKnobs

    def schedule(self, sch: s_tir.Schedule, knobs: SparseGemvKnobs) -> None:
        """K outside N, N in vectors of ``knobs.lanes`` (see the module docstring)."""
        permute = str(sch.mod["main"].attrs[attrs.LAYOUT]) == "2bit_kmajor"
        schedule_sparse_columns(sch, knobs.lanes, 4 if permute else None)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Output columns per task (multiples of 4)."""
        return {"lanes": (128, 64, 256, 512)}


def schedule_sparse_columns(sch: s_tir.Schedule, lanes: int, codes_per_byte: int | None) -> None:
    """The loop nest of the module docstring on the operator in ``sch``: N in parallel chunks of
    ``lanes`` columns, K outside N.

    With ``codes_per_byte`` (a K-major layout) and N a multiple of ``lanes``, lane
    ``j * lanes / codes_per_byte + b`` holds column ``codes_per_byte * b + j`` of the chunk: a
    vector reads ``lanes / codes_per_byte`` contiguous weight bytes and decodes the same code
    position ``j`` of each (a constant shift or divisor), and the accumulator is stored permuted
    to match.  Otherwise the columns are split plainly.
    """
    func = sch.mod["main"]
    sch.compute_inline(sch.get_sblock("decode"))
    block = sch.get_sblock("matmul")
    m, n, k = sch.get_loops(block)
    if codes_per_byte is not None and attrs.get_int(func, attrs.N) % lanes == 0:
        row_bytes = lanes // codes_per_byte
        n_outer, n_byte, n_code = sch.split(n, [None, row_bytes, codes_per_byte])
        sch.reorder(n_outer, m, k, n_code, n_byte)
        sch.unroll(n_code)
        sch.vectorize(n_byte)
        sch.transform_layout(
            block,
            ("write", 0),
            lambda vm, vn: (vm, vn // lanes, vn % codes_per_byte, (vn % lanes) // codes_per_byte),
        )
    else:
        n_outer, n_inner = sch.split(n, [None, lanes])
        sch.reorder(n_outer, m, k, n_inner)
        sch.vectorize(n_inner)
    sch.parallel(n_outer)
    sch.decompose_reduction(block, k)
    sch.reverse_compute_at(sch.get_sblock("epilogue"), m)
