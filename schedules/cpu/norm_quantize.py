"""Schedule of ``norm_quantize`` on CPU: rows in parallel.

Each row is one block holding the whole serial computation (see
:mod:`bitnet_tvm.schedules.operators.norm_quantize`); the rule parallelizes the rows, and LLVM
vectorizes the inner elementwise loops itself.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule

__all__ = ["NormQuantize"]


class NormQuantize(BitnetCPURule):
    """Parallel over M for ``norm_quantize``."""

    ops = (attrs.OpName.NORM_QUANTIZE,)

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        """Schedule ``func``, or return None when it is not ``norm_quantize`` on a CPU."""
        if not self.matches(func, target):
            return None
        sch = s_tir.Schedule(func)
        (m,) = sch.get_loops(sch.get_sblock("norm_quantize"))
        sch.parallel(m)
        return sch
