"""AVX-512 VNNI matmul rule: which PrimFuncs and targets it takes, and exact numerics.

The numerics tests run the ``vpdpbusd`` kernel, so they need a host CPU with AVX-512 VNNI
(skipped elsewhere); the selection tests need no particular CPU.

Threads: TVM sizes its pool once, at the first parallel call, to ``TVM_NUM_THREADS`` or else
half the CPUs (1 on a 2-CPU VM), and ``runtime.config_threadpool`` cannot grow it later; this
module sets ``TVM_NUM_THREADS`` at import (collection, before any kernel runs) so that the
2-thread cases really run two workers.
"""

import os

os.environ.setdefault("TVM_NUM_THREADS", str(max(2, os.cpu_count() or 1)))

import numpy as np
import pytest
import tvm
from targets import AVX2, CUDA, GENERIC, NO_GFNI, VNNI, needs_vnni
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu import (
    TernaryGemv,
    VnniKnobs,
    VnniMatmul,
    VnniTile,
    cpu_rules,
)
from bitnet_tvm.schedules.cpu.intrin_x86 import (
    VNNI_TERNARY_2BIT_INTRIN,
    VNNI_TERNARY_BASE3_INT4_INTRIN,
    VNNI_TERNARY_BASE3_INTRIN,
)
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import (
    sparse_int8_matmul,
    ternary_gate_up,
    ternary_matmul,
)
from bitnet_tvm.schedules.selection import select_layout
from bitnet_tvm.schedules.target import has_avx512_vnni


# ------------------------------------------------------------------ selection (golden)
def test_target_features():
    assert has_avx512_vnni(VNNI)
    assert has_avx512_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "icelake-server"}))
    assert not has_avx512_vnni(AVX2)
    assert not has_avx512_vnni(GENERIC)
    assert not has_avx512_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}))
    assert not has_avx512_vnni(CUDA)
    assert not has_avx512_vnni(None)


@pytest.mark.parametrize("act_bits", [4, 8])
def test_takes_dense_2bit_matmul_on_vnni_targets(act_bits):
    func = ternary_matmul(16, 128, act_bits=act_bits)
    for f in (func, func.with_attr(attrs.M_HINT, 128)):
        sch = VnniMatmul().apply(f, VNNI, False)
        assert sch is not None
        text = sch.mod["main"].script()
        assert "llvm.x86.avx512.vpdpbusd.512" in text
        assert sch.mod["main"].attrs["global_symbol"] == f.attrs["global_symbol"]
        assert int(sch.mod["main"].attrs[attrs.N]) == 16


@pytest.mark.parametrize(
    "target, func",
    [
        (AVX2, ternary_matmul(16, 128, act_bits=8)),  # no VNNI
        (GENERIC, ternary_matmul(16, 128, act_bits=8)),
        (CUDA, ternary_matmul(16, 128, act_bits=8)),
        (VNNI, ternary_matmul(16, 128, act_bits=8, layout="base3")),  # other layout
        (VNNI, ternary_matmul(16, 128, act_bits=8, layout="2bit_kmajor")),
        (NO_GFNI, ternary_matmul(16, 128, act_bits=8, layout="base3_vnni")),
        (AVX2, ternary_matmul(16, 128, act_bits=8, layout="2bit_vnni")),
        (VNNI, ternary_matmul(16, 37, act_bits=8)),  # K < 64
        (VNNI, ternary_gate_up(16, 128, act_bits=4)),  # other operators
        (VNNI, sparse_int8_matmul(16, 128)),
        (VNNI, ternary_matmul(16, 128, act_bits=8).with_attr("tirx.is_scheduled", True)),
    ],
    ids=[
        "avx2",
        "generic",
        "cuda",
        "base3",
        "kmajor",
        "base3_vnni_no_gfni",
        "2bit_vnni_avx2",
        "k37",
        "gate_up",
        "sparse",
        "scheduled",
    ],
)
def test_declines(target, func):
    assert VnniMatmul().apply(func, target, False) is None


def test_declines_foreign_funcs(foreign):
    assert VnniMatmul().apply(foreign, VNNI, False) is None


def test_rule_order_falls_back_without_vnni():
    """On a generic (non-AVX2) target the generic GEMV takes the dense matmul, with VNNI ours
    does (AVX2 targets: ``test_avx2_matmul.py``)."""
    func = ternary_matmul(16, 128, act_bits=4)
    with GENERIC:  # (the pass updates the module it is given: one module per call)
        generic = ApplyDefaultSchedule(*cpu_rules())(tvm.IRModule({"main": func}))
    want = TernaryGemv().apply(func, GENERIC, False).mod["main"]
    assert "vpdpbusd" not in generic["main"].script()
    tvm.ir.assert_structural_equal(generic["main"], want.with_attr("tirx.is_scheduled", True))
    with VNNI:
        vnni = ApplyDefaultSchedule(*cpu_rules())(tvm.IRModule({"main": func}))
    assert "vpdpbusd" in vnni["main"].script()


def test_intrinsic_registered():
    from tvm.s_tir import TensorIntrin

    intrin = TensorIntrin.get(VNNI_TERNARY_2BIT_INTRIN)
    assert "vpdpbusd" in intrin.impl.script()
    base3 = TensorIntrin.get(VNNI_TERNARY_BASE3_INTRIN).impl.script()
    assert base3.count("vpdpbusd") == 10 and "vgf2p8affineqb" in base3
    folded = TensorIntrin.get(VNNI_TERNARY_BASE3_INT4_INTRIN).impl.script()
    assert folded.count("vpdpbusd") == 6


@pytest.mark.parametrize(
    "kind, target, base3, want",
    [
        ("dense", VNNI, False, "2bit_vnni"),
        ("dense", VNNI, True, "base3_vnni"),
        ("dense", NO_GFNI, True, "base3"),
        ("dense", AVX2, False, "2bit"),
        ("dense", AVX2, True, "base3"),
        ("dense", CUDA, False, "2bit"),
        ("gate_up", VNNI, False, "2bit"),
        ("sparse", VNNI, False, "2bit_kmajor"),
    ],
)
def test_select_layout(kind, target, base3, want):
    assert select_layout(kind, target, base3=base3) == want


def test_rule_protocol():
    """The tuner can drive the rule: defaults in the knob space, structural knobs named."""
    rule = VnniMatmul()
    assert rule.follows_protocol()
    func = ternary_matmul(16, 128, act_bits=8, layout="2bit_vnni")
    space = rule.knob_space(func, VNNI)
    for field, values in space.items():
        assert getattr(VnniKnobs(), field) in values
    assert set(VnniMatmul.structural_knobs) <= set(space)
    knobs = VnniKnobs(decode_rows=4)
    text = rule.schedule_with(func, knobs).mod["main"].script()
    assert "vpdpbusd" in text


def test_tile_validation():
    with pytest.raises(ValueError, match=r"VnniTile\.rows must be a positive int"):
        VnniTile(rows=0)
    with pytest.raises(ValueError, match=r"VnniTile\.mt"):
        VnniTile(mt=True)
    with pytest.raises(ValueError, match=r"VnniTile\.mt"):
        VnniKnobs(prefill_mt=0)


# ------------------------------------------------------------------ numerics (needs VNNI)
def _run(func, knobs, q_w, ms, rng, act_bits):
    n, k = q_w.shape
    sch = VnniMatmul(knobs).apply(func, VNNI, False)
    ex = tvm.compile(sch.mod, target=VNNI)
    alpha = rng.random(n).astype(np.float32)
    packed = pack_weight(q_w, str(func.attrs[attrs.LAYOUT]))
    lo, hi = (-8, 8) if act_bits == 4 else (-128, 128)
    for m in ms:
        x_q = rng.integers(lo, hi, (m, k)).astype(np.int8)
        x_q[0, :3] = -128 if act_bits == 8 else -8  # extreme codes
        x_s = rng.random((m, 1)).astype(np.float32) + np.float32(0.01)
        y = tvm.runtime.tensor(np.zeros((m, n), np.float32))
        ex["main"](*[tvm.runtime.tensor(a) for a in (x_q, x_s, packed, alpha)], y)
        assert np.array_equal(y.numpy(), reference.ternary_matmul(x_q, x_s, q_w, alpha)), m


@needs_vnni
@pytest.mark.parametrize(
    "n, k",
    [(13, 384), (13, 320 + 64 + 37), (16, 64), (12, 130), (8, 77)],
    ids=["13x384", "13x421", "16x64", "12x130", "8x77"],
)
@pytest.mark.parametrize("act_bits", [4, 8])
def test_decode_exact(threads, n, k, act_bits):
    rng = np.random.default_rng(n * k + act_bits)
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    func = ternary_matmul(n, k, act_bits=act_bits)
    _run(func, VnniKnobs(), q_w, (1, 3), rng, act_bits)


@needs_vnni
@pytest.mark.parametrize("tile", [VnniTile(rows=4, mt=2), VnniTile(rows=8, mt=3)])
def test_prefill_exact(threads, tile):
    """M padded to the row tile: M = 1, 3, 17 with mt = 2 and 3 (partial last tiles)."""
    rng = np.random.default_rng(tile.mt)
    n, k = 24, 320 + 37
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    func = ternary_matmul(n, k, act_bits=8).with_attr(attrs.M_HINT, 64)
    _run(func, VnniKnobs(prefill_rows=tile.rows, prefill_mt=tile.mt), q_w, (1, 3, 17), rng, 8)


@needs_vnni
@pytest.mark.parametrize(
    "n, k",
    [(13, 2560 + 64 + 37), (40, 321), (3, 7)],
    ids=["13x2661", "40x321", "3x7"],
)
@pytest.mark.parametrize("layout", ["2bit_vnni", "base3_vnni"])
def test_interleaved_layouts_exact(threads, n, k, layout):
    """Padded rows (N % 16) and padded K (K % 64, K % 320, odd K), decode and prefill tiles,
    INT8 and INT4 (base 3 folds INT4 activations)."""
    rng = np.random.default_rng(n * k)
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    for act_bits, hint in ((8, None), (4, None), (4, 64)):
        func = ternary_matmul(n, k, act_bits=act_bits, layout=layout)
        if hint is not None:
            func = func.with_attr(attrs.M_HINT, hint)
        _run(func, VnniKnobs(prefill_mt=3), q_w, (1, 2, 7), rng, act_bits)


@needs_vnni
def test_extreme_values_no_overflow():
    """All weights -1 and all activations -128: the largest |accumulator| (2 * 128 * K)."""
    n, k = 4, 6912
    q_w = np.full((n, k), -1, np.int8)
    q_w[1] = 1
    rng = np.random.default_rng(0)
    func = ternary_matmul(n, k, act_bits=8)
    sch = VnniMatmul().apply(func, VNNI, False)
    ex = tvm.compile(sch.mod, target=VNNI)
    x_q = np.full((1, k), -128, np.int8)
    x_s, alpha = np.ones((1, 1), np.float32), rng.random(n).astype(np.float32)
    y = tvm.runtime.tensor(np.zeros((1, n), np.float32))
    ex["main"](*[tvm.runtime.tensor(a) for a in (x_q, x_s, pack_weight(q_w, "2bit"), alpha)], y)
    assert np.array_equal(y.numpy(), reference.ternary_matmul(x_q, x_s, q_w, alpha))
