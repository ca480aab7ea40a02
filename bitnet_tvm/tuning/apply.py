"""The compiler's side of tuning: schedule each of our operators per M bucket, tuned or default.

For every PrimFunc with a ``bitnet.op`` attribute that a rule of the target claims:

* M symbolic and no ``bitnet.m_hint``: one variant per bucket (:data:`~.buckets.BUCKETS`),
  stitched into one PrimFunc that branches on M (:mod:`~.stitch`; CPU targets only -- CUDA
  keeps the decode variant, as before tuning existed);
* otherwise (static M, or a call site the graph passes hinted): the one bucket containing it.

A variant uses the fastest record of the tuning database for its (bucket instance, target)
when there is one and its decisions fit the rule's current knob space (else a warning and the
defaults), the rule's default knobs otherwise.  A tuned variant carries its knobs in the
:data:`TUNED` attribute, and the pass logs (INFO) how many variants use tuned records.
Rules that still override ``apply`` run as they are (with the bucket's ``m_hint``).
"""

from __future__ import annotations

import logging
import warnings

import tvm
from tvm import tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.tuning.buckets import BUCKETS, Bucket, bucket_for
from bitnet_tvm.tuning.database import TuningDatabase, TuningDatabaseWarning
from bitnet_tvm.tuning.space import knob_spaces, pick_rule, tunable
from bitnet_tvm.tuning.stitch import stitch
from bitnet_tvm.tuning.workloads import hinted, instance_module, symbolic_m

__all__ = ["TUNED", "best_knobs", "bucket_dispatch", "schedule_variant"]

log = logging.getLogger(__name__)

#: PrimFunc attribute of a variant scheduled with a database record: the tuned knobs (repr).
TUNED = "bitnet.tuned_knobs"


def best_knobs(rule, func: tirx.PrimFunc, bucket: Bucket, target: Target, db: TuningDatabase):
    """``(knobs, mean seconds)`` of the fastest stored record for ``func`` in ``bucket``, or None.

    ``func`` carries the bucket's ``m_hint``.  Every structural combination of the rule's knobs
    is its own workload; the fastest over all of them wins.
    """
    best = None
    for space in knob_spaces(rule, func, target):
        found = db.best(instance_module(space.workload(func), bucket.tune_m), target)
        if found is None:
            continue
        record, secs = found
        try:
            knobs = space.knobs_from_trace(record.trace)
        except ValueError as err:
            warnings.warn(
                f"tuning database {db.directory}: record for {attrs.get_op(func)} "
                f"({bucket.name}) does not fit {type(rule).__name__}: {err}; using defaults",
                TuningDatabaseWarning,
                stacklevel=2,
            )
            continue
        if best is None or secs < best[1]:
            best = (knobs, secs)
    return best


def schedule_variant(
    rules: list, func: tirx.PrimFunc, bucket: Bucket, target: Target, db: TuningDatabase | None
) -> tirx.PrimFunc | None:
    """``func`` scheduled for ``bucket`` (tuned knobs when stored), or None if no rule claims it."""
    func = hinted(func, bucket.tune_m)
    rule = pick_rule(rules, func, target)
    if rule is None:
        return None
    if not tunable(rule, func, target):
        sch = rule.apply(func, target, False)
    else:
        found = best_knobs(rule, func, bucket, target, db) if db is not None else None
        sch = rule.schedule_with(func, found[0] if found else rule.knobs)
        if found is not None:
            return _scheduled(sch).with_attr(TUNED, repr(found[0]))
    return _scheduled(sch)


def _scheduled(sch) -> tirx.PrimFunc:
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _buckets_of(func: tirx.PrimFunc, target: Target) -> tuple[Bucket, ...]:
    hint = attrs.get_int(func, attrs.M_HINT)
    if hint is not None:
        return (bucket_for(hint),)
    if symbolic_m(func) is None:
        dim = func.params[0].shape[0] if func.params else None
        return (bucket_for(int(dim)),) if isinstance(dim, tirx.IntImm) else (BUCKETS[0],)
    return BUCKETS if target.kind.name == "llvm" else (BUCKETS[0],)


def bucket_dispatch(
    rules: list, target: Target, db: TuningDatabase | None = None
) -> tvm.transform.Pass:
    """A module pass scheduling our operators per M bucket (see module doc)."""

    @tvm.transform.module_pass(opt_level=0, name="bitnet.bucket_dispatch")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates = {}
        used = [0, 0]  # variants scheduled from a database record, variants in all
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or attrs.get_op(func) is None:
                continue
            if func.attrs is not None and "tirx.is_scheduled" in func.attrs:
                continue
            variants = []
            for bucket in _buckets_of(func, target):
                variant = schedule_variant(rules, func, bucket, target, db)
                if variant is None:
                    break
                variants.append((bucket, variant))
                used[0] += bool(variant.attrs is not None and TUNED in variant.attrs)
                used[1] += 1
            else:  # every bucket scheduled (a rule claims the operator)
                updates[gv] = stitch(func, variants)
        if db is not None:
            log.info(
                "tuning database %s: %d of %d operator variants use tuned records",
                db.directory,
                *used,
            )
        if not updates:
            return mod
        mod = mod.clone()  # a pass must not change its input module
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass
