"""Prefill gate/up on VNNI: ``VnniMatmul`` takes ``ternary_int{4,8}_gate_up`` at ``m_hint > 8``.

Which rule ``cpu_rules()`` picks per activation width and M, and exact numerics (needs a host
with AVX-512 VNNI; skipped elsewhere).  Threads: see ``test_vnni_matmul.py``.
"""

import os

os.environ.setdefault("TVM_NUM_THREADS", str(max(2, os.cpu_count() or 1)))

import numpy as np
import pytest
import tvm
from targets import AVX2, VNNI, needs_vnni
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu import VnniKnobs, VnniMatmul, cpu_rules
from bitnet_tvm.schedules.cpu.vnni_matmul import vnni_matmul
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import ternary_gate_up

PERMB = "llvm.x86.avx512.permvar.qi.512"


def _gate_up(i, k, act_bits=8, m_hint=128, layout="2bit"):
    func = ternary_gate_up(i, k, act_bits=act_bits, layout=layout)
    return func if m_hint is None else func.with_attr(attrs.M_HINT, m_hint)


def _picked(func):
    """The script ``cpu_rules()`` makes of ``func`` for the znver4 target."""
    with VNNI:
        return ApplyDefaultSchedule(*cpu_rules())(tvm.IRModule({"main": func}))["main"].script()


def test_rule_order():
    """INT8 prefill: the VNNI GEMM (not the generic GEMM); INT4 prefill: the vpermb LUT kernel;
    decode (no hint, or M <= 8): the gate-first kernel, which VnniMatmul leaves alone."""
    int8 = _gate_up(64, 256)
    assert VnniMatmul().apply(int8, VNNI, False) is not None
    text = _picked(int8)
    assert "vpdpbusd" in text and PERMB not in text
    assert PERMB in _picked(_gate_up(64, 256, act_bits=4))
    for m_hint in (None, 8):
        assert VnniMatmul().apply(_gate_up(64, 256, m_hint=m_hint), VNNI, False) is None
        assert "vpdpbusd" in _picked(_gate_up(64, 256, m_hint=m_hint))


@pytest.mark.parametrize(
    "target, func",
    [
        (AVX2, _gate_up(16, 256)),
        (VNNI, _gate_up(16, 256, layout="base3")),
        (VNNI, _gate_up(16, 256, layout="2bit_vnni")),
        (VNNI, _gate_up(16, 37)),  # K < 64
        (VNNI, _gate_up(16, 256, m_hint=9).with_attr("tirx.is_scheduled", True)),
    ],
    ids=["avx2", "base3", "2bit_vnni", "k37", "scheduled"],
)
def test_declines(target, func):
    assert VnniMatmul().apply(func, target, False) is None


def test_formulation_checks_layout():
    with pytest.raises(ValueError, match="VNNI gate/up needs the 2bit layout"):
        vnni_matmul(16, 256, 4, "2bit_vnni", 8, gate_up=True)


@needs_vnni
@pytest.mark.parametrize(
    "i, k, act_bits, knobs",
    [
        (13, 2560 + 64 + 37, 8, VnniKnobs()),  # 13 outputs: tiles of 1 output (2 rows)
        (42, 421, 8, VnniKnobs(prefill_rows=6, prefill_mt=3)),  # 3 outputs (6 rows) per tile
        (6, 64, 4, VnniKnobs(prefill_rows=2, prefill_mt=2)),  # INT4: VNNI CPUs without VBMI
    ],
    ids=["13x2661", "42x421-6x3", "6x64-int4"],
)
def test_exact(threads, i, k, act_bits, knobs):
    """M = 17 and 130 (partial row tiles), both GLU branches; equal to the reference."""
    rng = np.random.default_rng(i + k)
    q_w = rng.integers(-1, 2, (2 * i, k)).astype(np.int8)
    alpha = rng.random(2 * i).astype(np.float32)
    sch = VnniMatmul(knobs).apply(_gate_up(i, k, act_bits), VNNI, False)
    kernel = tvm.compile(sch.mod, target=VNNI)["main"]
    packed = pack_weight(q_w, "2bit")
    low, high = (-8, 8) if act_bits == 4 else (-128, 128)
    for m in (17, 130):
        x_q = rng.integers(low, high, (m, k)).astype(np.int8)
        x_s = rng.random((m, 1)).astype(np.float32) + np.float32(0.01)
        h = tvm.runtime.tensor(np.zeros((m, i), np.float32))
        kernel(*[tvm.runtime.tensor(a) for a in (x_q, x_s, packed, alpha)], h)
        want = reference.ternary_gate_up(x_q, x_s, q_w, alpha)
        assert 0.1 < np.mean(want == 0) < 0.9
        assert np.array_equal(h.numpy(), want), m
