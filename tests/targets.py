"""Targets the schedule tests compile for, and the host-CPU skip marker (defined once).

Importable from any test module: ``tests/`` is on pytest's ``pythonpath`` (pyproject.toml).
"""

from __future__ import annotations

import pytest
import tvm

from bitnet_tvm.schedules.target import cpu_flags


def _cpu(**attrs: object) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "num-cores": 2, **attrs})


#: Zen 4: AVX-512 VNNI, VBMI and GFNI (the CI and development machine).
VNNI = _cpu(mcpu="znver4")
#: AVX-512 VNNI and VBMI without GFNI; AVX-512 without VBMI; VNNI without GFNI.
ICELAKE = _cpu(mcpu="icelake-server")
SKYLAKE = _cpu(mcpu="skylake-avx512")
NO_GFNI = _cpu(mcpu="cascadelake")
#: AVX2 + FMA, no AVX-512.
AVX2 = _cpu(mcpu="x86-64-v3")
HASWELL = _cpu(mcpu="haswell")
#: SSE4.2 only, and a target with no CPU named: the generic LLVM schedules.
V2 = _cpu(mcpu="x86-64-v2")
GENERIC = _cpu()
CUDA = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})

HOST_HAS_VNNI = {"avx512_vnni", "avx512bw", "avx512f"} <= cpu_flags()[1]
needs_vnni = pytest.mark.skipif(not HOST_HAS_VNNI, reason="host CPU lacks AVX-512 VNNI")
