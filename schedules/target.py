"""Host CPU target detection (TVM 0.27 rejects target strings such as ``"llvm -mcpu=native"``)."""

from __future__ import annotations

import os
from pathlib import Path

from tvm.target import Target, codegen

__all__ = ["cpu_flags", "has_avx512_vnni", "has_llvm_features", "host_mcpu", "host_target"]

# (required /proc/cpuinfo flags, LLVM mcpu), first match wins; every entry is an x86-64 level or
# a core LLVM 22 knows.  Zen 4 is told apart from Intel AVX-512 cores by the vendor.
_X86_LEVELS: list[tuple[frozenset[str], str]] = [
    (frozenset({"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512vbmi"}), "znver4"),
    (frozenset({"avx512f", "avx512bw", "avx512_vnni", "avx512vbmi"}), "icelake-server"),
    (frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"}), "x86-64-v4"),
    (frozenset({"avx2", "fma", "bmi2"}), "x86-64-v3"),
    (frozenset({"sse4_2", "popcnt"}), "x86-64-v2"),
]


def cpu_flags(cpuinfo: str | None = None) -> tuple[str, frozenset[str]]:
    """``(vendor_id, flags)`` of the first CPU in ``/proc/cpuinfo`` (or the given text)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    vendor, flags = "", frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return vendor, flags


def host_mcpu(cpuinfo: str | None = None) -> str:
    """The LLVM ``mcpu`` for this host: a Zen or x86-64 level name, ``"generic"`` otherwise."""
    vendor, flags = cpu_flags(cpuinfo)
    for required, mcpu in _X86_LEVELS:
        if required <= flags:
            if mcpu == "znver4" and vendor != "AuthenticAMD":
                return "sapphirerapids"
            return mcpu
    return "generic"


def host_target(num_cores: int | None = None) -> Target:
    """An LLVM target for this host CPU.

    Parameters
    ----------
    num_cores : int, optional
        Threads the schedules may assume; defaults to ``TVM_NUM_THREADS`` or ``os.cpu_count()``.
    """
    if num_cores is None:
        env = os.environ.get("TVM_NUM_THREADS")
        num_cores = int(env) if env else (os.cpu_count() or 1)
    if not isinstance(num_cores, int) or num_cores <= 0:
        raise ValueError(f"num_cores must be a positive int, got {num_cores!r}")
    return Target({"kind": "llvm", "mcpu": host_mcpu(), "num-cores": num_cores})


def has_llvm_features(target: Target | None, *features: str) -> bool:
    """Whether the LLVM CPU ``target`` has every LLVM feature named (from ``mcpu`` / ``mattr``).

    False for non-LLVM targets and for an LLVM target without ``mcpu`` (generic x86-64).
    """
    if target is None or target.kind.name != "llvm" or not features:
        return False
    return bool(codegen.target_has_features(list(features), target))


def has_avx512_vnni(target: Target | None) -> bool:
    """Whether ``target`` has AVX-512 VNNI (``vpdpbusd`` on zmm registers) and AVX-512 BW."""
    return has_llvm_features(target, "avx512vnni", "avx512bw", "avx512f")
