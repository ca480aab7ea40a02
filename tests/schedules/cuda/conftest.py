"""Operators and targets shared by the CUDA schedule tests, as fixtures (``cuda``: a namespace
with ``CPU``, ``ARCHS``, ``target(arch)`` and ``OPERATORS``; ``op_name``: every operator name).
No GPU is needed except by tests marked ``gpu``."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import tvm

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.operators import (
    norm_quantize,
    sparse_int8_matmul,
    ternary_gate_up,
    ternary_matmul,
)
from bitnet_tvm.schemes import get_scheme

CPU = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 2})
ARCHS = ("sm_80", "sm_90")


def cuda_target(arch: str = "sm_90") -> tvm.target.Target:
    return tvm.target.Target({"kind": "cuda", "arch": arch}, host="llvm")


_A48 = get_scheme("a4.8")
#: name -> operator PrimFunc; shapes cover both GEMV paths (dp4a: 2bit, vec | K; generic:
#: K % 16 != 0 or base-3), odd N (row tiles of 1), odd K (one lane per row in the GEMV, no K
#: lanes in the sparse GEMV), and the tensor-core GEMM (``bitnet.m_hint`` >= 64) with N, K off
#: its tiles (K % 4 != 0 too).
OPERATORS = {
    "dense_dp4a": ternary_matmul(256, 512, act_bits=4),
    "dense_generic_k172": ternary_matmul(13, 172, act_bits=8),
    "dense_base3": ternary_matmul(12, 320, act_bits=8, layout="base3"),
    "dense_k37": ternary_matmul(40, 37, act_bits=8),  # one lane per row (no pow2 divides K)
    "gemm": ternary_matmul(128, 512, act_bits=4).with_attr(attrs.M_HINT, 2048),
    "gemm_odd": ternary_matmul(40, 37, act_bits=8).with_attr(attrs.M_HINT, 64),
    "gate_up_dp4a": ternary_gate_up(13, 320, act_bits=4),
    "gate_up_generic": ternary_gate_up(6, 172, act_bits=8),
    "gate_up_gemm": ternary_gate_up(24, 160, act_bits=4).with_attr(attrs.M_HINT, 128),
    "sparse": sparse_int8_matmul(64, 172),
    "sparse_odd": sparse_int8_matmul(13, 37),
    "norm_topk": norm_quantize(300, act=_A48.o, norm_eps=1e-5, has_weight=True),
    "norm_absmean": norm_quantize(64, act=_A48.qkv, norm_eps=1e-5, has_weight=True),
    "quant_only": norm_quantize(172, act=_A48.down, norm_eps=None, has_weight=False),
}


@pytest.fixture(scope="session")
def nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        pytest.skip("nvcc not on the PATH: the CUDA toolkit is needed to compile kernels to cubin")
    return path


@pytest.fixture(scope="session")
def cuda() -> SimpleNamespace:
    return SimpleNamespace(CPU=CPU, ARCHS=ARCHS, target=cuda_target, OPERATORS=OPERATORS)


@pytest.fixture(params=list(OPERATORS))
def op_name(request) -> str:
    return request.param
