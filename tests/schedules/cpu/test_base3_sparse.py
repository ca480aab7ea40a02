"""1.6-bit K-major weights (``base3_kmajor``): layout, selection and the sparse schedule.

Numerics: the scheduled sparse matmul against :func:`bitnet_tvm.reference.ternary_matmul`,
exact (``np.array_equal``), on shapes that are not multiples of the 80-column chunk (the
plain-split path) and that are (the permuted-digit path), at decode and prefill M.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from targets import AVX2
from targets import NO_GFNI as CASCADE
from targets import VNNI as ZNVER4
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm import reference
from bitnet_tvm.schedules.cpu import (
    Base3SparseGemv,
    Base3SparseKnobs,
    VnniSparseBase3,
    VnniSparseBase3Knobs,
    cpu_rules,
)
from bitnet_tvm.schedules.layouts import WeightLayout, pack_weight, packed_shape, unpack_weight
from bitnet_tvm.schedules.operators import sparse_int8_matmul
from bitnet_tvm.schedules.selection import check_weights, gate_up_layout, select_layout
from bitnet_tvm.schedules.target import host_target


def test_layout_round_trip():
    q_w = np.random.default_rng(0).integers(-1, 2, (13, 7)).astype(np.int8)
    packed = pack_weight(q_w, "base3_kmajor")
    assert packed.shape == packed_shape(13, 7, "base3_kmajor") == (7, 3)
    np.testing.assert_array_equal(packed, reference.pack_ternary_base3_mulshift(q_w.T))
    np.testing.assert_array_equal(unpack_weight(packed, 13, 7, "base3_kmajor"), q_w)
    layout = WeightLayout.BASE3_KMAJOR
    assert layout.k_major and layout.codes_per_byte == 5 and layout.row_format == "base3_mulshift"


@pytest.mark.parametrize(
    "target, dense, gate_up, sparse",
    [
        (ZNVER4, "base3_vnni", "base3", "base3_kmajor"),
        (CASCADE, "base3", "base3", "base3_kmajor"),
        (AVX2, "base3", "base3", "base3_kmajor"),
    ],
)
def test_select_layout_base3(target, dense, gate_up, sparse):
    got = [select_layout(kind, target, base3=True) for kind in ("dense", "gate_up", "sparse")]
    assert got == [dense, gate_up, sparse]
    assert gate_up_layout(got[0]) == gate_up
    assert select_layout("sparse", target) == "2bit_kmajor"


@pytest.mark.parametrize("bad", ["2", "1.58bit", 2, None])
def test_check_weights(bad):
    with pytest.raises(ValueError, match="weights must be one of"):
        check_weights(bad)


def test_rule_takes_only_base3_kmajor():
    rule = Base3SparseGemv()
    assert rule.apply(sparse_int8_matmul(64, 48, layout="base3_kmajor"), ZNVER4, False)
    assert rule.apply(sparse_int8_matmul(64, 48), ZNVER4, False) is None
    with pytest.raises(ValueError, match="row_bytes"):
        Base3SparseKnobs(row_bytes=0)
    vnni = VnniSparseBase3()
    assert (
        "vpdpbusd"
        in vnni.apply(sparse_int8_matmul(160, 48, layout="base3_kmajor"), ZNVER4, False)
        .mod["main"]
        .script()
    )
    assert vnni.apply(sparse_int8_matmul(160, 48, layout="base3_kmajor"), AVX2, False) is None
    assert vnni.apply(sparse_int8_matmul(160, 48), ZNVER4, False) is None
    with pytest.raises(ValueError, match="chunks"):
        VnniSparseBase3Knobs(chunks=0)
    with pytest.raises(ValueError, match="ahead"):
        VnniSparseBase3Knobs(ahead=0)
    space = vnni.knob_space(sparse_int8_matmul(160, 48, layout="base3_kmajor"), ZNVER4)
    assert space["ahead"] == (8, 4, 16, 2) and space["chunks"] == (16,)


@pytest.mark.parametrize("n, k, m", [(333, 77, 1), (320, 101, 1), (320, 64, 19), (45, 9, 3)])
@pytest.mark.parametrize("isa", ["host", "avx2"])
def test_sparse_base3_exact(n, k, m, isa):
    """On this host's target (the VNNI kernel where it has VNNI) and AVX2 (the generic one)."""
    rng = np.random.default_rng(n + k + m)
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    x_q = rng.integers(-128, 128, (m, k)).astype(np.int8)
    x_q[rng.random(x_q.shape) < 0.7] = 0
    x_s = rng.uniform(0.01, 0.1, (m, 1)).astype(np.float32)
    alpha = rng.uniform(0.5, 2, n).astype(np.float32)
    func = sparse_int8_matmul(n, k, layout="base3_kmajor")
    target = host_target(2) if isa == "host" else AVX2
    with target:
        mod = ApplyDefaultSchedule(*cpu_rules())(tvm.IRModule({"main": func}))
    assert "tirx.is_scheduled" in mod["main"].attrs
    ex = tvm.compile(mod, target=target)
    args = [x_q, x_s, pack_weight(q_w, "base3_kmajor"), alpha]
    y = tvm.runtime.tensor(np.zeros((m, n), np.float32))
    ex["main"](*[tvm.runtime.tensor(a) for a in args], y)
    np.testing.assert_array_equal(y.numpy(), reference.ternary_matmul(x_q, x_s, q_w, alpha))
