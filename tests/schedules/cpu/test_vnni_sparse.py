"""AVX-512 VNNI sparse GEMV rule: which PrimFuncs it takes, and exact numerics.

Numerics need a host CPU with AVX-512 VNNI (skipped elsewhere).  Threads: see
``test_vnni_matmul.py`` (``TVM_NUM_THREADS`` is set at import, before TVM's pool starts).
"""

import os

os.environ.setdefault("TVM_NUM_THREADS", str(max(2, os.cpu_count() or 1)))

import numpy as np
import pytest
import tvm
from targets import AVX2, CUDA, VNNI, needs_vnni
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu import VnniSparseGemv, VnniSparseKnobs, cpu_rules
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import sparse_int8_matmul, ternary_matmul


@pytest.mark.parametrize(
    "target, func",
    [
        (AVX2, sparse_int8_matmul(64, 128)),
        (CUDA, sparse_int8_matmul(64, 128)),
        (VNNI, sparse_int8_matmul(64, 128, layout="2bit")),
        (VNNI, ternary_matmul(64, 128, act_bits=8)),
        (VNNI, sparse_int8_matmul(64, 128).with_attr("tirx.is_scheduled", True)),
    ],
    ids=["avx2", "cuda", "row_major", "dense", "scheduled"],
)
def test_declines(target, func):
    assert VnniSparseGemv().apply(func, target, False) is None


def test_declines_foreign_funcs(foreign):
    assert VnniSparseGemv().apply(foreign, VNNI, False) is None


def test_rule_order():
    """On VNNI targets the VNNI sparse kernel takes the sparse matmul (compaction, vpdpbusd)."""
    func = sparse_int8_matmul(128, 64)
    with VNNI:
        mod = ApplyDefaultSchedule(*cpu_rules())(tvm.IRModule({"main": func}))
    text = mod["main"].script()
    assert "vpdpbusd" in text and "llvm.prefetch" in text
    with AVX2:
        mod = ApplyDefaultSchedule(*cpu_rules())(tvm.IRModule({"main": func}))
    assert "vpdpbusd" not in mod["main"].script()


def test_knobs():
    assert VnniSparseGemv.follows_protocol()
    func = sparse_int8_matmul(64, 64)
    decode = VnniSparseGemv().knob_space(func, VNNI)  # prefetch distance; chunks: default
    assert decode == {"chunks": (VnniSparseKnobs().chunks,), "ahead": (8, 4, 16, 2)}
    prefill = VnniSparseGemv().knob_space(func.with_attr(attrs.M_HINT, 32), VNNI)
    assert prefill["ahead"] == (VnniSparseKnobs().ahead,) and len(prefill["chunks"]) > 1
    with pytest.raises(ValueError, match=r"VnniSparseKnobs\.chunks"):
        VnniSparseKnobs(chunks=0)
    with pytest.raises(ValueError, match=r"VnniSparseKnobs\.ahead"):
        VnniSparseKnobs(ahead=True)


@needs_vnni
@pytest.mark.parametrize(
    "n, k, chunks, ahead",
    [(13, 421, 20, 8), (256 + 64 + 13, 357, 20, 2), (512, 130, 4, 16), (128, 3, 1, 8)],
    ids=["13x421", "333x357", "512x130", "128x3"],
)
def test_exact(threads, n, k, chunks, ahead):
    """Full chunks, the N % 64 tail, K % 4 padding; all-zero, dense and sparse rows; M > 1."""
    rng = np.random.default_rng(n + k)
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    func = sparse_int8_matmul(n, k)
    rule = VnniSparseGemv(VnniSparseKnobs(chunks, ahead))
    ex = tvm.compile(rule.apply(func, VNNI, False).mod, VNNI)
    alpha = rng.random(n).astype(np.float32)
    packed = pack_weight(q_w, "2bit_kmajor")
    for m, zeros in ((1, 0.85), (3, 0.5), (2, 1.0), (1, 0.0)):
        x_q = rng.integers(-128, 128, (m, k)).astype(np.int8)
        x_q[rng.random(x_q.shape) < zeros] = 0
        x_q[0, -1] = -128 if zeros < 1 else 0
        x_s = rng.random((m, 1)).astype(np.float32) + np.float32(0.01)
        y = tvm.runtime.tensor(np.zeros((m, n), np.float32))
        ex["main"](*[tvm.runtime.tensor(a) for a in (x_q, x_s, packed, alpha)], y)
        assert np.array_equal(y.numpy(), reference.ternary_matmul(x_q, x_s, q_w, alpha)), m
