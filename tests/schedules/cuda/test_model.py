"""The tiny a4.8 model compiles for CUDA (sm_90) with ``bitnet_tvm.compile`` and its kernels
compile with nvcc to cubin for sm_80 and sm_90, on a machine without a GPU.

``compile_model`` ends by loading the executable into a VM on the target device, which needs a
GPU; the test replaces that last step (``CompiledModel``) with a stub that keeps the executable,
so everything up to and including ``tvm.compile`` is the real code path.
"""

from __future__ import annotations

import json
import re

import pytest
import tvm
from tvm import relax
from tvm.s_tir.dlight import ApplyDefaultSchedule

import bitnet_tvm.compiler as compiler
from bitnet_tvm.cuda_aot import compile_cuda_source, cuda_source
from bitnet_tvm.export import export_onnx
from bitnet_tvm.model import BitNetForCausalLM, get_config
from bitnet_tvm.relay_passes.pipeline import run_graph_passes
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cuda import cuda_rules
from bitnet_tvm.weight_import import import_compact

CUDA = tvm.target.Target({"kind": "cuda", "arch": "sm_90"}, host="llvm")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    model = BitNetForCausalLM(get_config("tiny", scheme="a4.8"), seed=0).eval()
    return export_onnx(model, tmp_path_factory.mktemp("cuda") / "tiny_a48.onnx", verify=False)


@pytest.fixture(scope="module")
def built(tiny_onnx):
    # No GPU needed: the VM and device weights are only made on the first run.
    return compiler.compile_model(tiny_onnx, target="cuda")


def test_our_rules_claim_every_fused_operator(tiny_onnx):
    mod, _ = import_compact(tiny_onnx)
    mod = run_graph_passes(mod, CUDA)
    with CUDA:
        mod = ApplyDefaultSchedule(*cuda_rules())(relax.transform.LegalizeOps()(mod))
    ours = {
        gv.name_hint: func
        for gv, func in mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc) and attrs.get_op(func) is not None
    }
    ops = {attrs.get_op(func) for func in ours.values()}
    assert {attrs.OpName.TERNARY_INT4_MATMUL, attrs.OpName.SPARSE_INT8_MATMUL} <= ops
    assert {attrs.OpName.TERNARY_INT4_GATE_UP, attrs.OpName.NORM_QUANTIZE} <= ops
    unscheduled = [name for name, func in ours.items() if "tirx.is_scheduled" not in func.attrs]
    assert not unscheduled


def test_model_builds_for_cuda(built):
    assert built.metadata["device"] == "cuda"
    source = cuda_source(built.executable)
    assert len(re.findall(r'extern "C" __global__ void', source)) > 10
    assert "__dp4a(" in source  # the dense GEMVs took the dp4a path


def test_model_saves_without_a_gpu(built, tmp_path):
    path = built.save(tmp_path / "cuda_artifact")
    assert (path / "model.so").stat().st_size > 0
    assert json.loads((path / "metadata.json").read_text())["device"] == "cuda"


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_model_kernels_compile_to_cubin(built, nvcc, arch):
    assert compile_cuda_source(built.executable, arch, nvcc=nvcc)[:4] == b"\x7fELF"
