"""Decode (small M) schedule for the dense ternary matmul and the fused gate/up.

Loop nest per output row ``n`` (rows split into parallel chunks of ``rows_per_task``)::

    parallel for n_outer:
      for n_inner, m:                       # M is symbolic; the loop is cheap for small M
        acc_rf[0:lanes] = 0
        for k_outer: acc_rf[0:lanes] += int32(x[m, k..]) * (code(w[n, k..]) - 1)   # vector
        acc = sum(acc_rf); y[m, n] = float32(acc) * x_scale[m] * alpha[n]

The 2-bit / base-3 codes are unpacked in int32 lanes (the ``decode`` block is inlined).  For
gate/up the up row follows the gate row inside the same ``(n, m)`` iteration; its reduction is
``if_then_else(g > 0, ...)`` with a scalar condition, which stays a branch around the vector
body, so up rows with ``relu(g) == 0`` are never read.

Correct for any M; meant for ``M <= GemvKnobs.max_m`` (the ``bitnet.m_hint`` attribute, absent =
decode).  Knobs are a dataclass with defaults measured on Zen 4; tuning will sample them later.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule, rfactor_rows, split_factor

__all__ = ["GemvKnobs", "TernaryGemv"]

_DENSE = (attrs.OpName.TERNARY_INT4_MATMUL, attrs.OpName.TERNARY_INT8_MATMUL)
_GATE_UP = (attrs.OpName.TERNARY_INT4_GATE_UP, attrs.OpName.TERNARY_INT8_GATE_UP)


@dataclass(frozen=True)
class GemvKnobs:
    """Tunable choices of :class:`TernaryGemv`.

    Attributes
    ----------
    lanes : int
        int32 partial sums along K (vector width of the reduction; 64 = four zmm registers).
        Reduced to the largest divisor of K when K is not a multiple.
    rows_per_task : int
        Output rows per parallel task.
    unroll : int
        ``pragma_auto_unroll_max_step`` on the K loop (0: none).
    max_m : int
        Largest ``bitnet.m_hint`` this rule takes (bigger goes to the GEMM rule).
    """

    lanes: int = 64
    rows_per_task: int = 8
    unroll: int = 0
    max_m: int = 8


class TernaryGemv(BitnetCPURule):
    """Decode GEMV of ``ternary_int{4,8}_matmul`` and ``ternary_int{4,8}_gate_up``."""

    ops = _DENSE + _GATE_UP

    def __init__(self, knobs: GemvKnobs | None = None) -> None:
        self.knobs = knobs or GemvKnobs()

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        """Schedule ``func``, or return None when it is not a decode ternary matmul for a CPU."""
        if not self.matches(func, target):
            return None
        m_hint = attrs.get_int(func, attrs.M_HINT)
        if m_hint is not None and m_hint > self.knobs.max_m:
            return None
        sch = s_tir.Schedule(func)
        sch.compute_inline(sch.get_sblock("decode"))
        if attrs.get_op(func) in _GATE_UP:
            self._gate_up(sch, func)
        else:
            self._dense(sch, func)
        return sch

    def _row_loops(self, sch: s_tir.Schedule, block) -> tuple:
        """Split the ``(m, n)`` loops of ``block`` into ``(n_outer, n_inner, m)``, parallel."""
        m, n = sch.get_loops(block)[:2]
        n_outer, n_inner = sch.split(n, [None, self.knobs.rows_per_task])
        sch.reorder(n_outer, n_inner, m)
        sch.parallel(n_outer)
        return n_outer, n_inner, m

    def _reduce(self, sch, block, k: int, anchor, depth: int) -> None:
        """rfactor ``block`` along K, move both halves under ``anchor`` (loop number ``depth``),
        vectorize the partial-sum lanes."""
        rf, writeback = rfactor_rows(sch, block, split_factor(k, self.knobs.lanes))
        sch.compute_at(writeback, anchor)
        sch.compute_at(rf, anchor)
        # compute_at regenerates the non-unit loops in block-iter order: lanes, then K outer.
        inner = sch.get_loops(rf)[depth:]
        k_inner = inner[0]
        if len(inner) == 1:  # K fits in one vector of lanes: no K outer loop
            sch.vectorize(k_inner)
            return
        k_outer = inner[1]
        sch.reorder(k_outer, k_inner)
        sch.vectorize(k_inner)
        if self.knobs.unroll:
            sch.annotate(k_outer, "pragma_auto_unroll_max_step", self.knobs.unroll)
        sch.decompose_reduction(rf, k_outer)

    def _dense(self, sch: s_tir.Schedule, func: tirx.PrimFunc) -> None:
        k = attrs.get_int(func, attrs.K)
        _, _, m = self._row_loops(sch, sch.get_sblock("epilogue"))
        self._reduce(sch, sch.get_sblock("matmul"), k, m, 3)

    def _gate_up(self, sch: s_tir.Schedule, func: tirx.PrimFunc) -> None:
        k = attrs.get_int(func, attrs.K)
        _, _, m = self._row_loops(sch, sch.get_sblock("glu"))
        self._reduce(sch, sch.get_sblock("up"), k, m, 3)
        sch.compute_at(sch.get_sblock("gate_scale"), m)
        self._reduce(sch, sch.get_sblock("gate"), k, m, 3)
