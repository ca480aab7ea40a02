"""Pieces shared by the CPU schedule rules: target check, op dispatch, row reductions."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from bitnet_tvm.schedules import attrs

__all__ = ["BitnetCPURule", "is_cpu", "rfactor_rows", "split_factor"]


def is_cpu(target: Target | None) -> bool:
    """Whether ``target`` is an LLVM CPU target."""
    return target is not None and target.kind.name == "llvm"


class BitnetCPURule(ScheduleRule):
    """A CPU rule that declines (returns None) unless the PrimFunc is one of ``ops``."""

    ops: tuple[attrs.OpName, ...] = ()

    def matches(self, func: tirx.PrimFunc, target: Target) -> bool:
        """Whether this rule should schedule ``func`` for ``target``."""
        return (
            isinstance(func, tirx.PrimFunc)
            and is_cpu(target)
            and attrs.get_op(func) in self.ops
            and "tirx.is_scheduled" not in func.attrs
        )


def split_factor(extent: int, want: int) -> int:
    """The largest divisor of ``extent`` that is at most ``want`` (no tail predicate then)."""
    for factor in range(min(want, extent), 0, -1):
        if extent % factor == 0:
            return factor
    return 1


def rfactor_rows(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int
) -> tuple[s_tir.schedule.SBlockRV, s_tir.schedule.SBlockRV]:
    """Split the last (reduction) loop of ``block`` by ``lanes`` and rfactor the inner part.

    Returns ``(rf, writeback)``: ``rf`` accumulates ``lanes`` partial sums (its innermost loop is
    ready to vectorize), ``writeback`` adds them up.
    """
    loops = sch.get_loops(block)
    k = loops[-1]
    _, k_inner = sch.split(k, [None, lanes])
    rf = sch.rfactor(k_inner, factor_axis=0)
    return rf, block
