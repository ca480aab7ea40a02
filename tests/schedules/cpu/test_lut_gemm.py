"""vpermb LUT prefill GEMM rule (ternary x INT4): which PrimFuncs it takes, and exact numerics.

The numerics tests run ``vpermb`` + ``vpdpbusd``, so they need a host CPU with AVX-512 VBMI and
VNNI (skipped elsewhere); the selection tests need no particular CPU.  ``TVM_NUM_THREADS`` is
set at import so that the 2-thread cases really run two workers (see test_vnni_matmul.py).
"""

import os

os.environ.setdefault("TVM_NUM_THREADS", str(max(2, os.cpu_count() or 1)))

import functools

import numpy as np
import pytest
import tvm
from targets import AVX2, CUDA, GENERIC, ICELAKE, SKYLAKE
from targets import VNNI as VBMI
from tvm import s_tir
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu import LutGemm, LutKnobs, cpu_rules
from bitnet_tvm.schedules.cpu.intrin_lut import lut_intrin
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import sparse_int8_matmul, ternary_gate_up, ternary_matmul
from bitnet_tvm.schedules.target import cpu_flags
from bitnet_tvm.tuning.space import knob_spaces

HOST_OK = {"avx512vbmi", "avx512_vnni", "avx512bw", "avx512f"} <= cpu_flags()[1]
needs_vbmi = pytest.mark.skipif(not HOST_OK, reason="host CPU lacks AVX-512 VBMI + VNNI")
PERMB = "llvm.x86.avx512.permvar.qi.512"


def _int4(n, k, m_hint=128, layout="2bit"):
    return ternary_matmul(n, k, act_bits=4, layout=layout).with_attr(attrs.M_HINT, m_hint)


# ------------------------------------------------------------------ selection (golden)
@pytest.mark.parametrize("target", [VBMI, ICELAKE], ids=["znver4", "icelake"])
@pytest.mark.parametrize("layout", ["2bit", "2bit_vnni"])
def test_takes_int4_prefill_on_vbmi(target, layout):
    func = _int4(40, 256, m_hint=16, layout=layout)
    sch = LutGemm().apply(func, target, False)
    assert sch is not None
    text = sch.mod["main"].script()
    assert PERMB in text and "vpdpbusd" in text
    assert sch.mod["main"].attrs["global_symbol"] == func.attrs["global_symbol"]


@pytest.mark.parametrize(
    "target, func",
    [
        (VBMI, ternary_matmul(16, 256, act_bits=8).with_attr(attrs.M_HINT, 128)),  # INT8
        (SKYLAKE, _int4(16, 256)),  # AVX-512 without VBMI / VNNI
        (AVX2, _int4(16, 256)),
        (GENERIC, _int4(16, 256)),
        (CUDA, _int4(16, 256)),
        (VBMI, ternary_matmul(16, 256, act_bits=4)),  # no m_hint: decode
        (VBMI, _int4(16, 256, m_hint=15)),  # small M
        (VBMI, _int4(16, 256, layout="base3")),
        (VBMI, ternary_gate_up(16, 256, act_bits=8).with_attr(attrs.M_HINT, 128)),
        (
            VBMI,
            ternary_gate_up(16, 256, act_bits=4, layout="2bit_vnni").with_attr(attrs.M_HINT, 99),
        ),
        (VBMI, sparse_int8_matmul(16, 256)),
        (VBMI, _int4(16, 256).with_attr("tirx.is_scheduled", True)),
    ],
    ids=[
        "int8",
        "skylake",
        "avx2",
        "generic",
        "cuda",
        "decode",
        "m15",
        "base3",
        "gate_up_int8",
        "gate_up_vnni_layout",
        "sparse",
        "scheduled",
    ],
)
def test_declines(target, func):
    assert LutGemm().apply(func, target, False) is None


def test_declines_foreign_funcs(foreign):
    assert LutGemm().apply(foreign, VBMI, False) is None


def test_rule_order():
    """In ``cpu_rules()`` the LUT kernel takes INT4 prefill (matmul and gate/up), VNNI keeps INT8
    and INT4 decode."""
    cases = [(_int4(32, 256), True), (ternary_matmul(32, 256, act_bits=4), False)]
    cases.append((ternary_matmul(32, 256, act_bits=8).with_attr(attrs.M_HINT, 128), False))
    cases.append((ternary_gate_up(32, 256, act_bits=4).with_attr(attrs.M_HINT, 128), True))
    cases.append((ternary_gate_up(32, 256, act_bits=4), False))  # decode: VNNI gate first
    for func, lut in cases:
        with VBMI:
            text = ApplyDefaultSchedule(*cpu_rules())(tvm.IRModule({"main": func}))["main"].script()
        assert (PERMB in text) == lut
        assert "vpdpbusd" in text


def test_knobs():
    with pytest.raises(ValueError, match=r"LutKnobs\.rows must be a positive int"):
        LutKnobs(rows=0)
    with pytest.raises(ValueError, match=r"LutKnobs\.kc must be at most 3"):
        LutKnobs(kc=4)
    with pytest.raises(ValueError, match=r"LutKnobs\.m_block must be an int >= 0"):
        LutKnobs(m_block=-1)
    with pytest.raises(ValueError, match="kc must be an int in"):
        lut_intrin(0)
    space = LutGemm().knob_space(_int4(32, 256), VBMI)
    defaults = LutKnobs()
    assert all(getattr(defaults, name) in values for name, values in space.items())


def test_tuner_knob_spaces():
    """mt, kc and m_block change the formulation (a workload each); rows, kblock are sampled."""
    func = _int4(40, 421, layout="2bit_vnni")
    spaces = knob_spaces(LutGemm(), func, VBMI)
    assert len(spaces) == 4 * 3 * 2  # m_block: 0 (from the tables' bytes) or 64 (< M = 128)
    assert {name for name, _ in spaces[0].sampled} == {"rows", "kblock"}
    for space in (spaces[0], spaces[-1]):
        sch = s_tir.Schedule(space.workload(func))
        space.schedule_fn()(sch)
        assert PERMB in sch.mod["main"].script()


# ------------------------------------------------------------------ numerics (needs VBMI)
@functools.cache
def _compiled(n, k, layout, knobs):
    sch = LutGemm(knobs).apply(_int4(n, k, layout=layout), VBMI, False)
    return tvm.compile(sch.mod, target=VBMI)["main"]


def _check(n, k, layout, knobs, ms, seed, x_fill=None, q_w=None):
    rng = np.random.default_rng(seed)
    if q_w is None:
        q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    alpha = rng.random(n).astype(np.float32)
    packed = tvm.runtime.tensor(pack_weight(q_w, layout))
    kernel = _compiled(n, k, layout, knobs)
    for m in ms:
        x_q = rng.integers(-8, 8, (m, k)).astype(np.int8)
        if x_fill is not None:
            x_q[:] = x_fill
        x_q[0, :3] = -8  # the extreme code
        x_s = rng.random((m, 1)).astype(np.float32) + np.float32(0.01)
        y = tvm.runtime.tensor(np.zeros((m, n), np.float32))
        kernel(
            tvm.runtime.tensor(x_q), tvm.runtime.tensor(x_s), packed, tvm.runtime.tensor(alpha), y
        )
        assert np.array_equal(y.numpy(), reference.ternary_matmul(x_q, x_s, q_w, alpha)), (m, n, k)


@needs_vbmi
@pytest.mark.parametrize(
    "n, k, layout, knobs",
    [
        (13, 2560 + 64, "2bit", LutKnobs()),  # 164 16-K blocks, K blocks of 4
        (13, 421, "2bit", LutKnobs(rows=2, mt=3, kc=2, kblock=6)),  # 27 % 2: a rest of 1
        (40, 2560 + 64, "2bit_vnni", LutKnobs(kc=3)),  # 164 % 3: a rest of 2
        (37, 197, "2bit_vnni", LutKnobs(rows=3, mt=4, kc=3, kblock=4)),  # K padded to 256
    ],
    ids=["13x2624", "13x421-kc2", "40x2624-vnni", "37x197-vnni"],
)
def test_exact(threads, n, k, layout, knobs):
    """M = 1, 17, 130: partial activation-row tiles; N, K multiples of no tile."""
    _check(n, k, layout, knobs, (1, 17, 130), seed=n * k)


def _parallel_loops(func, knobs=None):
    return LutGemm(knobs).apply(func, VBMI, False).mod["main"].script().count("T.parallel(")


def test_m_blocks_chosen_from_table_bytes():
    """Default m_block: down 2560x6912 at M=512 has 28 MiB of tables (blocked: the repack runs
    in its own parallel loop, then the M blocks); 13824x2560 at M=512 (10 MiB) and M=128 not."""
    assert _parallel_loops(_int4(2560, 6912, m_hint=512)) == 3
    assert _parallel_loops(_int4(2560, 6912, m_hint=128)) == 2
    assert _parallel_loops(_int4(13824, 2560, m_hint=512, layout="2bit_vnni")) == 2
    assert _parallel_loops(_int4(40, 421), LutKnobs(m_block=64)) == 3


@needs_vbmi
@pytest.mark.parametrize(
    "n, k, layout, knobs",
    [
        (13, 421, "2bit", LutKnobs(rows=2, mt=3, kc=2, m_block=32)),  # 27 blocks: kc 2 -> 1
        (40, 2560 + 64, "2bit_vnni", LutKnobs(kc=3, m_block=16)),  # 164 blocks: kc 3 -> 2
    ],
    ids=["13x421-mt3", "40x2624-vnni"],
)
def test_m_blocks_exact(threads, n, k, layout, knobs):
    """M blocks (m_hint 128 > m_block): M = 1, 17, 130 end in a partial (predicated) block."""
    _check(n, k, layout, knobs, (1, 17, 130), seed=n + k)


@needs_vbmi
@pytest.mark.parametrize(
    "i, k, knobs",
    [
        (13, 421, LutKnobs(rows=4, kc=2)),
        (40, 2560 + 64, LutKnobs(rows=4, kc=2)),
        (40, 2560 + 64, LutKnobs(rows=4, kc=2, m_block=8)),  # M blocks
    ],
    ids=["13x421", "40x2624", "40x2624-mblocks"],
)
def test_gate_up_exact(threads, i, k, knobs):
    """The fused gate/up: gate and up groups paired per tile, ReLU^2 GLU in the operator's order."""
    rng = np.random.default_rng(i * k)
    q_w = rng.integers(-1, 2, (2 * i, k)).astype(np.int8)
    alpha = rng.random(2 * i).astype(np.float32)
    func = ternary_gate_up(i, k, act_bits=4).with_attr(attrs.M_HINT, 64)
    sch = LutGemm(knobs).apply(func, VBMI, False)
    kernel = tvm.compile(sch.mod, target=VBMI)["main"]
    for m in (1, 17):
        x_q = rng.integers(-8, 8, (m, k)).astype(np.int8)
        x_s = rng.random((m, 1)).astype(np.float32) + np.float32(0.01)
        h = tvm.runtime.tensor(np.zeros((m, i), np.float32))
        args = [tvm.runtime.tensor(a) for a in (x_q, x_s, pack_weight(q_w, "2bit"), alpha)]
        kernel(*args, h)
        want = reference.ternary_gate_up(x_q, x_s, q_w, alpha)
        assert np.array_equal(h.numpy(), want), m


@needs_vbmi
def test_extreme_values_no_overflow():
    """All activations -8 and weights +-1: every int8 partial sum at its bound (6 x 16 = 96)."""
    n, k = 4, 6912
    q_w = np.full((n, k), -1, np.int8)
    q_w[1] = 1
    q_w[2, ::2] = 1
    _check(n, k, "2bit", LutKnobs(kc=3), (17,), seed=0, x_fill=-8, q_w=q_w)
