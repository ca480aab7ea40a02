"""Pieces shared by the CPU schedule rules: target check, op dispatch, split factors."""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from bitnet_tvm.schedules import attrs

__all__ = ["BitnetCPURule", "is_cpu", "split_factor"]


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
