"""Ahead-of-time compilation of the CUDA kernels of a build with nvcc (no GPU needed).

``tvm.compile`` for a CUDA target (TVM 0.27) keeps the kernels as CUDA C source inside the
executable's import tree; the CUDA runtime compiles that source when the module is loaded, through
the ``tvm_callback_cuda_compile`` hook (NVRTC, or nvcc under ``TVM_CUDA_COMPILE_MODE=nvcc``).
This module gets the source out and compiles it here, to check that it compiles for a given
architecture and to ship binaries to a machine that has a GPU but no compiler.

nvcc is called directly rather than through ``tvm.support.nvcc.compile_cuda``: TVM adds
``--use_fast_math`` there (approximate division and square root, flushed denormals), which would
break the bit-exactness of ``norm_quantize`` against :mod:`bitnet_tvm.reference`.  The flags used
here keep IEEE division and square root and add ``--fmad=false`` so that no ``a * b + c`` is
contracted into an FMA (one rounding instead of two), like the LLVM build's FMA barrier.

Shipping binaries (:func:`embed_cubins`, :func:`install_aot_kernels`): TVM 0.27 serializes a
CUDA module built on a machine without the CUDA runtime as its source (format ``cuda``), and the
CUDA runtime compiles that source when the library is loaded, by calling the global function
``tvm_callback_cuda_compile(code)`` (NVRTC or nvcc, with ``--use_fast_math``).  An artifact
therefore carries its kernels compiled ahead of time, per architecture, in ``cuda/`` beside
``model.so``, keyed by the SHA-256 of each CUDA module's source; on the GPU machine
:func:`install_aot_kernels` registers a ``tvm_callback_cuda_compile`` that returns the stored
cubin for the source the runtime hands it, so loading needs neither nvcc nor NVRTC, and the
kernels are the ones compiled here with :data:`NVCC_FLAGS`.  That half imports only
``tvm_ffi`` and the standard library, so it runs with a runtime-only TVM (load this file by
path; see ``benchmarks/gpu_device_run.sh``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AOT_DIR",
    "NVCC_FLAGS",
    "compile_cuda_source",
    "cuda_source",
    "embed_cubins",
    "install_aot_kernels",
    "install_jit_compiler",
]

#: Flags every nvcc call gets (besides ``-arch`` and the output format).
NVCC_FLAGS = ("-O3", "--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false")
_ARCH = re.compile(r"sm_\d{2,3}[af]?")
_FORMATS = ("cubin", "fatbin", "ptx")
#: Folder of an artifact that holds its ahead-of-time kernels, and the manifest inside it.
AOT_DIR, _MANIFEST = "cuda", "kernels.json"
_HOOK = "tvm_callback_cuda_compile"


def _cuda_modules(module) -> list:
    found, stack, seen = [], [module], set()
    while stack:
        mod = stack.pop()
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        if mod.kind == "cuda":
            found.append(mod)
        stack.extend(mod.imports)
    return found


def _module_of(executable: Any) -> Any:
    import tvm

    return executable.mod if isinstance(executable, tvm.runtime.Executable) else executable


def cuda_source(executable: Any) -> str:
    """The CUDA C source of every kernel of a CUDA build.

    Parameters
    ----------
    executable : tvm.runtime.Executable or Module
        What ``tvm.compile(..., target=<cuda target>)`` returned (or its ``.mod``).

    Raises
    ------
    ValueError
        When the build holds no CUDA module (built for another target).
    """
    sources = [mod.inspect_source() for mod in _cuda_modules(_module_of(executable))]
    if not sources:
        raise ValueError(
            "executable holds no CUDA module; build it with a CUDA target, e.g. "
            'Target({"kind": "cuda", "arch": "sm_90"}, host="llvm")'
        )
    return "\n".join(sources)


def compile_cuda_source(
    source: Any,
    arch: str = "sm_90",
    fmt: str = "cubin",
    *,
    nvcc: str | None = None,
    timeout: float = 600.0,
) -> bytes:
    """Compile CUDA source (or a CUDA build's kernels) with nvcc for ``arch``.

    Parameters
    ----------
    source : str, Executable or Module
        CUDA C source, or a CUDA build (its kernels' source is taken with :func:`cuda_source`).
    arch : str
        Architecture, e.g. ``"sm_80"`` (A100) or ``"sm_90"`` (H100).
    fmt : {"cubin", "fatbin", "ptx"}
        Output format.
    nvcc : str, optional
        The nvcc executable; default: ``nvcc`` on the PATH.
    timeout : float
        Seconds before the nvcc call is abandoned.

    Returns
    -------
    bytes
        The compiled binary (or PTX text).

    Raises
    ------
    ValueError
        For a malformed ``arch`` or an unknown ``fmt``.
    FileNotFoundError
        When nvcc is not found.
    RuntimeError
        When nvcc fails; the message holds its output.
    """
    _check_arch(arch)
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    if not isinstance(source, str):
        source = cuda_source(source)
    exe = nvcc or shutil.which("nvcc")
    if exe is None:
        raise FileNotFoundError("nvcc not found on the PATH (install the CUDA toolkit)")
    with tempfile.TemporaryDirectory(prefix="bitnet_cuda_") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / f"kernels.{fmt}"
        src.write_text(source)
        cmd = [exe, f"--{fmt}", "-arch", arch, *NVCC_FLAGS, "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(
                f"nvcc failed for {arch} ({fmt}), exit {proc.returncode}:\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return out.read_bytes()


def install_jit_compiler(arch: str, *, nvcc: str | None = None) -> None:
    """Make the CUDA runtime compile kernels at load time with :func:`compile_cuda_source`.

    TVM's default load-time compiler (NVRTC, ``tvm_callback_cuda_compile``) always passes
    ``--use_fast_math``; call this before loading a CUDA build on a GPU machine where results
    must equal :mod:`bitnet_tvm.reference` bit for bit (``norm_quantize``).  Replaces the
    process-wide ``tvm_callback_cuda_compile`` hook.
    """
    import tvm_ffi

    arch = _check_arch(arch)

    def _compile(code: str, *_unused) -> bytes:
        return compile_cuda_source(code, arch, "cubin", nvcc=nvcc)

    tvm_ffi.register_global_func(_HOOK, _compile, override=True)


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _check_arch(arch: Any) -> str:
    if not isinstance(arch, str) or not _ARCH.fullmatch(arch):
        raise ValueError(f"arch must look like 'sm_80' or 'sm_90', got {arch!r}")
    return arch


def embed_cubins(
    artifact: str | Path,
    executable: Any,
    archs: Sequence[str] = ("sm_80", "sm_90"),
    *,
    nvcc: str | None = None,
) -> Path:
    """Compile every CUDA module of ``executable`` for ``archs`` into ``artifact/cuda/``.

    Parameters
    ----------
    artifact : path
        The artifact folder (``CompiledModel.save``'s, or any folder beside an exported
        library); created if missing.
    executable : Executable or Module
        The CUDA build whose library is (or will be) exported there.
    archs : sequence of str
        Architectures to compile for, e.g. ``("sm_80", "sm_90")``.
    nvcc : str, optional
        The nvcc executable; default: ``nvcc`` on the PATH.

    Returns
    -------
    Path
        The manifest, ``artifact/cuda/kernels.json``: ``{"nvcc_flags", "archs", "modules":
        {sha256(source): {arch: cubin file name}}}``.

    Raises
    ------
    ValueError
        For a malformed or empty ``archs``, or a build with no CUDA module.
    """
    from bitnet_tvm.atomic import atomic_open

    archs = tuple(_check_arch(arch) for arch in archs)
    if not archs:
        raise ValueError("archs must name at least one architecture, e.g. ('sm_90',)")
    sources = [mod.inspect_source() for mod in _cuda_modules(_module_of(executable))]
    if not sources:
        cuda_source(executable)  # raises the "no CUDA module" ValueError
    folder = Path(artifact) / AOT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    modules: dict[str, dict[str, str]] = {}
    for source in sources:
        digest = _digest(source)
        modules[digest] = {}
        for arch in archs:
            name = f"{digest[:16]}_{arch}.cubin"
            with atomic_open(folder / name, "wb") as out:
                out.write(compile_cuda_source(source, arch, "cubin", nvcc=nvcc))
            modules[digest][arch] = name
    manifest = {"nvcc_flags": list(NVCC_FLAGS), "archs": list(archs), "modules": modules}
    with atomic_open(folder / _MANIFEST) as out:
        json.dump(manifest, out, indent=1)
    return folder / _MANIFEST


def install_aot_kernels(artifact: str | Path, arch: str) -> dict[str, bytes]:
    """Serve the CUDA runtime the artifact's ahead-of-time cubins for ``arch``.

    Registers ``tvm_callback_cuda_compile`` (process-wide, replacing NVRTC / nvcc) with a
    function that returns the stored cubin of the source it is given.  Call it before
    ``tvm.runtime.load_module`` of the artifact's library.  Needs only ``tvm_ffi`` (a
    runtime-only TVM is enough), no CUDA compiler.

    Parameters
    ----------
    artifact : path
        An artifact folder with ``cuda/kernels.json`` (written by :func:`embed_cubins`).
    arch : str
        The GPU's architecture, e.g. ``"sm_90"`` for an H100
        (``"sm_" + tvm.cuda(0).compute_version.replace(".", "")``).

    Returns
    -------
    dict
        ``{sha256(source): cubin}`` of the modules now served.

    Raises
    ------
    FileNotFoundError
        When the artifact has no ``cuda/kernels.json``.
    ValueError
        When ``arch`` is malformed or was not compiled into the artifact.

    Notes
    -----
    A source the artifact does not hold (a library exported from another build) makes the
    hook raise a RuntimeError naming the artifact, rather than run a stale binary.
    """
    import tvm_ffi

    arch = _check_arch(arch)
    folder = Path(artifact) / AOT_DIR
    manifest_path = folder / _MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: embed the kernels with bitnet_tvm.cuda_aot.embed_cubins"
        )
    manifest = json.loads(manifest_path.read_text())
    if arch not in manifest["archs"]:
        raise ValueError(
            f"{artifact}: kernels were compiled for {', '.join(manifest['archs'])}, not {arch}"
        )
    cubins = {
        digest: (folder / files[arch]).read_bytes() for digest, files in manifest["modules"].items()
    }

    def _serve(code: str, *_unused: Any) -> bytes:
        cubin = cubins.get(_digest(str(code)))
        if cubin is None:
            raise RuntimeError(
                f"a CUDA module's source is not among the kernels of {artifact} "
                "(library and cuda/ come from different builds); run embed_cubins again"
            )
        return cubin

    tvm_ffi.register_global_func(_HOOK, _serve, override=True)
    return cubins
