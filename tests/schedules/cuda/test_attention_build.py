"""The packed-KV operators, scheduled by the CUDA rule, build for CUDA and compile with nvcc
for sm_80 and sm_90 (no GPU needed): every loop nest is bound to threads (VerifyMemory)."""

from __future__ import annotations

import re

import pytest
import tvm
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm.cuda_aot import compile_cuda_source, cuda_source
from bitnet_tvm.schedules.cuda import KVAttention, KVAttentionKnobs, cuda_rules
from bitnet_tvm.schedules.operators import kv_append, kv_attention

OPERATORS = {
    "append_kv3_bos": kv_append(5, 128, bits=3, bos_bits=4),
    "append_kv4": kv_append(2, 12, bits=4),
    "attention_kv3_bos_gqa": kv_attention(20, 5, 128, bits=3, bos_bits=4, scale=128**-0.5),
    "attention_kv4_mha": kv_attention(3, 3, 12, bits=4, scale=0.25),
}


def _build(name: str, target: tvm.target.Target):
    with target:
        mod = ApplyDefaultSchedule(*cuda_rules())(tvm.IRModule({"main": OPERATORS[name]}))
    assert mod["main"].attrs["tirx.is_scheduled"]
    ex = tvm.compile(mod, target=target)
    assert len(re.findall(r'extern "C" __global__ void', cuda_source(ex))) >= 3
    return ex


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", ["append_kv3_bos", "attention_kv3_bos_gqa"])
def test_operator_compiles_to_cubin(cuda, nvcc, name, arch):
    ex = _build(name, cuda.target(arch))
    assert compile_cuda_source(ex, arch, nvcc=nvcc)[:4] == b"\x7fELF"


@pytest.mark.parametrize("name", ["append_kv4", "attention_kv4_mha"])
def test_operator_builds_for_cuda(cuda, name):
    _build(name, cuda.target("sm_90"))


def test_rule_declines_other_targets_and_functions(cuda, foreign):
    rule = KVAttention()
    assert rule.apply(OPERATORS["append_kv4"], cuda.CPU, False) is None
    assert rule.apply(foreign, cuda.target(), False) is None
    with pytest.raises(ValueError, match="threads must lie"):
        KVAttentionKnobs(threads=2048)
