"""``bitnet_tvm.tune``: tune every distinct operator of a model, per token-count bucket.

Steps: import the model and run the BitNet graph passes (:func:`bitnet_tvm.compiler.graph_module`,
the same code ``compile_model`` runs), extract the distinct operators
(:mod:`~.workloads`), and for each operator x bucket (a *task*):

0. before any of this: when the database's manifest (:mod:`~.manifest`) lists a complete
   earlier ``tune`` of the same model, target and options, return its summary at once (a
   second ``tune`` of the same model neither imports the model nor loads the database);
1. skip a task when the database already has records for it and the target (a second
   ``tune`` of the same model does no work);
2. stage 1, structural knobs (those ``prepare`` reads; each combination is its own workload):
   measure the rule's default knobs under the default's combination and under up to
   :data:`MAX_STRUCTURAL` - 1 others, all stored (so the tuned choice is never slower than the
   default as measured);
3. stage 2: run MetaSchedule (``ScheduleFn`` over the sampled knobs of the fastest
   combination, ``ReplayFunc``: see :mod:`~.space`) for ``trials`` candidates, and store the
   best records.

The database is saved after every task, so an interrupted run keeps what it finished; the
manifest entry is written when every task finished.  Each tuned kernel is judged against the
roofline (:mod:`~.roof`; the roofs are measured once per machine and target and kept in the
manifest; not over RPC).
Operators whose rule has nothing to tune (no knob with a choice, or a rule that still overrides
``apply``) keep their defaults and are listed as such.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from statistics import fmean

import onnx
import tvm
import tvm_ffi
from tvm import s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from bitnet_tvm.schedules.dispatch import bitnet_rules
from bitnet_tvm.tuning.buckets import Bucket, get_buckets
from bitnet_tvm.tuning.database import TuningDatabase, TuningDatabaseWarning, default_db_dir
from bitnet_tvm.tuning.inputs import activation_zeros
from bitnet_tvm.tuning.manifest import Manifest
from bitnet_tvm.tuning.report import TaskResult, TuneReport
from bitnet_tvm.tuning.roof import judge, kernel_cost
from bitnet_tvm.tuning.rpc import Measurer
from bitnet_tvm.tuning.space import KnobSpace, knob_spaces, pick_rule, tunable
from bitnet_tvm.tuning.workloads import (
    Workload,
    extract_workloads,
    hinted,
    instance_module,
    workload_key,
)

__all__ = ["tune"]

log = logging.getLogger(__name__)

#: Structural knob combinations measured per task (the default's first; see _tune_one).
MAX_STRUCTURAL = 4
#: Rounds of the cold measurement of a DRAM-bound kernel (see :mod:`~.inputs`).
COLD_REPEATS = 10
#: Measurer settings of a cold measurement.
COLD = {"number": 1, "repeat": COLD_REPEATS, "min_repeat_ms": 0, "cache_flush": True}
#: Records kept per tuned task (the fastest ones; the default's record is kept as well).
KEEP_RECORDS = 4


def cost_model_name() -> str:
    """``"xgb"`` when xgboost can be imported, ``"random"`` otherwise."""
    return "xgb" if importlib.util.find_spec("xgboost") is not None else "random"


@dataclass
class _Task:
    """One operator x bucket: its structural knob spaces (default first) and the chosen one."""

    workload: Workload
    bucket: Bucket
    rule: object
    spaces: list[KnobSpace] = field(default_factory=list)
    space: KnobSpace | None = None
    result: TaskResult = field(default=None)  # type: ignore[assignment]

    def module(self, space: KnobSpace) -> tvm.IRModule:
        """The stored workload of ``space`` (``prepare`` can take a second: memoized)."""
        key = (
            workload_key(self.workload.func),
            self.bucket.tune_m,
            type(space.rule).__name__,
            repr(sorted(space.fixed.items())),
        )
        if key not in _MODULES:
            func = hinted(self.workload.func, self.bucket.tune_m)
            _MODULES[key] = instance_module(space.workload(func), self.bucket.tune_m)
        return _MODULES[key]


_MODULES: dict[tuple, tvm.IRModule] = {}


class _Progress:
    """A one-line progress bar on stderr (trials measured of the trials planned)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.label = total, 0, enabled and total > 0, ""
        self.start = time.perf_counter()

    def update(self, count: int = 0, label: str | None = None) -> None:
        self.done += count
        if label is not None:
            self.label = label
        if not self.enabled:
            return
        width = 24
        filled = width * min(self.done, self.total) // max(self.total, 1)
        elapsed = time.perf_counter() - self.start
        line = (
            f"\rtune [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} trials "
            f"{elapsed:5.0f} s  {self.label}"
        )
        sys.stderr.write(line[:160].ljust(100))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


@derived_object
class _CountTrials(ms.measure_callback.PyMeasureCallback):
    def __init__(self, progress: _Progress) -> None:
        self.progress = progress

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.progress.update(len(measure_candidates))


@contextlib.contextmanager
def _without_tvm_tensor_intrinsics():
    """Let ``TuneContext`` skip importing ``tvm.s_tir.tensor_intrin``.

    That import registers every tensor intrinsic TVM ships by parsing TVMScript (25 s on a
    quiet 2-core machine, 90 s on a loaded one); our search spaces tensorize with intrinsics
    our own rules register.  A stand-in module is visible only while the context is built.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    sys.modules[name] = types.ModuleType(name)
    try:
        yield
    finally:
        del sys.modules[name]


def _resolve_target(target) -> tvm.target.Target:
    from bitnet_tvm.compiler import resolve_target

    return resolve_target(target)


def _check_model(model) -> None:
    if not isinstance(model, (str, os.PathLike, onnx.ModelProto, tvm.IRModule)):
        raise TypeError(
            f"model must be an ONNX path, an onnx.ModelProto or an IRModule, got {model!r}"
        )


def _module(model, target: tvm.target.Target, scheme) -> tvm.IRModule:
    if isinstance(model, tvm.IRModule):
        return model
    from bitnet_tvm.compiler import graph_module
    from bitnet_tvm.schemes import get_scheme

    return graph_module(model, target, get_scheme(scheme) if scheme is not None else None)


def _structural_choices(rule, spaces: list[KnobSpace], seed: int) -> list[KnobSpace]:
    """The default's structural combination first, then up to ``MAX_STRUCTURAL - 1`` others
    (a seeded sample when there are more)."""
    default = [sp for sp in spaces if all(getattr(rule.knobs, k) == v for k, v in sp.fixed.items())]
    rest = [sp for sp in spaces if sp not in default]
    if len(rest) > MAX_STRUCTURAL - 1:
        rest = random.Random(seed).sample(rest, MAX_STRUCTURAL - 1)
    return default[:1] + rest


def _plan(workloads: list[Workload], buckets, target, rules, seed: int) -> list[_Task]:
    tasks = []
    for workload in workloads:
        for bucket in buckets:
            func = hinted(workload.func, bucket.tune_m)
            rule = pick_rule(rules, func, target)
            task = _Task(workload, bucket, rule)
            if rule is not None and tunable(rule, func, target):
                task.spaces = _structural_choices(rule, knob_spaces(rule, func, target), seed)
            tasks.append(task)
    return tasks


def _default_schedule(space: KnobSpace, mod: tvm.IRModule) -> s_tir.Schedule:
    sch = s_tir.Schedule(mod)
    space.schedule_fn(space.default_decisions())(sch)
    return sch


def _from_db(task: _Task, db: TuningDatabase, target) -> TaskResult | None:
    """The task's result from stored records (fastest over its structural spaces), or None."""
    best = None
    default_secs = None
    for index, space in enumerate(task.spaces):
        records = db.records(task.module(space), target)
        if not records:
            continue
        if best is None or _secs(records[0].run_secs) < _secs(best[1].run_secs):
            best = (space, records[0])
        if index == 0:  # the default's structural values: find the default's own record
            default = space.knobs({})
            for record in records:
                with contextlib.suppress(ValueError):
                    if space.knobs_from_trace(record.trace) == default:
                        default_secs = _secs(record.run_secs)
                        break
    if best is None:
        return None
    task.space = best[0]
    knobs = best[0].knobs_from_trace(best[1].trace)
    return TaskResult.of(task, default_secs, _secs(best[1].run_secs), knobs, True)


def _secs(run_secs) -> float:
    """Mean run time (the database ranks records by it too)."""
    values = [float(s) for s in run_secs or ()]
    return fmean(values) if values else float("inf")


def _measure_default(task, space, target, measurer, db) -> float:
    mod = task.module(space)
    args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    sch = _default_schedule(space, mod)
    device_type = "cpu" if target.kind.name == "llvm" else target.kind.name
    secs = measurer.measure(sch.mod, target, device_type, args_info)
    db.commit(mod, sch.trace, secs, target, args_info)
    return _secs(secs)


def _tune_one(task, target, trials, measurer, db, progress, cost_model, seed) -> TaskResult:
    """Stage 1: the default knobs of each structural choice; stage 2: MetaSchedule over the
    sampled knobs of the fastest one."""
    timed = []
    for space in task.spaces:
        try:
            timed.append((_measure_default(task, space, target, measurer, db), space))
        except RuntimeError as err:  # a structural choice that does not build or run
            log.warning("tune: %s: %s", space.fixed, err)
    if not timed:
        raise RuntimeError("no structural choice built and ran")
    default_secs = timed[0][0] if timed[0][1] is task.spaces[0] else None
    best_secs, space = min(timed, key=lambda pair: pair[0])
    task.space = space
    best_knobs = space.knobs({})  # never worse than the default as measured
    if not space.sampled:
        return TaskResult.of(task, default_secs, best_secs, best_knobs, False)
    mod = task.module(space)
    generator = ms.space_generator.ScheduleFn(
        space.schedule_fn(), sch_rules=[], postprocs=[], mutator_probs={}
    )
    with _without_tvm_tensor_intrinsics():
        context = ms.TuneContext(
            mod,
            target=target,
            space_generator=generator,
            search_strategy=ms.search_strategy.ReplayFunc(),
            task_name=task.workload.op,
            rand_state=seed,
            num_threads=1,
        )
    with tempfile.TemporaryDirectory(prefix="bitnet-tune-") as work_dir:
        memory = ms.tune.tune_tasks(
            tasks=[context],
            task_weights=[1.0],
            work_dir=work_dir,
            max_trials_global=trials,
            num_trials_per_iter=min(trials, 8),
            builder=measurer.builder,
            runner=measurer.runner,
            database=ms.database.MemoryDatabase(),
            cost_model=cost_model,
            measure_callbacks=[
                *ms.measure_callback.MeasureCallback.create("default"),
                _CountTrials(progress),
            ],
            task_scheduler="round-robin",
        )
    tuned = []
    if memory.has_workload(mod):
        tuned = list(memory.get_top_k(memory.commit_workload(mod), KEEP_RECORDS))
    args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    for record in tuned:
        db.commit(mod, record.trace, record.run_secs, target, args_info)
        if _secs(record.run_secs) < best_secs:
            best_secs = _secs(record.run_secs)
            best_knobs = space.knobs_from_trace(record.trace)
    return TaskResult.of(task, default_secs, best_secs, best_knobs, False)


def tune(
    model: str | os.PathLike[str] | onnx.ModelProto | tvm.IRModule,
    target: str | dict | tvm.target.Target = "llvm",
    trials: int = 16,
    db: str | os.PathLike[str] | None = None,
    *,
    rpc: str | None = None,
    device_key: str | None = None,
    buckets: str | list[str] | None = None,
    ops: str | list[str] | None = None,
    scheme: str | None = None,
    progress: bool = True,
    seed: int = 0,
    roofline: bool = True,
) -> TuneReport:
    """Tune the distinct operators of ``model`` for ``target`` into the database ``db``.

    Parameters
    ----------
    model : path, onnx.ModelProto or tvm.IRModule
        An ONNX BitNet model (as for :func:`bitnet_tvm.compile_model`), or a module holding our
        operators (PrimFuncs with a ``bitnet.op`` attribute).
    target : str, dict or tvm.target.Target
        As for ``compile_model`` (``"llvm"``: this host's CPU).
    trials : int
        Candidates measured per task (operator x bucket x structural knobs), besides the
        default.
    db : path, optional
        Database directory; default :func:`~.database.default_db_dir`.
    rpc, device_key : str, optional
        Measure on a device of a TVM RPC tracker (``HOST:PORT``) registered with this key.
    buckets : str or list of str, optional
        Bucket names to tune (see :mod:`~.buckets`); default all.
    ops : str or list of str, optional
        Tune only these operators (``bitnet.op`` names, comma-separated); default all.
    scheme : str, optional
        Re-quantization scheme, as for ``compile_model`` (tune what you compile).
    progress : bool
        Draw a progress bar on stderr.
    seed : int
        Random seed of the search.
    roofline : bool
        Judge the tuned kernels against this machine's roofline (:mod:`~.roof`; the first
        time measures the roofs, ~5 s, and DRAM-bound kernels are timed again cold); not over
        RPC.

    Returns
    -------
    TuneReport
        Per task: default and tuned time, speedup, knobs; ``str()`` is the summary table.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive int, got {trials!r}")
    start = time.perf_counter()
    tvm_target = _resolve_target(target)
    chosen = get_buckets(buckets)
    measurer = Measurer(rpc=rpc, device_key=device_key)
    directory = db if db is not None else default_db_dir()
    wanted = None if ops is None else set(ops.split(",") if isinstance(ops, str) else ops)
    _check_model(model)
    manifest = Manifest(directory)
    options = {
        "buckets": [b.name for b in chosen],
        "ops": sorted(wanted) if wanted is not None else None,
        "scheme": scheme,
        "device_key": device_key,
        "roofline": roofline,
    }
    key = _manifest_key(manifest, model, tvm_target, options)
    rows = _manifest_rows(manifest, key)
    if rows is not None:  # a complete earlier run of the same model: nothing to plan
        return TuneReport(
            target=str(tvm_target),
            database=str(manifest.directory),
            where=measurer.where(),
            cost_model=cost_model_name(),
            trials=trials,
            seconds=time.perf_counter() - start,
            tasks=rows,
            tuned_now=0,
            roofs=manifest.roofs(_roofs_key(tvm_target)),
        )
    database = TuningDatabase(directory)
    log.info("tune: graph passes and operator extraction")
    workloads = extract_workloads(_module(model, tvm_target, scheme))
    if wanted is not None:
        workloads = [w for w in workloads if w.op in wanted]
    tasks = _plan(workloads, chosen, tvm_target, bitnet_rules(tvm_target), seed)
    pending = []
    for task in tasks:
        if not task.spaces:
            task.result = TaskResult.of(task, None, None, None, False)
            continue
        cached = _from_db(task, database, tvm_target)
        if cached is not None:
            task.result = cached
        else:
            pending.append(task)
    bar = _Progress(sum(trials for t in pending if any(sp.sampled for sp in t.spaces)), progress)
    cost_model = cost_model_name()
    measurers: dict[tuple, Measurer] = {}
    failed = False
    try:
        for index, task in enumerate(pending, start=1):
            label = f"[{index}/{len(pending)}] {task.workload.describe()} M={task.bucket.tune_m}"
            bar.update(label=label)
            try:
                task_measurer = _task_measurer(measurers, measurer, task, tvm_target)
                task.result = _tune_one(
                    task, tvm_target, trials, task_measurer, database, bar, cost_model, seed
                )
            except Exception as err:  # one bad task must not lose the others' results
                warnings.warn(
                    f"tuning {label} failed ({type(err).__name__}: {err}); it keeps its defaults",
                    stacklevel=2,
                )
                task.result = TaskResult.of(task, None, None, None, False)
                failed = True
            database.save()
    finally:
        bar.close()
    roofs = _roofs(manifest, tvm_target) if rpc is None and roofline else None
    cold = Measurer(**COLD)
    for task in tasks:
        if task.space is not None and task.result.tuned_us is not None:
            task.result = _judged(task, roofs, database, tvm_target, cold)
    if key is not None and not failed:
        hashes = [
            str(tvm_ffi.structural_hash(task.module(task.space)))
            for task in tasks
            if task.space is not None
        ]
        cached = [dataclasses.replace(task.result, cached=True).to_dict() for task in tasks]
        manifest.store(key, cached, hashes)
        _save_manifest(manifest)
    return TuneReport(
        target=str(tvm_target),
        database=str(database.directory),
        where=measurer.where(),
        cost_model=cost_model,
        trials=trials,
        seconds=time.perf_counter() - start,
        tasks=[task.result for task in tasks],
        tuned_now=len(pending),
        roofs=roofs,
    )


def _task_measurer(
    made: dict[tuple, Measurer], base: Measurer, task: _Task, target: tvm.target.Target
) -> Measurer:
    """How ``task``'s candidates are measured (:mod:`~.inputs`): with the activations of its
    operator and, for the decode bucket on a CPU, cold, since a model's weights stream from
    DRAM at decode while one kernel's weights measured warm sit in the last-level cache.
    ``made`` keeps one measurer (one runner process) per kind."""
    cold = task.bucket.tune_m == 1 and target.kind.name == "llvm"
    kind = (activation_zeros(task.workload.op), cold)
    if kind not in made:
        made[kind] = base.variant(zeros=kind[0], **(COLD if cold else {}))
    return made[kind]


def _judged(task, roofs, database, target, cold: Measurer) -> TaskResult:
    """``task.result`` with its cost and roofline verdict; a DRAM-bound kernel's roofline % is
    taken from a cold measurement (:mod:`~.inputs`) of its best record."""
    row = task.result
    zeros = activation_zeros(task.workload.op)
    cold = cold.variant(zeros=zeros) if zeros is not None else cold
    nbytes, nops = kernel_cost(task.module(task.space), zeros)
    verdict = judge(row.tuned_us, row.speedup, nbytes, nops, roofs)
    cold_us = None
    if verdict["bound"] == "dram":
        try:
            cold_us = _measure_cold(task, database, target, cold)
        except RuntimeError as err:
            log.warning("tune: cold measurement of %s failed: %s", task.workload.describe(), err)
        if cold_us is not None:
            verdict = judge(cold_us, row.speedup, nbytes, nops, roofs)
    return dataclasses.replace(row, bytes=nbytes, ops=nops, cold_us=cold_us, **verdict)


def _measure_cold(task, database, target, cold: Measurer) -> float | None:
    """µs (median of the rounds) of the task's best stored schedule, measured cold."""
    mod = task.module(task.space)
    best = database.best(mod, target)
    if best is None:
        return None
    sch = s_tir.Schedule(mod)
    best[0].trace.apply_to_schedule(sch, remove_postproc=False)
    args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    return statistics.median(cold.measure(sch.mod, target, "cpu", args_info)) * 1e6


def _manifest_key(manifest: Manifest, model, target: tvm.target.Target, options: dict):
    """The manifest's tune key of this call (see :mod:`~.manifest`); None when the model file
    cannot be read (the import then says what is wrong)."""
    try:
        return manifest.key(model, str(target), **options)
    except OSError:
        return None


def _manifest_rows(manifest: Manifest, key: str | None) -> list[TaskResult] | None:
    """The summary rows the manifest holds for ``key`` (None: none, or malformed)."""
    rows = manifest.lookup(key) if key is not None else None
    if rows is None:
        return None
    try:
        return [TaskResult.from_dict(row, cached=True) for row in rows]
    except (TypeError, AttributeError) as err:  # a hand-edited manifest
        warnings.warn(
            f"tuning manifest {manifest.path}: malformed entry ({err}); planning the model again",
            TuningDatabaseWarning,
            stacklevel=3,
        )
        return None


def _roofs_key(target: tvm.target.Target) -> str:
    from bitnet_tvm.machine import cpu_model

    return f"{cpu_model()} | {target}"


def _roofs(manifest: Manifest, target: tvm.target.Target) -> dict | None:
    """This machine's roofs for ``target`` (measured once, then kept in the manifest); None
    for non-CPU targets or when the probes fail."""
    if target.kind.name != "llvm":
        return None
    key = _roofs_key(target)
    found = manifest.roofs(key)
    if found is not None:
        return found
    from bitnet_tvm.bench.roofline import peak_int8_ops, read_bandwidth

    threads = int(target.attrs.get("num-cores", 0)) or None
    try:
        found = {"read_gbs": read_bandwidth(threads)}
        try:
            found["int8_ops"] = peak_int8_ops(threads)
        except RuntimeError:  # no VNNI on this CPU
            found["int8_ops"] = float("nan")
    except Exception as err:  # the roofline column is a report, never a reason to fail
        warnings.warn(f"tune: measuring the roofs failed ({err}); no roof % column", stacklevel=3)
        return None
    manifest.set_roofs(key, found)
    return found


def _save_manifest(manifest: Manifest) -> None:
    try:
        manifest.save()
    except OSError as err:
        warnings.warn(f"tune: could not write {manifest.path} ({err})", stacklevel=3)
