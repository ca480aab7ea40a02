"""The tuning database's manifest: what a finished ``tune`` of a model found, for a quick rerun.

Tuning a model again first has to import it, run the graph passes, prepare every structural
knob combination of every operator and load the database (seconds on a 2B model) only to find
every task stored.  ``DIR/bitnet_tvm_manifest.json`` remembers, per *tune key*, the summary rows
of the last complete ``tune`` and the workloads (structural hashes) they were read from::

    {"format": "bitnet-tvm-tuning-manifest", "version": 1,
     "entries": {KEY: {"tasks": [TaskResult dicts], "workloads": [hash, ...]}},
     "files": {PATH: {"size": .., "mtime_ns": .., "sha256": ..}},
     "roofs": {TARGET: {"read_gbs": .., "int8_ops": ..}}}

KEY hashes everything the tasks depend on: the model's content (an ONNX file's bytes, an
``onnx.ModelProto``'s serialization or an ``IRModule``'s structural hash), the target, the
buckets, operators, scheme and options asked for, the TVM version and the source of the
bitnet-tvm modules that shape the tasks (import, graph passes, rules, tuner: a change there
re-plans).  An entry is used only while the database still holds all of its workloads
(:func:`~.database.stored_workloads`, which also rejects a database that would be ignored).
An ONNX file's external weight data is not hashed: weights do not change the operators.
``files`` caches the content hash of model files by size and modification time, ``roofs`` the
machine's measured roofs (:mod:`bitnet_tvm.bench.roofline`) per target.

The manifest is written atomically; one that cannot be read is reported with a
:class:`~.database.TuningDatabaseWarning` and ignored (then rewritten).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.tuning.database import TuningDatabaseWarning, stored_workloads

__all__ = ["MANIFEST", "Manifest", "code_fingerprint"]

MANIFEST = "bitnet_tvm_manifest.json"
FORMAT = "bitnet-tvm-tuning-manifest"
VERSION = 1
#: Modules and packages whose source decides the workloads (import, graph passes) and the
#: rules' knob spaces and measurements.
_SOURCES = (
    "bitnet_tvm.compiler",
    "bitnet_tvm.schemes",
    "bitnet_tvm.reference",
    "bitnet_tvm.frontend",
    "bitnet_tvm.relay_passes",
    "bitnet_tvm.schedules",
    "bitnet_tvm.tuning",
)


@functools.cache
def code_fingerprint() -> str:
    """SHA-256 over the Python source that shapes tuning tasks (see ``_SOURCES``) and TVM's
    version."""
    import importlib.util

    import tvm

    digest = hashlib.sha256(tvm.__version__.encode())
    for name in _SOURCES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for path in files:
            digest.update(f"{name}:{path.relative_to(origin.parent)}".encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


class Manifest:
    """The manifest of the database in ``directory`` (see module doc).

    Parameters
    ----------
    directory : path
        The tuning database directory (need not exist).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        self.path = self.directory / MANIFEST
        self.data: dict[str, Any] = {"entries": {}, "files": {}, "roofs": {}}
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or (data.get("format"), data.get("version")) != (
                FORMAT,
                VERSION,
            ):
                raise ValueError(f"not a {FORMAT} v{VERSION} file")
            for part in self.data:
                if not isinstance(data.get(part), dict):
                    raise ValueError(f"{part!r} is not an object")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            warnings.warn(
                f"tuning manifest {self.path}: {err}; ignoring it (the model is planned again)",
                TuningDatabaseWarning,
                stacklevel=2,
            )
            return
        self.data = {part: data[part] for part in self.data}

    # ---------------------------------------------------------------- keys
    def model_fingerprint(self, model: Any) -> str:
        """A content hash of ``model`` (ONNX path, ``onnx.ModelProto`` or ``tvm.IRModule``)."""
        if isinstance(model, (str, os.PathLike)):
            path = Path(model).resolve()
            stat = path.stat()
            known = self.data["files"].get(str(path))
            if (
                isinstance(known, dict)
                and known.get("size") == stat.st_size
                and known.get("mtime_ns") == stat.st_mtime_ns
                and isinstance(known.get("sha256"), str)
            ):
                return known["sha256"]
            with path.open("rb") as f:
                sha = hashlib.file_digest(f, "sha256").hexdigest()
            self.data["files"][str(path)] = {
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": sha,
            }
            return sha
        if hasattr(model, "SerializeToString"):  # onnx.ModelProto
            return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
        import tvm_ffi

        return f"irmodule-{int(tvm_ffi.structural_hash(model)):x}"

    def key(self, model: Any, target: str, **options: Any) -> str:
        """The tune key of ``model`` for ``target`` and the ``tune`` options that shape tasks."""
        parts = {
            "model": self.model_fingerprint(model),
            "target": target,
            "code": code_fingerprint(),
            **{name: repr(value) for name, value in sorted(options.items())},
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    # ---------------------------------------------------------------- entries
    def lookup(self, key: str) -> list[dict] | None:
        """The stored task rows of ``key``, or None (unknown, or the database lost workloads)."""
        entry = self.data["entries"].get(key)
        if not isinstance(entry, dict):
            return None
        tasks, workloads = entry.get("tasks"), entry.get("workloads")
        if not isinstance(tasks, list) or not isinstance(workloads, list):
            return None
        stored = stored_workloads(self.directory)
        if stored is None or not set(workloads) <= stored:
            return None
        return tasks

    def store(self, key: str, tasks: list[dict], workloads: list[str]) -> None:
        """Remember the rows of a complete ``tune`` and the workloads they came from."""
        self.data["entries"][key] = {"tasks": tasks, "workloads": sorted(set(workloads))}

    def roofs(self, target: str) -> dict | None:
        """The roofs measured for ``target`` on this machine, if any."""
        found = self.data["roofs"].get(target)
        return found if isinstance(found, dict) else None

    def set_roofs(self, target: str, roofs: dict) -> None:
        """Remember the roofs measured for ``target``."""
        self.data["roofs"][target] = roofs

    def save(self) -> None:
        """Write the manifest (atomically; a concurrent writer's last save wins)."""
        with atomic_open(self.path) as f:
            json.dump({"format": FORMAT, "version": VERSION, **self.data}, f, allow_nan=True)
