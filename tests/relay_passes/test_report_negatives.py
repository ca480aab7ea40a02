"""What FuseBitLinear leaves alone, and how ``collect_report`` counts it."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from bitnet_tvm.errors import UnsupportedGraphError
from bitnet_tvm.relay_passes.fuse_bitlinear import FuseBitLinear, require_ternary
from bitnet_tvm.relay_passes.pipeline import run_graph_passes
from bitnet_tvm.report import collect_report
from bitnet_tvm.schemes import get_scheme

K, N = 8, 4
TARGET = tvm.target.Target({"kind": "llvm"})


def _mod(rx, w, **kw):
    x = rx.sym_var("x", K)
    return rx.module([x], lambda bb, x: rx.emit_bitlinear(bb, x, w, **kw))


def test_non_ternary_weight_is_ignored(rx):
    four = np.tile(np.array([-1.0, -0.5, 0.5, 1.0], np.float32), (K, 1))
    before = _mod(rx, four)
    after = FuseBitLinear(TARGET)(before)
    tvm.ir.assert_structural_equal(after, before)
    report = collect_report(after)
    assert (report.unfused_matmuls, report.unfused, report.layers) == (0, [], [])


def test_non_ternary_weight_under_a_ternary_scheme_is_an_error(rx):
    four = np.tile(np.array([-1.0, -0.5, 0.5, 1.0], np.float32), (K, 1))
    with pytest.raises(UnsupportedGraphError, match=r"scheme 'a4\.8' needs ternary weights"):
        run_graph_passes(_mod(rx, four), TARGET, get_scheme("a4.8"))
    require_ternary(_mod(rx, four), get_scheme("fp"))  # a float scheme keeps it
    require_ternary(_mod(rx, four), None)  # so does the default


@pytest.mark.parametrize(
    "kw",
    [
        {"bounds": (-15.0, 15.0)},
        {"stat_axis": 0},
        {"dequant": "foreign"},
        {"dequant": "none"},
    ],
    ids=["levels15", "stat-axis0", "foreign-dequant-scale", "no-dequant"],
)
def test_unknown_quantizer_is_left_and_reported(rx, kw):
    before = _mod(rx, rx.ternary_weight(K, N), **kw)
    after = FuseBitLinear(TARGET)(before)
    tvm.ir.assert_structural_equal(after, before)
    report = collect_report(after)
    assert report.unfused_matmuls == 1
    assert report.unfused == [after["main"].body.body.name]
    assert report.layers == []


def test_float_activations_are_left_and_reported(rx):
    x = rx.sym_var("x", K)
    w = rx.ternary_weight(K, N)
    before = rx.module([x], lambda bb, x: relax.op.matmul(x, rx.const(w)))
    after = FuseBitLinear(TARGET)(before)
    tvm.ir.assert_structural_equal(after, before)
    assert collect_report(after).unfused_matmuls == 1


def test_fused_bitlinear_is_reported(rx):
    after = FuseBitLinear(TARGET)(_mod(rx, rx.ternary_weight(K, N), method="absmean", bits=4))
    report = collect_report(after)
    assert report.unfused_matmuls == 0
    assert [(r.name, r.operator, r.n, r.k, r.act_bits, r.layout) for r in report.layers] == [
        ("layers_0_down_proj", "ternary_int4_matmul", N, K, 4, "2bit")
    ]
