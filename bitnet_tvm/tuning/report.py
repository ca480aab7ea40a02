"""What ``tune`` did: per task default and tuned time, and the summary table."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from bitnet_tvm.tuning.roof import GOAL_PCT, GOAL_SPEEDUP, MAX_PCT

__all__ = ["TaskResult", "TuneReport"]


def _us(secs: float | None) -> float | None:
    return None if secs is None or not math.isfinite(secs) else secs * 1e6


@dataclass(frozen=True)
class TaskResult:
    """One operator x bucket (x structural knobs) task.

    Attributes
    ----------
    kernel : str
        Operator and shape (``ternary_int8_matmul n=.. k=..``).
    names : list of str
        The model's functions running this operator.
    bucket : str
        Bucket name and M range; ``m`` is the M measured.
    rule : str
        The rule scheduling it (None: no rule of ours claims it).
    default_us, tuned_us : float or None
        Measured times (mean of the repeats); None when not measured (nothing to tune).
    knobs : dict or None
        The tuned knobs.
    cached : bool
        Taken from the database (no work done).
    fixed : dict
        The structural knobs of the tuned workload.
    cold_us : float or None
        The tuned kernel measured cold (:mod:`~.inputs`; DRAM-bound kernels: the
        roofline % is taken from it).
    bytes, ops : int or None
        Bytes the instance moves at least and its int8 operations (see :mod:`~.roof`).
    roofline_pct : float or None
        Roofline time over the tuned time, in % (None: roofs not measured, e.g. over RPC).
    bound : str or None
        The roof that bounds it: ``"dram"`` (read bandwidth) or ``"int8"`` (peak vpdpbusd).
    meets : bool or None
        Tuned >= 1.1x the default or >= 90 % of the roofline (None: not measured).
    """

    kernel: str
    names: list[str]
    bucket: str
    m: int
    rule: str | None
    default_us: float | None
    tuned_us: float | None
    knobs: dict | None
    cached: bool
    fixed: dict = field(default_factory=dict)
    cold_us: float | None = None
    bytes: int | None = None
    ops: int | None = None
    roofline_pct: float | None = None
    bound: str | None = None
    meets: bool | None = None

    @property
    def speedup(self) -> float | None:
        """Default time over tuned time."""
        if self.default_us is None or self.tuned_us is None or self.tuned_us <= 0:
            return None
        return self.default_us / self.tuned_us

    @classmethod
    def of(cls, task: Any, default_secs, tuned_secs, knobs, cached: bool) -> TaskResult:
        """From a tuner task (see :mod:`~.tuner`)."""
        fixed = {k: repr(v) for k, v in task.space.fixed.items()} if task.space else {}
        return cls(
            kernel=task.workload.describe(),
            names=list(task.workload.names),
            bucket=f"{task.bucket.name} ({task.bucket.label()})",
            m=task.bucket.tune_m,
            rule=type(task.rule).__name__ if task.rule is not None else None,
            default_us=_us(default_secs),
            tuned_us=_us(tuned_secs),
            knobs=_knob_dict(knobs),
            cached=cached,
            fixed=fixed,
        )

    def to_dict(self) -> dict:
        """JSON-able form (with ``speedup``)."""
        return {**dataclasses.asdict(self), "speedup": self.speedup}

    @classmethod
    def from_dict(cls, data: dict, cached: bool | None = None) -> TaskResult:
        """Inverse of :meth:`to_dict` (``cached`` overrides the stored flag when given)."""
        names = {f.name for f in dataclasses.fields(cls)}
        row = cls(**{k: v for k, v in data.items() if k in names})
        return row if cached is None else dataclasses.replace(row, cached=cached)


def _knob_dict(knobs: Any) -> dict | None:
    if knobs is None:
        return None
    if dataclasses.is_dataclass(knobs):
        return {f.name: repr(getattr(knobs, f.name)) for f in dataclasses.fields(knobs)}
    return {"value": repr(knobs)}


@dataclass(frozen=True)
class TuneReport:
    """The result of :func:`bitnet_tvm.tune`; ``str()`` is the per-kernel summary table."""

    target: str
    database: str
    where: str
    cost_model: str
    trials: int
    seconds: float
    tasks: list[TaskResult]
    tuned_now: int
    roofs: dict | None = None

    def to_dict(self) -> dict:
        """JSON-able form."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["tasks"] = [t.to_dict() for t in self.tasks]
        return out

    def __str__(self) -> str:
        head = (
            f"{'kernel':<42} {'bucket':<18} {'rule':<14} {'default µs':>11} {'tuned µs':>10} "
            f"{'speedup':>8} {'cold µs':>9} {'roof %':>7} {'goal':>4}"
        )
        lines = [head, "-" * len(head)]
        for t in self.tasks:
            default = f"{t.default_us:11.1f}" if t.default_us is not None else f"{'-':>11}"
            tuned = f"{t.tuned_us:10.1f}" if t.tuned_us is not None else f"{'-':>10}"
            speedup = f"{t.speedup:7.2f}x" if t.speedup is not None else f"{'-':>8}"
            note = (
                " (cached)"
                if t.cached
                else ("" if t.tuned_us is not None else " (nothing to tune)")
            )
            cold = f"{t.cold_us:9.1f}" if t.cold_us is not None else f"{'-':>9}"
            roof = f"{'-':>7}"
            if t.roofline_pct is not None:
                above = "+" if t.roofline_pct > MAX_PCT else " "
                roof = f"{t.roofline_pct:4.0f}{above}{t.bound[0]}"
            goal = {True: "yes", False: "NO", None: "-"}[t.meets]
            lines.append(
                f"{t.kernel:<42.42} {t.bucket:<18} {t.rule or 'none':<14.14} {default} {tuned} "
                f"{speedup} {cold} {roof} {goal:>4}{note}"
            )
        lines.append(
            f"{self.tuned_now} task(s) tuned, {sum(t.cached for t in self.tasks)} from the "
            "database, "
            f"{self.seconds:.1f} s; target {self.target}; measured {self.where}; cost model "
            f"{self.cost_model}; database {self.database}"
        )
        if self.roofs:
            lines.append(
                f"roof %: of the roofline (d: DRAM read {self.roofs['read_gbs']:.1f} GB/s, "
                f"i: peak int8 {self.roofs['int8_ops'] / 1e9:.0f} GOPS); goal: >= "
                f"{GOAL_SPEEDUP}x or >= {GOAL_PCT:.0f} % of the roofline (d: timed cold, "
                "weights from DRAM); +: above the roof (the LUT kernels replace multiply-adds by "
                "table lookups)"
            )
        return "\n".join(lines)
