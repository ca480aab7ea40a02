"""AVX-512 VNNI gate-first gate/up rule: which PrimFuncs it takes, and exact numerics.

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
from bitnet_tvm.schedules.cpu import VnniGateUp, VnniGateUpKnobs, cpu_rules
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import ternary_gate_up, ternary_matmul


@pytest.mark.parametrize(
    "target, func",
    [
        (AVX2, ternary_gate_up(16, 128, act_bits=4)),
        (CUDA, ternary_gate_up(16, 128, act_bits=4)),
        (VNNI, ternary_gate_up(16, 128, act_bits=4, layout="base3")),
        (VNNI, ternary_gate_up(16, 37, act_bits=4)),  # K < 64
        (VNNI, ternary_gate_up(16, 128, act_bits=4).with_attr(attrs.M_HINT, 128)),  # prefill
        (VNNI, ternary_matmul(16, 128, act_bits=4)),
    ],
    ids=["avx2", "cuda", "base3", "k37", "prefill", "dense"],
)
def test_declines(target, func):
    assert VnniGateUp().apply(func, target, False) is None


def test_declines_foreign_funcs(foreign):
    assert VnniGateUp().apply(foreign, VNNI, False) is None


def test_rule_order_and_knobs():
    func = ternary_gate_up(16, 128, act_bits=8)
    with VNNI:
        mod = ApplyDefaultSchedule(*cpu_rules())(tvm.IRModule({"main": func}))
    assert "vpdpbusd" in mod["main"].script()
    assert VnniGateUp.follows_protocol()
    space = VnniGateUp().knob_space(func, VNNI)
    for field, values in space.items():
        assert getattr(VnniGateUpKnobs(), field) in values
    with pytest.raises(ValueError, match=r"VnniGateUpKnobs\.chains"):
        VnniGateUpKnobs(chains=0)


@needs_vnni
@pytest.mark.parametrize(
    "i, k, knobs",
    [
        (13, 2560 + 64 + 37, VnniGateUpKnobs()),
        (40, 421, VnniGateUpKnobs(rows=8, chains=3)),
        (5, 64, VnniGateUpKnobs(rows=2)),
    ],
    ids=["13x2661", "40x421", "5x64"],
)
def test_exact(threads, i, k, knobs):
    """Gate rows with relu(g) == 0 skip their up row; both branches occur; M = 1 and 3."""
    rng = np.random.default_rng(i + k)
    q_w = rng.integers(-1, 2, (2 * i, k)).astype(np.int8)
    func = ternary_gate_up(i, k, act_bits=8)
    ex = tvm.compile(VnniGateUp(knobs).apply(func, VNNI, False).mod, target=VNNI)
    alpha = rng.random(2 * i).astype(np.float32)
    packed = pack_weight(q_w, "2bit")
    for m in (1, 3):
        x_q = rng.integers(-128, 128, (m, k)).astype(np.int8)
        x_s = rng.random((m, 1)).astype(np.float32) + np.float32(0.01)
        h = tvm.runtime.tensor(np.zeros((m, i), np.float32))
        ex["main"](*[tvm.runtime.tensor(a) for a in (x_q, x_s, packed, alpha)], h)
        want = reference.ternary_gate_up(x_q, x_s, q_w, alpha)
        assert 0.1 < np.mean(want == 0) < 0.9
        assert np.array_equal(h.numpy(), want), m
