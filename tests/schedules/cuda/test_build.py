"""Every operator scheduled by the CUDA rules builds for CUDA (VerifyMemory: all code bound to
threads) and its CUDA source compiles with nvcc for sm_80 and sm_90, without a GPU."""

from __future__ import annotations

import re

import pytest
import tvm
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm.cuda_aot import compile_cuda_source, cuda_source, install_jit_compiler
from bitnet_tvm.schedules.cuda import cuda_rules


def _build_all(operators: dict, target):
    """One module holding every operator (one nvcc call per architecture, not per kernel)."""
    mod = tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in operators.items()})
    with target:
        scheduled = ApplyDefaultSchedule(*cuda_rules())(mod)
    for name in operators:
        assert scheduled[name].attrs["tirx.is_scheduled"], name
    return tvm.compile(scheduled, target=target)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_operator_compiles_to_cubin(cuda, nvcc, arch):
    ex = _build_all(cuda.OPERATORS, cuda.target(arch))
    source = cuda_source(ex)
    kernels = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)', source)
    for name in cuda.OPERATORS:
        assert any(k.startswith(name + "_kernel") for k in kernels), name
    assert "nvcuda::wmma::mma_sync" in source and "__dp4a(" in source
    cubin = compile_cuda_source(source, arch, nvcc=nvcc)
    assert cubin[:4] == b"\x7fELF"  # a cubin is an ELF image


def test_cuda_source_rejects_cpu_builds(cuda):
    func = tvm.IRModule({"main": cuda.OPERATORS["quant_only"]})
    with pytest.raises(ValueError, match="no CUDA module"):
        cuda_source(tvm.compile(func, target=cuda.CPU))


@pytest.mark.parametrize("arch", ["sm90", "compute_90", 90])
def test_bad_arch_is_a_value_error(arch):
    with pytest.raises(ValueError, match="arch must look like"):
        compile_cuda_source("", arch)
    with pytest.raises(ValueError, match="arch must look like"):
        install_jit_compiler(arch)


def test_bad_format_is_a_value_error():
    with pytest.raises(ValueError, match="fmt must be one of"):
        compile_cuda_source("", "sm_90", "elf")


def test_compile_cuda_source_reports_nvcc_errors(nvcc):
    with pytest.raises(RuntimeError, match="nvcc failed for sm_90"):
        compile_cuda_source("this is not CUDA", "sm_90", nvcc=nvcc)


def test_missing_nvcc_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        compile_cuda_source("", "sm_90", nvcc=str(tmp_path / "no-nvcc"))


def test_gate_up_gemm_ptx_uses_wmma_without_local_memory(cuda, nvcc):
    # the prefill gate/up GEMM's accumulators (gate and up fragments per warp) stay in registers
    ex = _build_all({"gate_up_gemm": cuda.OPERATORS["gate_up_gemm"]}, cuda.target("sm_80"))
    ptx = compile_cuda_source(cuda_source(ex), "sm_80", "ptx", nvcc=nvcc).decode()
    assert "wmma.mma.sync" in ptx
    assert ".local" not in ptx  # no spills / local arrays
