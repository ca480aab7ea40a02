"""The base of every bitnet-tvm schedule rule: claim only our operators, on one target kind.

A rule is a *template*: its tunable choices are a frozen dataclass (``Knobs``) with measured
defaults, and scheduling is split so that the autotuner can drive the same code:

``accepts(func, target)``
    Whether the rule takes ``func`` at all (op, target kind, ISA, layout, shapes).
``prepare(func, knobs)``
    The PrimFunc to schedule: ``func`` itself, or a rewritten compute with the same signature
    and attributes (e.g. the VNNI formulation).  Knobs used here are *structural*: the tuner
    treats each of their values as its own workload.
``schedule(sch, knobs)``
    Schedule ``sch`` (made from ``prepare``'s result) in place.
``knob_space(func, target)``
    Candidate values per knob field, for the tuner (the defaults' values among them).

``apply`` (dlight's entry point) is ``accepts`` -> ``prepare`` -> ``schedule`` with the rule's
own knobs.  Rules written before this protocol override ``apply`` directly; the tuner leaves
those at their defaults (:meth:`BitnetRule.follows_protocol` tells them apart).

Knob fields that ``prepare`` reads are listed in ``structural_knobs``; the tuner tunes every
combination of their candidate values as its own workload and samples the other fields inside
the schedule (see :mod:`bitnet_tvm.tuning.space`).  ``knob_space`` must be deterministic (the
tuner maps sampled indices back to values with it) and list each field's default value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from bitnet_tvm.schedules import attrs

__all__ = ["BitnetRule", "NoKnobs", "split_factor"]


@dataclass(frozen=True)
class NoKnobs:
    """Knobs of a rule with nothing to tune."""


class BitnetRule(ScheduleRule):
    """A rule that declines (returns None) unless the PrimFunc is one of ``ops``, not yet
    scheduled, and compiled for a target of kind ``target_kind``."""

    ops: tuple[attrs.OpName, ...] = ()
    target_kind: str = ""
    Knobs: ClassVar[type] = NoKnobs
    #: Knob fields read by ``prepare`` (each value is its own tuning workload).
    structural_knobs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, knobs: Any | None = None) -> None:
        self.knobs = knobs if knobs is not None else self.Knobs()

    def matches(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """Whether ``func`` is one of this rule's operators, unscheduled, for its target kind."""
        return (
            isinstance(func, tirx.PrimFunc)
            and target is not None
            and target.kind.name == self.target_kind
            and attrs.get_op(func) in self.ops
            and "tirx.is_scheduled" not in func.attrs
        )

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """Whether this rule schedules ``func`` for ``target`` (override to add conditions)."""
        return self.matches(func, target)

    def prepare(self, func: tirx.PrimFunc, knobs: Any) -> tirx.PrimFunc:
        """The PrimFunc to schedule for ``func`` (same signature and attributes)."""
        return func

    def schedule(self, sch: s_tir.Schedule, knobs: Any) -> None:
        """Schedule ``sch`` in place with ``knobs``."""
        raise NotImplementedError(f"{type(self).__name__} overrides apply() instead")

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Candidate values of each knob field for ``func`` (empty: nothing to tune)."""
        return {}

    @classmethod
    def follows_protocol(cls) -> bool:
        """Whether the rule implements ``schedule`` (and keeps the base ``apply``), so that the
        tuner can drive it with other knobs."""
        return cls.schedule is not BitnetRule.schedule and cls.apply is BitnetRule.apply

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        """dlight's entry point: schedule ``func`` with this rule's knobs, or return None."""
        if not self.accepts(func, target):
            return None
        return self.schedule_with(func, self.knobs)

    def schedule_with(self, func: tirx.PrimFunc, knobs: Any) -> s_tir.Schedule:
        """``prepare`` then ``schedule`` ``func`` with ``knobs`` (no ``accepts`` check)."""
        sch = s_tir.Schedule(self.prepare(func, knobs))
        self.schedule(sch, knobs)
        return sch


def split_factor(extent: int, want: int) -> int:
    """The largest divisor of ``extent`` that is at most ``want`` (no tail predicate then)."""
    for factor in range(min(want, extent), 0, -1):
        if extent % factor == 0:
            return factor
    return 1
