"""Prefill (large M) schedule for the dense ternary matmul and the fused gate/up.

Loop nest (output tiles of ``m_tile x n_tile``; N tiles in parallel)::

    parallel for n_outer:
      w_tile[K, n_tile] = code(w[n.., :]) - 1          # decode once per N tile, K-major
      for m_outer:
        acc[m_tile, n_tile] = 0
        for k:
          for m_inner (unrolled), n_inner (vector):
            acc[m_inner, n_inner] += int32(x[m, k]) * int32(w_tile[k, n_inner])
        epilogue of the tile

For gate/up, the gate and up tiles are two such reductions over the same ``(m, i)`` tile
(``up`` keeps its ``g > 0`` condition per element as a select).  Taken when the PrimFunc's
``bitnet.m_hint`` is above ``GemmKnobs.min_m``; correct for any M.  :meth:`TernaryGemm.knob_space`
lists the tile sizes the tuner (:mod:`bitnet_tvm.tuning`) samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule

__all__ = ["GemmKnobs", "TernaryGemm"]

_DENSE = (attrs.OpName.TERNARY_INT4_MATMUL, attrs.OpName.TERNARY_INT8_MATMUL)
_GATE_UP = (attrs.OpName.TERNARY_INT4_GATE_UP, attrs.OpName.TERNARY_INT8_GATE_UP)


@dataclass(frozen=True)
class GemmKnobs:
    """Tunable choices of :class:`TernaryGemm`.

    Attributes
    ----------
    m_tile : int
        Rows of an output tile (unrolled).
    n_tile : int
        Columns of an output tile (int32 vector lanes) and of a decoded weight tile.
    min_m : int
        This rule takes PrimFuncs whose ``bitnet.m_hint`` is larger than this.
    """

    m_tile: int = 4
    n_tile: int = 32
    min_m: int = 8


class TernaryGemm(BitnetCPURule):
    """Prefill GEMM of ``ternary_int{4,8}_matmul`` and ``ternary_int{4,8}_gate_up``."""

    ops = _DENSE + _GATE_UP
    Knobs: ClassVar[type] = GemmKnobs

    def __init__(self, knobs: GemmKnobs | None = None) -> None:
        self.knobs = knobs or GemmKnobs()

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """Ours, on a CPU, and prefill (``bitnet.m_hint`` above ``min_m``)."""
        if not self.matches(func, target):
            return False
        m_hint = attrs.get_int(func, attrs.M_HINT)
        return m_hint is not None and m_hint > self.knobs.min_m

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Output tile rows (unrolled) and columns (vector lanes; divisors of N)."""
        n = attrs.get_int(func, attrs.N)
        n_tiles = {t for t in (8, 16, 32, 64) if n % t == 0} | {self.knobs.n_tile}
        return {
            # m_tile 1 would leave no m_inner loop for _reduce to reorder
            "m_tile": tuple(sorted({2, 4, 8, self.knobs.m_tile})),
            "n_tile": tuple(sorted(n_tiles)),
        }

    def schedule(self, sch: s_tir.Schedule, knobs: GemmKnobs) -> None:
        """Tile the output, decode each weight tile once, reduce in registers."""
        if attrs.get_op(sch.mod["main"]) in _GATE_UP:
            n_outer, m_outer = self._tile(sch, sch.get_sblock("glu"), knobs)
            self._reduce(sch, sch.get_sblock("up"), m_outer)
            sch.compute_at(sch.get_sblock("gate_scale"), m_outer)
            self._reduce(sch, sch.get_sblock("gate"), m_outer)
            for name in ("decode_up", "decode_gate"):
                self._decode(sch, sch.get_sblock(name), n_outer)
        else:
            n_outer, m_outer = self._tile(sch, sch.get_sblock("epilogue"), knobs)
            self._reduce(sch, sch.get_sblock("matmul"), m_outer)
            self._decode(sch, sch.get_sblock("decode"), n_outer)

    @staticmethod
    def _tile(sch: s_tir.Schedule, block, knobs: GemmKnobs) -> tuple:
        """Tile the ``(m, n)`` loops of the last block; return ``(n_outer, m_outer)``."""
        m, n = sch.get_loops(block)
        m_outer, m_inner = sch.split(m, [None, knobs.m_tile])
        n_outer, n_inner = sch.split(n, [None, knobs.n_tile])
        sch.reorder(n_outer, m_outer, m_inner, n_inner)
        sch.parallel(n_outer)
        sch.vectorize(n_inner)
        return n_outer, m_outer

    @staticmethod
    def _reduce(sch: s_tir.Schedule, block, m_outer) -> None:
        """Move the ``(m, n, k)`` reduction under ``m_outer`` as ``k, m_inner, n_inner``."""
        sch.compute_at(block, m_outer)
        m_inner, n_inner, k = sch.get_loops(block)[-3:]
        sch.reorder(k, m_inner, n_inner)
        sch.vectorize(n_inner)
        sch.unroll(m_inner)
        sch.decompose_reduction(block, k)

    @staticmethod
    def _decode(sch: s_tir.Schedule, block, n_outer) -> None:
        """Decode the weight tile of ``n_outer`` once, stored K-major for vector loads."""
        sch.transform_layout(block, ("write", 0), lambda n, k: (k, n))
        sch.compute_at(block, n_outer)
        n_inner, k = sch.get_loops(block)[-2:]
        sch.reorder(k, n_inner)
        sch.vectorize(n_inner)
