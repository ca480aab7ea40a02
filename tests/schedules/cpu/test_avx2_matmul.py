"""AVX2 decode matmul rule: which PrimFuncs and targets it takes, exact numerics, and its asm.

The numerics tests run ``vpmaddubsw`` code, so they need a host CPU with AVX2 (skipped
elsewhere); the selection tests need no particular CPU.  ``TVM_NUM_THREADS`` is set at import so
that the 2-thread cases really run two workers (see ``test_vnni_matmul.py``).
"""

import os

os.environ.setdefault("TVM_NUM_THREADS", str(max(2, os.cpu_count() or 1)))

import numpy as np
import pytest
import tvm
from targets import AVX2 as V3
from targets import CUDA, GENERIC, HASWELL, V2, VNNI
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu import Avx2Knobs, Avx2Matmul, TernaryGemv, VnniMatmul, cpu_rules
from bitnet_tvm.schedules.cpu.intrin_x86 import AVX2_TERNARY_2BIT_INTRIN
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import sparse_int8_matmul, ternary_gate_up, ternary_matmul
from bitnet_tvm.schedules.target import cpu_flags

MATTR = tvm.target.Target({"kind": "llvm", "mattr": ["+avx2", "+fma"], "num-cores": 2})
PMADD = "llvm.x86.avx2.pmadd.ub.sw"
needs_avx2 = pytest.mark.skipif("avx2" not in cpu_flags()[1], reason="host CPU lacks AVX2")


# ------------------------------------------------------------------ selection (golden)
def _default_schedule(func, target):
    with target:  # (the pass updates the module it is given: one module per call)
        return ApplyDefaultSchedule(*cpu_rules())(tvm.IRModule({"main": func}))["main"]


@pytest.mark.parametrize("act_bits", [4, 8])
def test_cpu_rules_pick_avx2_vnni_or_generic_by_target(act_bits):
    """AVX2 targets get this rule, VNNI targets keep VnniMatmul, targets without AVX2 the
    generic GEMV (each compared structurally with the rule applied alone)."""
    func = ternary_matmul(16, 128, act_bits=act_bits)
    for target in (HASWELL, V3, MATTR):
        got = _default_schedule(func, target)
        want = Avx2Matmul().apply(func, target, False).mod["main"]
        tvm.ir.assert_structural_equal(got, want.with_attr("tirx.is_scheduled", True))
        assert PMADD in got.script()
    got = _default_schedule(func, VNNI)
    want = VnniMatmul().apply(func, VNNI, False).mod["main"]
    tvm.ir.assert_structural_equal(got, want.with_attr("tirx.is_scheduled", True))
    assert PMADD not in got.script()
    for target in (V2, GENERIC):
        got = _default_schedule(func, target)
        want = TernaryGemv().apply(func, target, False).mod["main"]
        tvm.ir.assert_structural_equal(got, want.with_attr("tirx.is_scheduled", True))


@pytest.mark.parametrize(
    "target, func",
    [
        (V2, ternary_matmul(16, 128, act_bits=8)),  # no AVX2
        (GENERIC, ternary_matmul(16, 128, act_bits=8)),
        (CUDA, ternary_matmul(16, 128, act_bits=8)),
        (HASWELL, ternary_matmul(16, 128, act_bits=8, layout="base3")),  # other layouts
        (HASWELL, ternary_matmul(16, 128, act_bits=8, layout="2bit_vnni")),
        (HASWELL, ternary_matmul(16, 37, act_bits=8)),  # K < 64
        (HASWELL, ternary_matmul(16, 128, act_bits=8).with_attr(attrs.M_HINT, 128)),  # prefill
        (HASWELL, ternary_gate_up(16, 128, act_bits=4)),  # other operators
        (HASWELL, sparse_int8_matmul(16, 128)),
        (HASWELL, ternary_matmul(16, 128, act_bits=8).with_attr("tirx.is_scheduled", True)),
    ],
    ids=["v2", "generic", "cuda", "base3", "2bit_vnni", "k37", "prefill", "gate_up", "sparse",
         "scheduled"],
)  # fmt: skip
def test_declines(target, func):
    assert Avx2Matmul().apply(func, target, False) is None


def test_declines_foreign_funcs(foreign):
    assert Avx2Matmul().apply(foreign, HASWELL, False) is None


def test_takes_small_m_hint():
    func = ternary_matmul(16, 128, act_bits=8).with_attr(attrs.M_HINT, 8)
    assert Avx2Matmul().apply(func, HASWELL, False) is not None
    assert Avx2Matmul(Avx2Knobs(max_decode_m=4)).apply(func, HASWELL, False) is None


def test_rule_protocol_and_knobs():
    rule = Avx2Matmul()
    assert rule.follows_protocol()
    func = ternary_matmul(16, 128, act_bits=8)
    for field, values in rule.knob_space(func, HASWELL).items():
        assert getattr(Avx2Knobs(), field) in values
    text = rule.schedule_with(func, Avx2Knobs(rows=2)).mod["main"].script()
    assert PMADD in text and "llvm.x86.avx2.pmadd.wd" in text
    with pytest.raises(ValueError, match=r"rows must be a positive int"):
        Avx2Knobs(rows=0)
    with pytest.raises(ValueError, match=r"Avx2Knobs\.max_decode_m"):
        Avx2Knobs(max_decode_m=-1)


def test_intrinsic_registered():
    from tvm.s_tir import TensorIntrin

    impl = TensorIntrin.get(AVX2_TERNARY_2BIT_INTRIN).impl.script()
    assert impl.count(PMADD) == 2 and "vpdpbusd" not in impl


def test_asm_uses_vpmaddubsw_on_ymm():
    """The built kernel multiplies with ``vpmaddubsw`` on 256-bit registers, no AVX-512."""
    func = ternary_matmul(16, 256, act_bits=8)
    lib = tvm.tirx.build(Avx2Matmul().apply(func, HASWELL, False).mod, target=HASWELL)
    asm = lib.inspect_source("asm")
    assert "vpmaddubsw\t%ymm" in asm and "vpmaddwd\t%ymm" in asm
    assert "zmm" not in asm


# ------------------------------------------------------------------ numerics (needs AVX2)
def _run(func, knobs, q_w, ms, rng, act_bits):
    n, k = q_w.shape
    sch = Avx2Matmul(knobs).apply(func, HASWELL, False)
    ex = tvm.compile(sch.mod, target=HASWELL)
    alpha = rng.random(n).astype(np.float32)
    packed = pack_weight(q_w, "2bit")
    lo, hi = (-8, 8) if act_bits == 4 else (-128, 128)
    for m in ms:
        x_q = rng.integers(lo, hi, (m, k)).astype(np.int8)
        x_q[0, :3] = lo  # extreme codes
        x_s = rng.random((m, 1)).astype(np.float32) + np.float32(0.01)
        y = tvm.runtime.tensor(np.zeros((m, n), np.float32))
        ex["main"](*[tvm.runtime.tensor(a) for a in (x_q, x_s, packed, alpha)], y)
        assert np.array_equal(y.numpy(), reference.ternary_matmul(x_q, x_s, q_w, alpha)), m


@needs_avx2
@pytest.mark.parametrize(
    "n, k", [(13, 2560 + 64), (13, 421), (12, 64)], ids=["13x2624", "13x421", "12x64"]
)
@pytest.mark.parametrize("act_bits", [4, 8])
def test_decode_exact(threads, n, k, act_bits):
    """N not a multiple of the row tile (13: one row per tile), K % 64 tails, M = 1 and 3."""
    rng = np.random.default_rng(n * k + act_bits)
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    _run(ternary_matmul(n, k, act_bits=act_bits), Avx2Knobs(), q_w, (1, 3), rng, act_bits)


@needs_avx2
def test_row_tiles_and_m_hint_exact(threads):
    """Several rows per tile (4 and 2 of N = 36) and a small-M hint, M = 1, 3, 5."""
    rng = np.random.default_rng(7)
    n, k = 36, 320 + 37
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    func = ternary_matmul(n, k, act_bits=8).with_attr(attrs.M_HINT, 4)
    for rows in (4, 2):
        _run(func, Avx2Knobs(rows=rows), q_w, (1, 3, 5), rng, 8)


@needs_avx2
def test_extreme_values_no_saturation():
    """All activations -128 with weights all -1 / all +1 (codes 0 / 2): the largest
    ``vpmaddubsw`` pair sums (``2 * 2 * -128 = -512``) and accumulators (``2 * 128 * K``)."""
    n, k = 4, 6912
    q_w = np.full((n, k), -1, np.int8)
    q_w[1] = 1
    q_w[2, ::2] = 1
    rng = np.random.default_rng(0)
    sch = Avx2Matmul().apply(ternary_matmul(n, k, act_bits=8), HASWELL, False)
    ex = tvm.compile(sch.mod, target=HASWELL)
    for fill in (-128, 127):
        x_q = np.full((1, k), fill, np.int8)
        x_s, alpha = np.ones((1, 1), np.float32), rng.random(n).astype(np.float32)
        y = tvm.runtime.tensor(np.zeros((1, n), np.float32))
        args = (x_q, x_s, pack_weight(q_w, "2bit"), alpha)
        ex["main"](*[tvm.runtime.tensor(a) for a in args], y)
        assert np.array_equal(y.numpy(), reference.ternary_matmul(x_q, x_s, q_w, alpha))
