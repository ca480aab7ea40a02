"""Run a compiled BitNet model: onnxruntime's calling convention over a Relax VM.

This module imports only ``tvm.runtime`` (no compiler), so a saved artifact runs where just the
TVM runtime is installed.  An artifact is a directory written atomically::

    model.so         the compiled library (tvm.runtime.Executable.export_library)
    params.npz       the weights (packed ternary codes, scales, embeddings), kept out of the .so
    metadata.json    format version, target, inputs/outputs with symbolic shapes, compile report
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tvm
import tvm.runtime
import tvm.runtime.vm

from bitnet_tvm.errors import BitnetError

__all__ = ["FORMAT_VERSION", "CompiledModel", "load"]

FORMAT_VERSION = 1
_LIB, _PARAMS, _META = "model.so", "params.npz", "metadata.json"
log = logging.getLogger(__name__)


class CompiledModel:
    """A compiled model with ``run(output_names, input_feed)``, as an onnxruntime session has.

    Parameters
    ----------
    executable : tvm.runtime.Executable or tvm.runtime.Module
        The compiled VM executable (or the module loaded from ``model.so``).
    params : dict of str to numpy.ndarray
        Weights, passed after the inputs in ``metadata["params"]`` order.
    metadata : dict
        ``inputs``/``outputs`` (name, shape with symbolic dims as strings, dtype), ``target``,
        ``report``.
    """

    def __init__(self, executable: Any, params: Mapping[str, np.ndarray], metadata: dict) -> None:
        self.metadata = metadata
        self.device = tvm.runtime.device(metadata.get("device", "cpu"), 0)
        self._executable = executable
        # The VM and the device copies of the weights are made on the first run, so a model
        # compiled for a device this machine lacks (CUDA without a GPU) can still be saved.
        self._host_params: dict[str, np.ndarray] | None = {
            name: params[name] for name in metadata["params"]
        }
        self._vm: Any = None
        self._params: list[Any] = []
        self._inputs = {spec["name"]: spec for spec in metadata["inputs"]}

    def _load(self) -> Any:
        """The VM, created (with the weights copied to the device) on first use."""
        if self._vm is None:
            self._vm = tvm.runtime.vm.VirtualMachine(self._executable, self.device)
            self._params = [
                tvm.runtime.tensor(self._host_params[name], self.device)
                for name in self.metadata["params"]
            ]
            self._host_params = None  # the device copies are the weights from now on
        return self._vm

    @property
    def executable(self) -> Any:
        """The compiled VM executable (for export, or to read its device code)."""
        return self._executable

    @property
    def report(self) -> Any:
        """The compile report (:class:`bitnet_tvm.report.CompileReport`)."""
        from bitnet_tvm.report import CompileReport

        return CompileReport.from_dict(self.metadata.get("report", {}))

    def get_inputs(self) -> list[dict]:
        """Input specs: name, shape (symbolic dims as strings) and dtype."""
        return list(self.metadata["inputs"])

    def get_outputs(self) -> list[dict]:
        """Output specs, in the order :meth:`run` returns them."""
        return list(self.metadata["outputs"])

    def _check(self, name: str, value: np.ndarray, dims: dict[str, int]) -> None:
        spec = self._inputs[name]
        if str(value.dtype) != spec["dtype"]:
            raise TypeError(f"input {name!r}: expected dtype {spec['dtype']}, got {value.dtype}")
        if value.ndim != len(spec["shape"]):
            raise ValueError(
                f"input {name!r}: expected rank {len(spec['shape'])} {spec['shape']}, "
                f"got shape {value.shape}"
            )
        for axis, (want, got) in enumerate(zip(spec["shape"], value.shape, strict=True)):
            if isinstance(want, int):
                if want != got:
                    raise ValueError(
                        f"input {name!r}: axis {axis} must be {want} (shape {spec['shape']}), "
                        f"got shape {value.shape}"
                    )
            elif dims.setdefault(want, got) != got:
                raise ValueError(
                    f"input {name!r}: axis {axis} is {want!r}={dims[want]} in another input, "
                    f"got {got}"
                )

    def run_tvm(self, input_feed: Mapping[str, Any]) -> list[Any]:
        """Run on TVM tensors (or numpy arrays) and return TVM tensors (they stay on device)."""
        missing = [name for name in self._inputs if name not in input_feed]
        unknown = [name for name in input_feed if name not in self._inputs]
        if missing or unknown:
            raise ValueError(
                f"input_feed must have exactly the inputs {list(self._inputs)}; "
                f"missing {missing}, unknown {unknown}"
            )
        if self._vm is None and not self.device.exist:
            raise BitnetError(
                f"this model was compiled for {self.metadata.get('device')} (target "
                f"{self.metadata.get('target')}), but this machine has no such device; "
                "compile it for this machine (`bitnet-tvm compile ... --target llvm`)"
            )
        dims: dict[str, int] = {}
        args = []
        for name in self._inputs:
            value = input_feed[name]
            if isinstance(value, np.ndarray):
                self._check(name, value, dims)
                value = tvm.runtime.tensor(value, self.device)
            args.append(value)
        out = self._load()["main"](*args, *self._params)
        # A single output comes back as a tensor, several as an array of tensors.
        return [out] if hasattr(out, "numpy") else list(out)

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """Run the model on numpy inputs, like ``InferenceSession.run``.

        Parameters
        ----------
        output_names : list of str or None
            Outputs to return, in this order; None returns all.
        input_feed : dict of str to numpy.ndarray
            One array per model input.

        Returns
        -------
        list of numpy.ndarray
        """
        for name, value in input_feed.items():
            if not isinstance(value, np.ndarray):
                raise TypeError(f"input {name!r} must be a numpy array, got {type(value).__name__}")
        outputs = self.run_tvm(input_feed)
        names = [spec["name"] for spec in self.metadata["outputs"]]
        wanted = names if output_names is None else list(output_names)
        for name in wanted:
            if name not in names:
                raise ValueError(f"unknown output {name!r}; the model's outputs are {names}")
        return [outputs[names.index(name)].numpy() for name in wanted]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artifact directory ``path`` atomically (a temp dir renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            self._executable.export_library(str(tmp / _LIB))
            if self.metadata.get("device") == "cuda":
                _embed_cubins(tmp, self._executable, self.metadata)
            params = self._host_params or {
                name: t.numpy()
                for name, t in zip(self.metadata["params"], self._params, strict=True)
            }
            np.savez(tmp / _PARAMS, **params)
            (tmp / _META).write_text(json.dumps(self.metadata, indent=1))
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path


def load(path: str | os.PathLike[str]) -> CompiledModel:
    """Load an artifact directory written by :meth:`CompiledModel.save`.

    Raises
    ------
    BitnetError
        If a file is missing or unreadable, or the artifact was built by another format version,
        another TVM release, or for a CPU whose instructions this one lacks.
    """
    path = Path(path)
    for name in (_LIB, _PARAMS, _META):
        if not (path / name).is_file():
            raise BitnetError(f"{path} is not a bitnet-tvm artifact: {name} is missing")
    try:
        metadata = json.loads((path / _META).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BitnetError(f"{path}: {_META} is unreadable ({err}); recompile the model") from None
    if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
        found = metadata.get("format_version") if isinstance(metadata, dict) else None
        raise BitnetError(
            f"{path}: artifact format {found} is not the supported "
            f"{FORMAT_VERSION}; recompile it with this version of bitnet-tvm"
        )
    _check_compatible(path, metadata)
    if metadata.get("device") == "cuda":
        _serve_cubins(path)
    try:
        lib = tvm.runtime.load_module(str(path / _LIB))
    except Exception as err:  # TVMError / OSError: a truncated or foreign library
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BitnetError(f"{path}: cannot load {_LIB} ({first}); recompile the model") from None
    try:
        with np.load(path / _PARAMS) as params:
            return CompiledModel(lib, dict(params), metadata)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise BitnetError(f"{path}: {_PARAMS} is unreadable ({err}); recompile the model") from None


# LLVM mcpu names our compiler picks (schedules.target.host_mcpu), least to most capable;
# sapphirerapids and znver4 are the same AVX-512 level (Intel / AMD).
_MCPU_LEVELS = {
    "generic": 0,
    "x86-64-v2": 1,
    "x86-64-v3": 2,
    "x86-64-v4": 3,
    "icelake-server": 4,
    "sapphirerapids": 5,
    "znver4": 5,
}


def _host_mcpu() -> str | None:
    """This CPU's mcpu as the compiler would choose it; None where that cannot be told (a
    runtime-only TVM install has no ``tvm.target``)."""
    try:
        from bitnet_tvm.schedules.target import host_mcpu
    except Exception:
        return None
    return host_mcpu()


def _embed_cubins(folder: Path, executable: Any, metadata: dict) -> None:
    """Ship the CUDA kernels compiled ahead of time (our exact-math nvcc flags) for the
    target's arch; without nvcc the artifact falls back to the runtime's JIT at load."""
    from bitnet_tvm.cuda_aot import embed_cubins

    target = json.loads(metadata["target"])
    try:
        embed_cubins(folder, executable, (str(target.get("arch", "sm_90")),))
    except FileNotFoundError as err:  # no nvcc here
        log.warning("%s: CUDA kernels not compiled ahead of time (%s)", folder.name, err)


def _serve_cubins(path: Path) -> None:
    """Serve the artifact's ahead-of-time cubins to the CUDA runtime, if it has them and the
    GPU is of their arch (else the runtime compiles the kernels' source as usual)."""
    from bitnet_tvm.cuda_aot import AOT_DIR, install_aot_kernels

    device = tvm.cuda(0)
    if not (path / AOT_DIR).is_dir() or not device.exist:
        return
    arch = "sm_" + device.compute_version.replace(".", "")
    try:
        install_aot_kernels(path, arch)
    except ValueError as err:  # compiled for another arch
        log.warning("%s: %s; the CUDA runtime compiles the kernels instead", path, err)


def _check_compatible(path: Path, metadata: dict) -> None:
    """A clear error for an artifact built by another TVM release or for another CPU."""
    built = str(metadata.get("tvm_version"))
    if _release(built) != _release(tvm.__version__):
        raise BitnetError(
            f"{path}: built with TVM {built}, but this is TVM {tvm.__version__}; recompile it "
            "with this installation (`bitnet-tvm compile`)"
        )
    try:
        target = json.loads(metadata.get("target", ""))
    except (TypeError, json.JSONDecodeError):
        return  # an older or hand-made target string: nothing to compare
    if not isinstance(target, dict) or target.get("kind") != "llvm":
        return  # a GPU artifact: checked when its device is first used
    want, host = target.get("mcpu", "generic"), _host_mcpu()
    if host is None or want not in _MCPU_LEVELS:
        return
    if _MCPU_LEVELS[want] > _MCPU_LEVELS[host]:
        raise BitnetError(
            f"{path}: compiled for CPU {want!r}, whose instructions this CPU ({host!r}) lacks; "
            "recompile it on this machine (`bitnet-tvm compile ... --target llvm`)"
        )


def _release(version: str) -> str:
    """``major.minor.patch`` of a version string (``0.27.0.post1`` -> ``0.27.0``)."""
    return ".".join(version.split("+")[0].split(".")[:3])
