"""Schedule of ``int8_matmul`` (the INT8 LM head) on CPU: a generic int32 vector GEMV.

Loop nest per vocabulary row ``n`` (rows split into parallel chunks of ``rows_per_task``),
the same as the ternary decode GEMV (:class:`~bitnet_tvm.schedules.cpu.gemv.TernaryGemv`,
whose row-split and rfactor steps it reuses) without the weight decode::

    parallel for n_outer:
      for n_inner, m:
        acc_rf[0:lanes] = 0
        for k_outer: acc_rf[0:lanes] += int32(x[m, k..]) * int32(w[n, k..])     # vector
        y[m, n] = float32(sum(acc_rf)) * x_scale[m] * w_scale[n]

When K has no divisor of at least 4 up to ``lanes`` (odd K), the dot product stays serial.
Each weight row is read once per token, contiguously; for one token (decode) the int8 weight
streams once, a quarter of the float32 head's bytes.  LLVM lowers the widening int8 products to
``vpmaddwd``-style sums; a ``vpdpbusd`` tensorization is left for later.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule, split_factor
from bitnet_tvm.schedules.cpu.gemv import TernaryGemv

__all__ = ["Int8Matmul", "Int8MatmulKnobs"]


@dataclass(frozen=True)
class Int8MatmulKnobs:
    """Tunable choices of :class:`Int8Matmul` (the fields ``TernaryGemv``'s steps read).

    Attributes
    ----------
    lanes : int
        int32 partial sums along K (reduced to a divisor of K).
    rows_per_task : int
        Vocabulary rows per parallel task (reduced to a divisor of N).
    unroll : int
        ``pragma_auto_unroll_max_step`` on the K loop (0: none).
    """

    lanes: int = 64
    rows_per_task: int = 16
    unroll: int = 0


class Int8Matmul(BitnetCPURule):
    """Row-parallel, K-vectorized ``int8_matmul`` for any number of tokens."""

    ops = (attrs.OpName.INT8_MATMUL,)
    Knobs = Int8MatmulKnobs

    def schedule(self, sch: s_tir.Schedule, knobs: Int8MatmulKnobs) -> None:
        """Split rows in parallel, rfactor and vectorize the K reduction."""
        func = sch.mod["main"]
        n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
        rows = max(r for r in range(1, knobs.rows_per_task + 1) if n % r == 0)
        knobs = Int8MatmulKnobs(knobs.lanes, rows, knobs.unroll)
        _, _, m = TernaryGemv._row_loops(sch, sch.get_sblock("epilogue"), knobs)
        if split_factor(k, knobs.lanes) >= 4:
            TernaryGemv._reduce(sch, sch.get_sblock("matmul"), k, m, 3, False, knobs)
        else:  # K without a useful vector divisor (odd): a serial dot product per row
            sch.compute_at(sch.get_sblock("matmul"), m)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Vector lanes, rows per task and K-loop unrolling."""
        return {"lanes": (16, 32, 64), "rows_per_task": (4, 8, 16, 32), "unroll": (0, 4, 16)}
