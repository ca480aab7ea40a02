"""Schedule of ``norm_quantize`` on CPU: rows in parallel.

Each row is one block holding the whole serial computation (see
:mod:`bitnet_tvm.schedules.operators.norm_quantize`); the rule parallelizes the rows, and LLVM
vectorizes the inner elementwise loops itself.
"""

from __future__ import annotations

from tvm import s_tir

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule

__all__ = ["NormQuantize"]


class NormQuantize(BitnetCPURule):
    """Parallel over M for ``norm_quantize`` (nothing to tune: ``knob_space`` is empty)."""

    ops = (attrs.OpName.NORM_QUANTIZE,)

    def schedule(self, sch: s_tir.Schedule, knobs: object) -> None:
        """Parallelize the rows."""
        (m,) = sch.get_loops(sch.get_sblock("norm_quantize"))
        sch.parallel(m)
