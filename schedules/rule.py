"""The base of every bitnet-tvm schedule rule: claim only our operators, on one target kind."""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from bitnet_tvm.schedules import attrs

__all__ = ["BitnetRule", "split_factor"]


class BitnetRule(ScheduleRule):
    """A rule that declines (returns None) unless the PrimFunc is one of ``ops``, not yet
    scheduled, and compiled for a target of kind ``target_kind``."""

    ops: tuple[attrs.OpName, ...] = ()
    target_kind: str = ""

    def matches(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """Whether this rule should schedule ``func`` for ``target``."""
        return (
            isinstance(func, tirx.PrimFunc)
            and target is not None
            and target.kind.name == self.target_kind
            and attrs.get_op(func) in self.ops
            and "tirx.is_scheduled" not in func.attrs
        )


def split_factor(extent: int, want: int) -> int:
    """The largest divisor of ``extent`` that is at most ``want`` (no tail predicate then)."""
    for factor in range(min(want, extent), 0, -1):
        if extent % factor == 0:
            return factor
    return 1
