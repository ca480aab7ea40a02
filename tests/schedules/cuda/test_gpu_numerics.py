"""Every CUDA-scheduled operator run on a GPU equals :mod:`bitnet_tvm.reference` exactly.

Skipped without an NVIDIA GPU (``tests/conftest.py``).  The kernels are compiled at load time
through :func:`bitnet_tvm.cuda_aot.install_jit_compiler` (nvcc, IEEE division and square root,
no FMA contraction), not TVM's default NVRTC call, which always adds ``--use_fast_math``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm import reference
from bitnet_tvm.cuda_aot import install_jit_compiler
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cuda import cuda_rules
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import norm_quantize
from bitnet_tvm.schemes import get_scheme

pytestmark = pytest.mark.gpu
_HOOK = "tvm_callback_cuda_compile"
_GATE_UP = (attrs.OpName.TERNARY_INT4_GATE_UP, attrs.OpName.TERNARY_INT8_GATE_UP)


@pytest.fixture(scope="module")
def gpu(nvcc):
    dev = tvm.cuda(0)
    if not dev.exist:
        pytest.skip("no CUDA device visible to TVM")
    arch = "sm_" + dev.compute_version.replace(".", "")
    previous = tvm_ffi.get_global_func(_HOOK, allow_missing=True)
    install_jit_compiler(arch, nvcc=nvcc)
    yield dev, tvm.target.Target({"kind": "cuda", "arch": arch}, host="llvm")
    if previous is not None:
        tvm_ffi.register_global_func(_HOOK, previous, override=True)


def _build(func, target):
    with target:
        mod = ApplyDefaultSchedule(*cuda_rules())(tvm.IRModule({"main": func}))
    return tvm.compile(mod, target=target)


def _run(ex, dev, inputs, outputs):
    args = [tvm.runtime.tensor(a, device=dev) for a in inputs]
    outs = [tvm.runtime.tensor(np.zeros(shape, dtype), device=dev) for shape, dtype in outputs]
    ex["main"](*args, *outs)
    dev.sync()
    return [out.numpy() for out in outs]


def _act(rng, m, k, zero_frac=0.0):
    x_q = rng.integers(-128, 128, (m, k)).astype(np.int8)
    x_q[rng.random(x_q.shape) < zero_frac] = 0
    return x_q, rng.random((m, 1)).astype(np.float32) + np.float32(0.01)


@pytest.mark.parametrize(
    "name",
    [
        "dense_dp4a",
        "dense_generic_k172",
        "dense_base3",
        "dense_k37",
        "gemm",
        "gemm_odd",
        "gate_up_dp4a",
        "gate_up_generic",
        "gate_up_gemm",
        "sparse",
        "sparse_odd",
    ],
)
def test_matmul_on_gpu_equals_reference(cuda, gpu, name):
    dev, target = gpu
    func = cuda.OPERATORS[name]
    ex = _build(func, target)
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    gate_up = attrs.get_op(func) in _GATE_UP
    sparse = attrs.get_op(func) is attrs.OpName.SPARSE_INT8_MATMUL
    rows = 2 * n if gate_up else n
    rng = np.random.default_rng(n * k)
    q_w = rng.integers(-1, 2, (rows, k)).astype(np.int8)
    alpha = rng.random(rows).astype(np.float32)
    w = pack_weight(q_w, str(func.attrs[attrs.LAYOUT]))
    for m in (1, 3, 70):
        x_q, x_s = _act(rng, m, k, zero_frac=0.85 if sparse else 0.0)
        (got,) = _run(ex, dev, [x_q, x_s, w, alpha], [((m, n), "float32")])
        matmul = reference.ternary_gate_up if gate_up else reference.ternary_matmul
        want = matmul(x_q, x_s, q_w, alpha)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("site", ["qkv", "o", "down"])
def test_norm_quantize_on_gpu_equals_reference(gpu, site):
    dev, target = gpu
    act = getattr(get_scheme("a4.8"), site)
    k = 300
    has_norm = site != "down"
    func = norm_quantize(k, act=act, norm_eps=1e-5 if has_norm else None, has_weight=has_norm)
    ex = _build(func, target)
    rng = np.random.default_rng(k)
    gamma = rng.random(k).astype(np.float32)
    for m in (1, 33):
        x = rng.standard_normal((m, k)).astype(np.float32)
        inputs = [x, gamma] if has_norm else [x]
        x_q, x_s = _run(ex, dev, inputs, [((m, k), "int8"), ((m, 1), "float32")])
        y = reference.rmsnorm(x, gamma, 1e-5) if has_norm else x
        want_q, want_s = reference.quantize_act(y, act)
        assert np.array_equal(x_q, want_q) and np.array_equal(x_s, want_s)
