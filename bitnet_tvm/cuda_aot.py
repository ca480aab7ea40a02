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
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import tvm

__all__ = ["NVCC_FLAGS", "compile_cuda_source", "cuda_source", "install_jit_compiler"]

#: Flags every nvcc call gets (besides ``-arch`` and the output format).
NVCC_FLAGS = ("-O3", "--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false")
_ARCH = re.compile(r"sm_\d{2,3}[af]?")
_FORMATS = ("cubin", "fatbin", "ptx")


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


def cuda_source(executable: tvm.runtime.Executable | tvm.runtime.Module) -> str:
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
    module = executable.mod if isinstance(executable, tvm.runtime.Executable) else executable
    sources = [mod.inspect_source() for mod in _cuda_modules(module)]
    if not sources:
        raise ValueError(
            "executable holds no CUDA module; build it with a CUDA target, e.g. "
            'Target({"kind": "cuda", "arch": "sm_90"}, host="llvm")'
        )
    return "\n".join(sources)


def compile_cuda_source(
    source: str | tvm.runtime.Executable | tvm.runtime.Module,
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
    if not isinstance(arch, str) or not _ARCH.fullmatch(arch):
        raise ValueError(f"arch must look like 'sm_80' or 'sm_90', got {arch!r}")
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

    if not isinstance(arch, str) or not _ARCH.fullmatch(arch):
        raise ValueError(f"arch must look like 'sm_80' or 'sm_90', got {arch!r}")

    def _compile(code: str, *_unused) -> bytes:
        return compile_cuda_source(code, arch, "cubin", nvcc=nvcc)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", _compile, override=True)
