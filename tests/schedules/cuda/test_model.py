"""The tiny a4.8 model compiles for CUDA (sm_90) with ``bitnet_tvm.compile``, every PrimFunc of
it is scheduled onto GPU threads (ours or dlight's rules), and its kernels compile with nvcc to
cubin for sm_80 and sm_90 and travel in the saved artifact, on a machine without a GPU.

``compile_model`` ends by loading the executable into a VM on the target device, which needs a
GPU; the test replaces that last step (``CompiledModel``) with a stub that keeps the executable,
so everything up to and including ``tvm.compile`` is the real code path.
"""

from __future__ import annotations

import json
import re
import struct

import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir.dlight import ApplyDefaultSchedule

import bitnet_tvm.compiler as compiler
from bitnet_tvm.cuda_aot import cuda_source, embed_cubins, install_aot_kernels
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


@tvm.instrument.pass_instrument
class _KeepScheduled:
    """Keeps the module as it leaves the last dlight ``ApplyDefaultSchedule`` pass."""

    def __init__(self) -> None:
        self.mod = None

    def run_after_pass(self, mod, info) -> None:
        if info.name == "ApplyDefaultSchedule":
            self.mod = mod


@pytest.fixture(scope="module")
def scheduled():
    return _KeepScheduled()


@pytest.fixture(scope="module")
def built(tiny_onnx, scheduled):
    # No GPU needed: the VM and device weights are only made on the first run.
    with tvm.transform.PassContext(instruments=[scheduled]):
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


def test_model_saves_without_a_gpu(built, nvcc, tmp_path):
    path = built.save(tmp_path / "cuda_artifact")
    assert (path / "model.so").stat().st_size > 0
    assert json.loads((path / "metadata.json").read_text())["device"] == "cuda"
    # save() compiled the kernels ahead of time for the target's arch (sm_90 by default)
    manifest = json.loads((path / "cuda" / "kernels.json").read_text())
    assert manifest["archs"] == ["sm_90"]


def test_every_primfunc_of_the_model_runs_on_gpu_threads(built, scheduled):
    # LM head, attention, softmax, RMSNorm, KV cache ops: dlight's GPU rules take what ours
    # do not; a function left as a plain loop nest would run on one thread or fail to build.
    funcs = {
        gv.name_hint: func
        for gv, func in scheduled.mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc)
    }
    assert len(funcs) > 10
    unbound = [
        name
        for name, func in funcs.items()
        if "tirx.is_scheduled" not in func.attrs or 'thread="threadIdx.x"' not in func.script()
    ]
    assert not unbound


def _serialized_cuda_source(library: bytes, source: str) -> bool:
    """Whether ``library`` holds ``source`` as a length-prefixed string (the CUDA module's
    serialized data, which the runtime hands to ``tvm_callback_cuda_compile``)."""
    data = source.encode()
    return struct.pack("<Q", len(data)) + data in library


def test_artifact_carries_cubins_served_without_a_compiler(built, nvcc, tmp_path):
    path = built.save(tmp_path / "cuda_artifact")
    manifest_path = embed_cubins(path, built.executable, ("sm_80", "sm_90"), nvcc=nvcc)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["archs"] == ["sm_80", "sm_90"] and "--fmad=false" in manifest["nvcc_flags"]
    ((digest, files),) = manifest["modules"].items()
    for arch in ("sm_80", "sm_90"):
        assert (path / "cuda" / files[arch]).read_bytes()[:4] == b"\x7fELF"  # cubin: ELF
    source = cuda_source(built.executable)
    assert _serialized_cuda_source((path / "model.so").read_bytes(), source)
    previous = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)
    try:
        cubins = install_aot_kernels(path, "sm_90")
        hook = tvm_ffi.get_global_func("tvm_callback_cuda_compile")
        assert (
            bytes(hook(source)) == cubins[digest] == (path / "cuda" / files["sm_90"]).read_bytes()
        )
        with pytest.raises(RuntimeError, match="not among the kernels"):
            hook(source + "// another build")
    finally:
        if previous is not None:
            tvm_ffi.register_global_func("tvm_callback_cuda_compile", previous, override=True)
    with pytest.raises(ValueError, match="not sm_86"):
        install_aot_kernels(path, "sm_86")


def test_install_aot_kernels_needs_a_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="embed_cubins"):
        install_aot_kernels(tmp_path, "sm_90")
