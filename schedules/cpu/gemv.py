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
decode).  Knobs are a dataclass with defaults measured on Zen 4; :meth:`TernaryGemv.knob_space`
lists the candidates the tuner (:mod:`bitnet_tvm.tuning`) samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule, split_factor

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
    Knobs: ClassVar[type] = GemvKnobs

    def __init__(self, knobs: GemvKnobs | None = None) -> None:
        self.knobs = knobs or GemvKnobs()

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """Ours, on a CPU, and decode (``bitnet.m_hint`` absent or at most ``max_m``)."""
        if not self.matches(func, target):
            return False
        m_hint = attrs.get_int(func, attrs.M_HINT)
        return m_hint is None or m_hint <= self.knobs.max_m

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Vector lanes, rows per task (divisors of N) and K-loop unrolling."""
        n = attrs.get_int(func, attrs.N)
        rows = sorted({r for r in (2, 4, 8, 16, 32) if n % r == 0} | {self.knobs.rows_per_task})
        return {
            "lanes": tuple(sorted({16, 32, 64, self.knobs.lanes})),
            "rows_per_task": tuple(rows),
            "unroll": tuple(sorted({0, 4, 16, self.knobs.unroll})),
        }

    def schedule(self, sch: s_tir.Schedule, knobs: GemvKnobs) -> None:
        """Inline the weight decode, split rows in parallel, vectorize the reduction."""
        func = sch.mod["main"]
        if attrs.get_op(func) in _GATE_UP:
            sch.compute_inline(sch.get_sblock("decode_gate"))
            sch.compute_inline(sch.get_sblock("decode_up"))
            self._gate_up(sch, func, knobs)
        else:
            sch.compute_inline(sch.get_sblock("decode"))
            self._dense(sch, func, knobs)

    @staticmethod
    def _row_loops(sch: s_tir.Schedule, block, knobs: GemvKnobs) -> tuple:
        """Split the ``(m, n)`` loops of ``block`` into ``(n_outer, n_inner, m)``, parallel."""
        m, n = sch.get_loops(block)[:2]
        n_outer, n_inner = sch.split(n, [None, knobs.rows_per_task])
        sch.reorder(n_outer, n_inner, m)
        sch.parallel(n_outer)
        return n_outer, n_inner, m

    @staticmethod
    def _reduce(sch, block, k: int, anchor, depth: int, packed: bool, knobs: GemvKnobs):
        """rfactor ``block`` along K, move both halves under ``anchor`` (loop number ``depth``),
        vectorize the partial-sum lanes.

        ``packed`` (2-bit layout, ``lanes`` divides K): lane ``j * lanes/4 + b`` sums code ``j``
        of packed byte ``b`` of each K chunk, so a vector reads ``lanes/4`` contiguous weight
        bytes and shifts them by the constant ``2 j``; the activations are permuted to match
        once per call (see :meth:`_permute_x`).  Otherwise lane ``l`` sums ``k % lanes == l``.
        """
        k_loop = sch.get_loops(block)[-1]
        if packed:
            _, k_byte, k_code = sch.split(k_loop, [None, knobs.lanes // 4, 4])
            sch.reorder(k_code, k_byte)
            lanes = sch.fuse(k_code, k_byte)
        else:
            _, lanes = sch.split(k_loop, [None, split_factor(k, knobs.lanes)])
        rf = sch.rfactor(lanes, factor_axis=0)
        sch.compute_at(block, anchor)
        sch.compute_at(rf, anchor)
        # compute_at regenerates the non-unit loops in block-iter order: lanes, then K outer.
        inner = sch.get_loops(rf)[depth:]
        if len(inner) == 2:
            k_outer, lane = inner[1], inner[0]
            sch.reorder(k_outer, lane)
        else:  # K fits in one vector of lanes: no K outer loop
            k_outer, lane = None, inner[0]
        if packed:
            code, lane = sch.split(lane, [4, None])
            sch.unroll(code)
        sch.vectorize(lane)
        if k_outer is not None:
            if knobs.unroll:
                sch.annotate(k_outer, "pragma_auto_unroll_max_step", knobs.unroll)
            sch.decompose_reduction(rf, k_outer)
        return rf

    @staticmethod
    def _permute_x(sch, rf_blocks: list, knobs: GemvKnobs) -> None:
        """Copy ``x_q`` once per call into ``[M, K/lanes, 4, lanes/4]`` order (lane order)."""
        block = rf_blocks[0]
        reads = [region.source.name for region in sch.get(block).reads]
        cache = sch.cache_read(block, reads.index("x_q"), "global", consumer_blocks=rf_blocks)
        step = knobs.lanes
        sch.transform_layout(
            cache, ("write", 0), lambda m, k: (m, k // step, k % 4, (k % step) // 4)
        )

    @staticmethod
    def _packed(func: tirx.PrimFunc, k: int, knobs: GemvKnobs) -> bool:
        layout = str(func.attrs[attrs.LAYOUT])
        return layout == "2bit" and knobs.lanes % 4 == 0 and k % knobs.lanes == 0

    def _dense(self, sch: s_tir.Schedule, func: tirx.PrimFunc, knobs: GemvKnobs) -> None:
        k = attrs.get_int(func, attrs.K)
        packed = self._packed(func, k, knobs)
        _, _, m = self._row_loops(sch, sch.get_sblock("epilogue"), knobs)
        rf = self._reduce(sch, sch.get_sblock("matmul"), k, m, 3, packed, knobs)
        if packed:
            self._permute_x(sch, [rf], knobs)

    def _gate_up(self, sch: s_tir.Schedule, func: tirx.PrimFunc, knobs: GemvKnobs) -> None:
        k = attrs.get_int(func, attrs.K)
        packed = self._packed(func, k, knobs)
        _, _, m = self._row_loops(sch, sch.get_sblock("glu"), knobs)
        up = self._reduce(sch, sch.get_sblock("up"), k, m, 3, packed, knobs)
        sch.compute_at(sch.get_sblock("gate_scale"), m)
        gate = self._reduce(sch, sch.get_sblock("gate"), k, m, 3, packed, knobs)
        if packed:
            self._permute_x(sch, [gate, up], knobs)
