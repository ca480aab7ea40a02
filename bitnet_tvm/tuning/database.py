"""The persistent tuning database: a MetaSchedule JSON database in one directory.

Layout of ``DIR`` (default :func:`default_db_dir`, ``$XDG_CACHE_HOME/bitnet-tvm/tuning`` or
``~/.cache/bitnet-tvm/tuning``)::

    DIR/bitnet_tvm_tuning.json          {"format": "bitnet-tvm-tuning", "version": 1, ...}
    DIR/database_workload.json          MetaSchedule JSONDatabase workloads (one JSON per line)
    DIR/database_tuning_record.json     MetaSchedule JSONDatabase records

Records are keyed by workload (the specialized, hinted operator of one M bucket, by structural
equality) and by target (its string).  The files are read once into memory; :meth:`save`
rewrites them through a temporary JSONDatabase and renames each into place (the workload file
first; both are append-ordered, so a reader never sees a record without its workload).

A database that cannot be read -- unparsable lines, a record naming a missing workload, a marker
file of another tool or version, database files without the marker -- is reported with a
:class:`TuningDatabaseWarning` naming the file and the problem, and treated as empty; ``save``
then moves the bad files aside (``*.bad``) before writing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from statistics import fmean

import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from bitnet_tvm.atomic import atomic_open

__all__ = ["TuningDatabase", "TuningDatabaseWarning", "default_db_dir", "stored_workloads"]

FORMAT = "bitnet-tvm-tuning"
VERSION = 1
MARKER = "bitnet_tvm_tuning.json"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


class TuningDatabaseWarning(UserWarning):
    """A tuning database could not be used (it is ignored)."""


def default_db_dir() -> Path:
    """``$XDG_CACHE_HOME/bitnet-tvm/tuning`` (``~/.cache`` when unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "bitnet-tvm" / "tuning"


def _mean(record: ms.database.TuningRecord) -> float:
    secs = [float(s) for s in record.run_secs or ()]
    return fmean(secs) if secs else float("inf")


class TuningDatabase:
    """Tuning records of one directory, in memory.

    Parameters
    ----------
    directory : path
        The database directory (need not exist).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        self._index: dict[int, list[tuple[tvm.IRModule, list]]] = {}
        self._records: list[ms.database.TuningRecord] = []
        self._bad: list[Path] = []
        self._load()

    # ---------------------------------------------------------------- reading
    def _warn(self, path: Path, problem: str) -> None:
        warnings.warn(
            f"tuning database {path}: {problem}; ignoring the database (rule defaults are used)",
            TuningDatabaseWarning,
            stacklevel=3,
        )
        self._bad = [self.directory / name for name in (MARKER, WORKLOADS, RECORDS)]

    def _load(self) -> None:
        marker, workloads, records = (self.directory / n for n in (MARKER, WORKLOADS, RECORDS))
        if not workloads.exists() and not records.exists():
            return
        problem = _marker_problem(marker) or _check_lines(workloads, records)
        if problem is not None:
            self._warn(*problem)
            return
        _register_our_intrinsics()
        for _attempt in range(8):
            try:
                loaded = ms.database.JSONDatabase(str(workloads), str(records), allow_missing=True)
                all_records = list(loaded.get_all_tuning_records())
                break
            except Exception as err:  # TVM reports malformed JSON objects as FFI errors
                if _register_missing_intrinsic(str(err)):
                    continue  # a trace names an intrinsic our rules register on demand
                self._warn(records, f"MetaSchedule could not load it ({type(err).__name__}: {err})")
                return
        for record in all_records:
            self._add(record)

    def _add(self, record: ms.database.TuningRecord) -> None:
        self._records.append(record)
        self._entry(record.workload.mod, create=True).append(record)

    def _entry(self, mod: tvm.IRModule, create: bool = False) -> list:
        """The records of workload ``mod`` (structural equality; hashed)."""
        key = int(tvm_ffi.structural_hash(mod))
        entries = self._index.setdefault(key, []) if create else self._index.get(key, [])
        for known, records in entries:
            if tvm_ffi.structural_equal(known, mod):
                return records
        if not create:
            return []
        entries.append((mod, []))
        return entries[-1][1]

    # ---------------------------------------------------------------- queries
    def records(self, mod: tvm.IRModule, target: tvm.target.Target) -> list:
        """Records of workload ``mod`` for ``target``, fastest (mean run time) first."""
        key = str(target)
        return sorted((r for r in self._entry(mod) if str(r.target) == key), key=_mean)

    def best(self, mod: tvm.IRModule, target: tvm.target.Target):
        """The fastest record of ``mod`` for ``target`` and its mean run time (s), or None."""
        found = self.records(mod, target)
        return (found[0], _mean(found[0])) if found else None

    def __len__(self) -> int:
        return len(self._records)

    # ---------------------------------------------------------------- writing
    def commit(
        self,
        mod: tvm.IRModule,
        trace,
        run_secs: list[float],
        target: tvm.target.Target,
        args_info: list,
    ) -> None:
        """Add one measured schedule of ``mod`` (kept in memory until :meth:`save`)."""
        workload = ms.database.Workload(mod)
        secs = [float(s) for s in run_secs]
        self._add(ms.database.TuningRecord(trace, workload, secs, target, args_info))

    def save(self) -> None:
        """Write every record to the directory (atomic per file; see module doc)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self._bad:
            if path.exists():
                os.replace(path, path.with_name(path.name + ".bad"))
        self._bad = []
        with tempfile.TemporaryDirectory(dir=self.directory, prefix=".tmp-") as tmp:
            staged = ms.database.JSONDatabase(work_dir=tmp)
            for record in self._records:
                workload = staged.commit_workload(record.workload.mod)
                staged.commit_tuning_record(
                    ms.database.TuningRecord(
                        record.trace, workload, record.run_secs, record.target, record.args_info
                    )
                )
            del staged
            with atomic_open(self.directory / MARKER) as f:
                json.dump({"format": FORMAT, "version": VERSION, "tvm": tvm.__version__}, f)
            for name in (WORKLOADS, RECORDS):
                source = Path(tmp) / name
                if not source.exists():
                    source.write_text("")
                os.replace(source, self.directory / name)


def _register_our_intrinsics() -> None:
    """Register the tensor intrinsics our CPU rules define at import (traces name them)."""
    import bitnet_tvm.schedules.cpu  # noqa: F401


def _register_missing_intrinsic(message: str) -> bool:
    """Register an intrinsic our rules create on demand, when ``message`` says it is missing.

    Traces of tensorized schedules name their intrinsic, and MetaSchedule must find it to load
    them; the LUT intrinsics are registered per ``kc`` when a schedule first uses them.
    """
    found = re.search(r"TensorIntrin '([^']+)' is not registered", message)
    if found is None:
        return False
    lut = re.fullmatch(r"bitnet_lut_ternary_int4_kc(\d+)", found.group(1))
    if lut is None:
        return False
    from bitnet_tvm.schedules.cpu.intrin_lut import lut_intrin

    lut_intrin(int(lut.group(1)))
    return True


def stored_workloads(directory: str | os.PathLike[str]) -> set[str] | None:
    """Structural hashes of the workloads a sound database in ``directory`` holds, or None when
    it is missing or would be ignored (a quick check: the records are not loaded)."""
    directory = Path(directory)
    hashes: set[str] = set()
    names = (directory / MARKER, directory / WORKLOADS, directory / RECORDS)
    if _marker_problem(names[0]) or _check_lines(*names[1:], hashes=hashes):
        return None
    return hashes


def _marker_problem(marker: Path) -> tuple[Path, str] | None:
    """``(file, problem)`` when ``marker`` is not our marker file, or None."""
    if not marker.exists():
        return marker, "missing: these database files were not written by bitnet-tvm"
    try:
        meta = json.loads(marker.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
    except (OSError, ValueError, AttributeError) as err:
        return marker, f"not a {FORMAT} v{VERSION} marker ({err})"
    return None


def _check_lines(
    workloads: Path, records: Path, hashes: set[str] | None = None
) -> tuple[Path, str] | None:
    """``(file, problem)`` for the first line MetaSchedule could not take, or None; the
    workloads' structural hashes go to ``hashes`` when given."""
    count = 0
    for path, check in ((workloads, _workload_line), (records, _record_line)):
        if not path.exists():
            return path, "missing (the other database file is there)"
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            return path, f"unreadable ({err})"
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
                check(value, count)
            except ValueError as err:
                return path, f"line {number}: {err}"
            if path == workloads:
                count += 1
                if hashes is not None:
                    hashes.add(value[0])
    return None


def _workload_line(value: object, _count: int) -> None:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ValueError("expected [structural hash, workload] strings")


def _record_line(value: object, count: int) -> None:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)):
        raise ValueError("expected [workload index, record]")
    if not 0 <= value[0] < count:
        raise ValueError(f"workload index {value[0]} out of range (file has {count})")
    if not isinstance(value[1], list):
        raise ValueError("record is not a list")
