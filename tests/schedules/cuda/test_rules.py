"""CUDA schedule rules: which PrimFuncs they take, thread bindings, the template protocol, and
the schedules' loop nests checked for exact numerics on the CPU (threads left serial, dp4a and
WMMA not tensorized)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cuda import (
    GemmKnobs,
    GemvKnobs,
    NormQuantize,
    SparseGemv,
    SparseGemvKnobs,
    TernaryGateUpGemm,
    TernaryGemm,
    TernaryGemv,
    cuda_rules,
)
from bitnet_tvm.schedules.cuda.gemm import schedule_gemm
from bitnet_tvm.schedules.cuda.gemm_gate_up import schedule_gate_up_gemm
from bitnet_tvm.schedules.cuda.gemv import schedule_gemv
from bitnet_tvm.schedules.cuda.sparse_gemv import schedule_sparse_gemv
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import (
    norm_quantize,
    sparse_int8_matmul,
    ternary_gate_up,
    ternary_matmul,
)
from bitnet_tvm.schemes import get_scheme

CUDA = tvm.target.Target({"kind": "cuda", "arch": "sm_90"}, host="llvm")
CPU = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 2})
ALL_RULES = [TernaryGemm(), TernaryGateUpGemm(), TernaryGemv(), SparseGemv(), NormQuantize()]
OWNER = {
    attrs.OpName.TERNARY_INT4_MATMUL: TernaryGemv,
    attrs.OpName.TERNARY_INT8_MATMUL: TernaryGemv,
    attrs.OpName.TERNARY_INT4_GATE_UP: TernaryGemv,
    attrs.OpName.TERNARY_INT8_GATE_UP: TernaryGemv,
    attrs.OpName.SPARSE_INT8_MATMUL: SparseGemv,
    attrs.OpName.NORM_QUANTIZE: NormQuantize,
}


def _owner(func) -> type:
    """The rule that schedules ``func`` in ``cuda_rules()`` order."""
    hint, op = attrs.get_int(func, attrs.M_HINT), attrs.get_op(func)
    if hint is not None and hint >= 64 and OWNER[op] is TernaryGemv:
        if str(func.attrs[attrs.LAYOUT]) == "2bit":
            return TernaryGateUpGemm if op in _GATE_UP else TernaryGemm
    return OWNER[op]


def test_the_first_rule_that_takes_each_operator_binds_threads(cuda, op_name):
    func = cuda.OPERATORS[op_name]
    owner = _owner(func)
    taken = [type(rule) for rule in cuda_rules() if rule.apply(func, CUDA, False) is not None]
    assert taken[0] is owner
    assert taken == ([owner, TernaryGemv] if owner in (TernaryGemm, TernaryGateUpGemm) else [owner])
    sch = owner().apply(func, CUDA, False)
    scheduled = sch.mod["main"]
    assert not tvm_ffi.structural_equal(scheduled, func)
    script = scheduled.script()
    assert 'thread="blockIdx.x"' in script and 'thread="threadIdx.' in script


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: type(r).__name__)
def test_rules_decline_foreign_funcs_llvm_targets_and_scheduled_funcs(cuda, rule, foreign):
    assert rule.apply(foreign, CUDA, False) is None
    for func in cuda.OPERATORS.values():
        assert rule.apply(func, CPU, False) is None
        assert rule.apply(func.with_attr("tirx.is_scheduled", True), CUDA, False) is None
        hinted = func.with_attr(attrs.M_HINT, 2048)
        assert rule.apply(hinted, CPU, False) is None
        assert rule.apply(hinted.with_attr("tirx.is_scheduled", True), CUDA, False) is None


def test_rules_leave_foreign_funcs_unchanged_in_a_module(foreign):
    mod = tvm.IRModule({"main": foreign})
    with CUDA:
        out = ApplyDefaultSchedule(*cuda_rules())(mod)
    tvm.ir.assert_structural_equal(out["main"], foreign)


def test_dp4a_only_where_the_layout_allows(cuda):
    ops = cuda.OPERATORS

    def uses_dp4a(name):
        return "__dp4a" in TernaryGemv().apply(ops[name], CUDA, False).mod.script()

    assert uses_dp4a("dense_dp4a") and uses_dp4a("gate_up_dp4a")
    assert not uses_dp4a("dense_generic_k172") and not uses_dp4a("dense_base3")
    no_dp4a = TernaryGemv(GemvKnobs(dp4a=False)).apply(ops["dense_dp4a"], CUDA, False)
    assert "__dp4a" not in no_dp4a.mod.script()


@pytest.mark.parametrize(
    "kwargs", [{"rows": 0}, {"vec": 6}, {"threads": 48}, {"threads": 64}, {"rows": True}]
)
def test_gemv_knobs_reject_bad_values(kwargs):
    with pytest.raises(ValueError, match="GemvKnobs"):
        GemvKnobs(**kwargs)


def test_sparse_knobs_reject_bad_values():
    with pytest.raises(ValueError, match="SparseGemvKnobs"):
        SparseGemvKnobs(threads_n=64, threads_k=32)


# ----------------------------------------------- loop nests of the schedules, exact on the CPU
def _run_cpu(sch, inputs, out_shape):
    ex = tvm.compile(sch.mod, target=CPU)
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    ex["main"](*[tvm.runtime.tensor(a) for a in inputs], out)
    return out.numpy()


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
        "gate_up_dp4a",
        "gate_up_generic",
    ],
)
def test_gemv_loop_nest_matches_reference(cuda, name):
    func = cuda.OPERATORS[name]
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    gate_up = attrs.get_op(func) in (
        attrs.OpName.TERNARY_INT4_GATE_UP,
        attrs.OpName.TERNARY_INT8_GATE_UP,
    )
    rows = 2 * n if gate_up else n
    rng = np.random.default_rng(n * k)
    q_w = rng.integers(-1, 2, (rows, k)).astype(np.int8)
    alpha = rng.random(rows).astype(np.float32)
    w = pack_weight(q_w, str(func.attrs[attrs.LAYOUT]))
    sch = schedule_gemv(func, GemvKnobs(), bind_threads=False)
    for m in (1, 3):
        x_q, x_s = _act(rng, m, k)
        got = _run_cpu(sch, [x_q, x_s, w, alpha], (m, n))
        matmul = reference.ternary_gate_up if gate_up else reference.ternary_matmul
        want = matmul(x_q, x_s, q_w, alpha)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("name", ["sparse", "sparse_odd"])
def test_sparse_loop_nest_matches_reference(cuda, name):
    func = cuda.OPERATORS[name]
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    rng = np.random.default_rng(n + k)
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    alpha = rng.random(n).astype(np.float32)
    sch = schedule_sparse_gemv(func, SparseGemvKnobs(), bind_threads=False)
    for m in (1, 3):
        x_q, x_s = _act(rng, m, k, zero_frac=0.85)
        got = _run_cpu(sch, [x_q, x_s, pack_weight(q_w, "2bit_kmajor"), alpha], (m, n))
        assert np.array_equal(got, reference.ternary_matmul(x_q, x_s, q_w, alpha))


# ----------------------------------------------------- prefill GEMM (tensor cores) selection
def _first_rule(func):
    """The class of the first rule of ``cuda_rules()`` that takes ``func``."""
    return next(type(r) for r in cuda_rules() if r.apply(func, CUDA, False) is not None)


@pytest.mark.parametrize("hint", [None, 1, 63, 64, 2048])
def test_gemm_takes_dense_2bit_matmuls_hinted_for_prefill(hint):
    func = ternary_matmul(256, 512, act_bits=4)
    if hint is not None:
        func = func.with_attr(attrs.M_HINT, hint)
    want = TernaryGemm if hint is not None and hint >= 64 else TernaryGemv
    assert _first_rule(func) is want


_GATE_UP = (attrs.OpName.TERNARY_INT4_GATE_UP, attrs.OpName.TERNARY_INT8_GATE_UP)
#: golden rule selection at decode (M = 1: no hint) and prefill (``bitnet.m_hint`` = 128)
_GOLDEN = {
    "dense_2bit": (ternary_matmul(256, 512, act_bits=4), TernaryGemv, TernaryGemm),
    "dense_base3": (ternary_matmul(64, 320, act_bits=8, layout="base3"), TernaryGemv, TernaryGemv),
    "gate_up_2bit": (ternary_gate_up(64, 256, act_bits=4), TernaryGemv, TernaryGateUpGemm),
    "gate_up_base3": (
        ternary_gate_up(64, 320, act_bits=8, layout="base3"),
        TernaryGemv,
        TernaryGemv,
    ),
    "sparse": (sparse_int8_matmul(64, 172), SparseGemv, SparseGemv),
    "norm_quantize": (
        norm_quantize(64, act=get_scheme("a4.8").qkv, norm_eps=1e-5, has_weight=True),
        NormQuantize,
        NormQuantize,
    ),
}


@pytest.mark.parametrize("name", list(_GOLDEN))
def test_golden_rule_selection_at_decode_and_prefill(name):
    func, decode, prefill = _GOLDEN[name]
    assert _first_rule(func) is decode
    assert _first_rule(func.with_attr(attrs.M_HINT, 1)) is decode
    assert _first_rule(func.with_attr(attrs.M_HINT, 128)) is prefill


def test_gemm_schedule_uses_int8_wmma_from_shared_memory():
    func = ternary_matmul(256, 512, act_bits=8).with_attr(attrs.M_HINT, 2048)
    script = TernaryGemm().apply(func, CUDA, False).mod.script()
    for call in ("T.tvm_fill_fragment", "T.tvm_load_matrix_sync", "T.tvm_mma_sync"):
        assert call in script
    assert "T.tvm_store_matrix_sync" in script
    assert 'scope="shared.dyn"' in script and 'scope="wmma.matrix_b"' in script
    assert 'thread="blockIdx.y"' in script and 'thread="threadIdx.y"' in script


@pytest.mark.parametrize("kwargs", [{"warps_m": 0}, {"frag_n": True}, {"warps_m": 8, "warps_n": 8}])
def test_gemm_knobs_reject_bad_values(kwargs):
    with pytest.raises(ValueError, match="GemmKnobs"):
        GemmKnobs(**kwargs)


@pytest.mark.parametrize(("n", "k"), [(256, 512), (13, 172), (40, 37)])
def test_gemm_loop_nest_matches_reference(n, k):
    # padding of M, N and K, the decode into the staging buffer and the epilogue (WMMA aside)
    func = ternary_matmul(n, k, act_bits=4).with_attr(attrs.M_HINT, 2048)
    rng = np.random.default_rng(n + k)
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    alpha = rng.random(n).astype(np.float32)
    knobs = GemmKnobs(warps_m=2, warps_n=1, frag_m=1, frag_n=2, k_frags=1)
    sch = schedule_gemm(func, knobs, bind_threads=False)
    for m in (1, 70):
        x_q, x_s = _act(rng, m, k)
        got = _run_cpu(sch, [x_q, x_s, pack_weight(q_w, "2bit"), alpha], (m, n))
        assert np.array_equal(got, reference.ternary_matmul(x_q, x_s, q_w, alpha))


@pytest.mark.parametrize(("i", "k"), [(40, 37), (24, 160)])
def test_gate_up_gemm_loop_nest_matches_reference(i, k):
    # the pair matmul (padding, decode of both halves, per-warp gate + up tiles) and the
    # epilogue in the reference's order, WMMA aside
    func = ternary_gate_up(i, k, act_bits=8).with_attr(attrs.M_HINT, 2048)
    rng = np.random.default_rng(i + k)
    q_w = rng.integers(-1, 2, (2 * i, k)).astype(np.int8)
    alpha = rng.random(2 * i).astype(np.float32) - np.float32(0.3)  # some alpha < 0: g <= 0
    knobs = GemmKnobs(warps_m=2, warps_n=1, frag_m=1, frag_n=2, k_frags=1)
    sch = schedule_gate_up_gemm(func, knobs, bind_threads=False)
    for m in (1, 70):
        x_q, x_s = _act(rng, m, k)
        got = _run_cpu(sch, [x_q, x_s, pack_weight(q_w, "2bit"), alpha], (m, i))
        want = reference.ternary_gate_up(x_q, x_s, q_w, alpha)
        assert 0.2 < np.mean(want == 0) < 0.8  # both GLU branches are exercised
        assert np.array_equal(got, want)
        assert np.array_equal(np.signbit(got), np.signbit(want))  # even the zeros' signs


def test_gate_up_gemm_uses_int8_wmma_on_both_halves():
    func = ternary_gate_up(64, 256, act_bits=4).with_attr(attrs.M_HINT, 2048)
    script = TernaryGateUpGemm().apply(func, CUDA, False).mod.script()
    for call in ("T.tvm_fill_fragment", "T.tvm_load_matrix_sync", "T.tvm_mma_sync"):
        assert call in script
    assert 'scope="wmma.matrix_b"' in script and 'thread="threadIdx.y"' in script


# ------------------------------------------------------------------------- template protocol
#: rule -> an operator it takes (name in the ``cuda.OPERATORS`` fixture, or None: hinted GEMM)
_TAKES = {
    TernaryGemm: None,
    TernaryGateUpGemm: "gate_up_gemm",
    TernaryGemv: "dense_dp4a",
    SparseGemv: "sparse",
    NormQuantize: "norm_topk",
}


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: type(r).__name__)
def test_rules_follow_the_template_protocol(cuda, rule):
    name = _TAKES[type(rule)]
    func = (
        cuda.OPERATORS[name]
        if name
        else ternary_matmul(256, 512, act_bits=4).with_attr(attrs.M_HINT, 2048)
    )
    assert type(rule).follows_protocol() and rule.accepts(func, CUDA)
    space = rule.knob_space(func, CUDA)
    defaults = rule.Knobs()
    assert space and all(getattr(defaults, field) in values for field, values in space.items())
    # the smallest value of every knob schedules too (a corner of the tuner's space)
    knobs = rule.Knobs(**{field: min(values) for field, values in space.items()})
    sch = rule.schedule_with(func, knobs)
    assert 'thread="threadIdx.x"' in sch.mod.script()
