"""CPU schedule rules: which PrimFuncs they take, and exact numerics once scheduled.

Threads: ``runtime.config_threadpool(mode, n)`` resizes TVM's CPU thread pool in-process
(``TVM_NUM_THREADS`` is only read when the pool starts).
"""

import numpy as np
import pytest
import tvm
import tvm_ffi
from targets import AVX2 as CPU
from targets import CUDA
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu import (
    NormQuantize,
    SparseGemv,
    TernaryGemm,
    TernaryGemv,
    cpu_rules,
)
from bitnet_tvm.schedules.layouts import WeightLayout, pack_weight
from bitnet_tvm.schedules.operators import (
    norm_quantize,
    sparse_int8_matmul,
    ternary_gate_up,
    ternary_matmul,
)
from bitnet_tvm.schemes import get_scheme


def _compile(func):
    """Schedule with all CPU rules (must take ``func``) and build."""
    mod = tvm.IRModule({"main": func})
    with CPU:
        scheduled = ApplyDefaultSchedule(*cpu_rules())(mod)
    assert scheduled["main"].attrs["tirx.is_scheduled"]
    return tvm.compile(scheduled, target=CPU)


def _call(ex, inputs, out_shape):
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    ex["main"](*[tvm.runtime.tensor(a) for a in inputs], out)
    return out.numpy()


def _act(rng, m, k, zero_frac=0.0):
    x_q = rng.integers(-128, 128, (m, k)).astype(np.int8)
    x_q[rng.random(x_q.shape) < zero_frac] = 0
    return x_q, rng.random((m, 1)).astype(np.float32) + np.float32(0.01)


# ------------------------------------------------------------------ rule selection (golden)
ALL_RULES = [TernaryGemv(), TernaryGemm(), SparseGemv(), NormQuantize()]
DENSE = ternary_matmul(16, 64, act_bits=4)
PREFILL = DENSE.with_attr(attrs.M_HINT, 128)
GATE_UP = ternary_gate_up(16, 64, act_bits=4)
SPARSE = sparse_int8_matmul(16, 64)
NORM = norm_quantize(64, act=get_scheme("a4.8").qkv, norm_eps=1e-5, has_weight=True)
OWNER = {
    "dense": (DENSE, TernaryGemv),
    "prefill": (PREFILL, TernaryGemm),
    "gate_up": (GATE_UP, TernaryGemv),
    "sparse": (SPARSE, SparseGemv),
    "norm": (NORM, NormQuantize),
}


@pytest.mark.parametrize("case", list(OWNER))
def test_exactly_one_rule_takes_each_operator(case):
    func, owner = OWNER[case]
    for rule in ALL_RULES:
        sch = rule.apply(func, CPU, False)
        if isinstance(rule, owner):
            assert sch is not None
            assert not tvm_ffi.structural_equal(sch.mod["main"], func)  # it did schedule
        else:
            assert sch is None


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: type(r).__name__)
def test_rules_decline_foreign_funcs_and_non_cpu_targets(rule, foreign):
    assert rule.apply(foreign, CPU, False) is None
    for func, _ in OWNER.values():
        assert rule.apply(func, CUDA, False) is None
    scheduled = func.with_attr("tirx.is_scheduled", True)
    assert rule.apply(scheduled, CPU, False) is None


def test_rules_leave_foreign_funcs_unchanged_in_a_module(foreign):
    mod = tvm.IRModule({"main": foreign})
    with CPU:
        out = ApplyDefaultSchedule(*cpu_rules())(mod)
    tvm.ir.assert_structural_equal(out["main"], foreign)


# ------------------------------------------------------------------ numerics once scheduled
@pytest.mark.parametrize(
    "n, k, layout, m_hint",
    [
        (13, 37, WeightLayout.TWO_BIT, None),  # K not a multiple of any lane count
        (13, 320, WeightLayout.TWO_BIT, None),  # packed-lane GEMV path
        (13, 320, WeightLayout.BASE3, None),
        (70, 320, WeightLayout.TWO_BIT, 64),  # GEMM, N not a multiple of the tile
        (13, 37, WeightLayout.BASE3, 64),
    ],
)
def test_scheduled_ternary_matmul(threads, n, k, layout, m_hint):
    rng = np.random.default_rng(n + k)
    func = ternary_matmul(n, k, act_bits=8, layout=layout)
    if m_hint is not None:
        func = func.with_attr(attrs.M_HINT, m_hint)
    ex = _compile(func)
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    alpha = rng.random(n).astype(np.float32)
    for m in (1, 3, 17):
        x_q, x_s = _act(rng, m, k)
        got = _call(ex, [x_q, x_s, pack_weight(q_w, layout), alpha], (m, n))
        assert np.array_equal(got, reference.ternary_matmul(x_q, x_s, q_w, alpha))


@pytest.mark.parametrize("k, m_hint", [(320, None), (37, None), (320, 64)])
def test_scheduled_gate_up(threads, k, m_hint):
    rng = np.random.default_rng(k)
    i = 13
    func = ternary_gate_up(i, k, act_bits=4)
    if m_hint is not None:
        func = func.with_attr(attrs.M_HINT, m_hint)
    ex = _compile(func)
    q_w = rng.integers(-1, 2, (2 * i, k)).astype(np.int8)
    alpha = rng.random(2 * i).astype(np.float32)
    for m in (1, 17):
        x_q, x_s = _act(rng, m, k)
        got = _call(ex, [x_q, x_s, pack_weight(q_w, "2bit"), alpha], (m, i))
        assert np.array_equal(got, reference.ternary_gate_up(x_q, x_s, q_w, alpha))


@pytest.mark.parametrize("n, k", [(13, 37), (70, 320), (256, 37)])  # 256: permuted lanes
def test_scheduled_sparse(threads, n, k):
    rng = np.random.default_rng(n * k)
    ex = _compile(sparse_int8_matmul(n, k))
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    alpha = rng.random(n).astype(np.float32)
    for m in (1, 3, 17):
        x_q, x_s = _act(rng, m, k, zero_frac=0.85)
        got = _call(ex, [x_q, x_s, pack_weight(q_w, "2bit_kmajor"), alpha], (m, n))
        assert np.array_equal(got, reference.ternary_matmul(x_q, x_s, q_w, alpha))


def test_scheduled_norm_quantize(threads):
    act = get_scheme("a4.8").o
    rng = np.random.default_rng(5)
    ex = _compile(norm_quantize(300, act=act, norm_eps=1e-5, has_weight=True))
    gamma = rng.random(300).astype(np.float32)
    for m in (1, 17):
        x = rng.standard_normal((m, 300)).astype(np.float32)
        x_q = tvm.runtime.tensor(np.zeros((m, 300), np.int8))
        x_s = tvm.runtime.tensor(np.zeros((m, 1), np.float32))
        ex["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(gamma), x_q, x_s)
        want_q, want_s = reference.quantize_act(reference.rmsnorm(x, gamma, 1e-5), act)
        assert np.array_equal(x_q.numpy(), want_q) and np.array_equal(x_s.numpy(), want_s)
