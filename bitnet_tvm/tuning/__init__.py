"""Autotuning of bitnet-tvm's schedule templates with MetaSchedule.

``tune(model, target, trials=..., db=...)`` tunes every distinct operator of a model per
token-count bucket and stores the results in a persistent database that
``compile_model(..., tuning_db=...)`` applies.  One job per module:

- :mod:`~.buckets`    -- the M buckets (the one place that names them);
- :mod:`~.workloads`  -- distinct operators of a model, per-bucket instances;
- :mod:`~.space`      -- a rule's knob space as a MetaSchedule ``ScheduleFn``;
- :mod:`~.database`   -- the persistent JSON database (validation, atomic writes);
- :mod:`~.manifest`   -- what a finished ``tune`` found, so a rerun answers without planning;
- :mod:`~.roof`       -- a tuned kernel's % of the roofline and the tuning goal;
- :mod:`~.rpc`        -- builder/runner, local or over a TVM RPC tracker;
- :mod:`~.tuner`      -- ``tune`` itself; :mod:`~.report` its summary;
- :mod:`~.apply`, :mod:`~.stitch` -- the compiler's side (per-bucket variants, M dispatch);
- :mod:`~.cli`        -- the ``bitnet-tvm tune`` sub-command.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUCKETS", "TuneReport", "TuningDatabase", "TuningDatabaseWarning", "tune"]


def __getattr__(name: str) -> Any:
    # Lazy: the schedule stage imports this package; MetaSchedule loads only when tuning.
    if name == "tune":
        from bitnet_tvm.tuning.tuner import tune

        return tune
    if name == "TuneReport":
        from bitnet_tvm.tuning.report import TuneReport

        return TuneReport
    if name in ("TuningDatabase", "TuningDatabaseWarning"):
        from bitnet_tvm.tuning import database

        return getattr(database, name)
    if name == "BUCKETS":
        from bitnet_tvm.tuning.buckets import BUCKETS

        return BUCKETS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
