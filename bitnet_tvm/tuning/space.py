"""A rule's knob space as a MetaSchedule search space (``ScheduleFn``).

Every knob field with more than one candidate is drawn with ``sch.sample_categorical`` over the
*indices* of its candidates (so knobs of any type, tiles included, can be sampled); the rule's
own ``schedule`` then runs with the drawn values.  Fields named in the rule's
``structural_knobs`` change the PrimFunc itself (``prepare``), so each of their combinations is
a separate workload (:meth:`KnobSpace.workload`) with those values fixed.

Why ReplayFunc and not EvolutionarySearch: the schedule primitives take the *Python* values of
the knobs (loop split factors, layout lambdas, which blocks exist), not the sampled random
variables, so a trace whose categorical decision is mutated and replayed would still apply the
old split factors -- its decisions would no longer describe the schedule that was measured.
ReplayFunc re-runs this space function for every candidate, so every trace is consistent with
its decisions, and a stored record replays exactly (``Trace.apply_to_schedule``).  The cost model
(xgboost when installed, random otherwise) is trained from the measurements but ReplayFunc draws
candidates at random; with the small knob grids of these rules (tens of points) this is close to
an exhaustive search anyway.

The compiler does not replay traces: :meth:`KnobSpace.knobs_from_trace` reads the decisions back
into the rule's ``Knobs`` and the rule schedules the symbolic-M operator with them, through the
same code path as the defaults.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules.rule import BitnetRule

__all__ = ["KnobSpace", "knob_spaces", "pick_rule", "tunable"]

_SAMPLE = "SampleCategorical"


def pick_rule(rules: list, func: tirx.PrimFunc, target: Target) -> Any | None:
    """The first rule of ``rules`` (dispatch order) that claims ``func``, or None.

    Protocol rules are asked with ``accepts``; rules that still override ``apply`` are asked by
    calling it (a non-None schedule means they claim the function).
    """
    for rule in rules:
        if isinstance(rule, BitnetRule) and rule.follows_protocol():
            if rule.accepts(func, target):
                return rule
        elif rule.apply(func, target, False) is not None:
            return rule
    return None


def tunable(rule: Any, func: tirx.PrimFunc, target: Target) -> bool:
    """Whether ``rule`` follows the protocol and has at least one knob with a choice."""
    if not (isinstance(rule, BitnetRule) and rule.follows_protocol()):
        return False
    return any(len(values) > 1 for values in rule.knob_space(func, target).values())


@dataclass(frozen=True)
class KnobSpace:
    """The knobs of ``rule`` for one operator: ``fixed`` structural values, ``sampled`` fields.

    Attributes
    ----------
    rule : BitnetRule
        The rule (its ``knobs`` are the defaults).
    fixed : dict
        Structural knob values of this workload (see module doc).
    sampled : tuple of (field, candidates)
        Fields drawn by the schedule function, in draw order.
    """

    rule: BitnetRule
    fixed: dict = field(default_factory=dict)
    sampled: tuple[tuple[str, tuple], ...] = ()

    def knobs(self, values: dict) -> Any:
        """The rule's knobs with ``fixed`` and the drawn ``values`` replacing its defaults."""
        return dataclasses.replace(self.rule.knobs, **self.fixed, **values)

    def workload(self, func: tirx.PrimFunc) -> tirx.PrimFunc:
        """The PrimFunc this space schedules (``prepare`` with the structural values)."""
        return self.rule.prepare(func, self.knobs({}))

    def default_decisions(self) -> dict[str, int]:
        """Candidate index of each sampled field's default value."""
        return {name: values.index(getattr(self.rule.knobs, name)) for name, values in self.sampled}

    def schedule_fn(self, decisions: dict[str, int] | None = None) -> Callable:
        """A ``ScheduleFn`` body: draw the knobs (or take ``decisions``), then schedule."""

        def fn(sch: s_tir.Schedule) -> None:
            values = {}
            for name, candidates in self.sampled:
                n = len(candidates)
                forced = None if decisions is None else decisions[name]
                rv = sch.sample_categorical(list(range(n)), [1.0 / n] * n, decision=forced)
                values[name] = candidates[int(sch.get(rv))]
            self.rule.schedule(sch, self.knobs(values))

        return fn

    def knobs_from_trace(self, trace: s_tir.Trace) -> Any:
        """The knobs a trace made by :meth:`schedule_fn` was scheduled with.

        Raises
        ------
        ValueError
            When the trace's categorical draws do not fit this space (a foreign record).
        """
        draws = [int(trace.get_decision(i)) for i in trace.insts if i.kind.name == _SAMPLE]
        if len(draws) != len(self.sampled):
            raise ValueError(
                f"trace has {len(draws)} categorical draws, the {type(self.rule).__name__} "
                f"space has {len(self.sampled)} knobs"
            )
        values = {}
        for (name, candidates), index in zip(self.sampled, draws, strict=True):
            if not 0 <= index < len(candidates):
                raise ValueError(f"decision {index} out of range for knob {name!r}")
            values[name] = candidates[index]
        return self.knobs(values)


def knob_spaces(rule: BitnetRule, func: tirx.PrimFunc, target: Target) -> list[KnobSpace]:
    """One :class:`KnobSpace` per combination of ``rule``'s structural knob values for ``func``."""
    space = rule.knob_space(func, target)
    structural = [name for name in rule.structural_knobs if name in space]
    sampled = tuple(
        (name, tuple(values))
        for name, values in space.items()
        if name not in structural and len(values) > 1
    )
    combos = itertools.product(*(space[name] for name in structural))
    return [KnobSpace(rule, dict(zip(structural, combo, strict=True)), sampled) for combo in combos]
