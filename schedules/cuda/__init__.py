"""CUDA (sm_80, sm_90) schedule rules, one workload per file.

``cuda_rules()`` lists them in the order ``ApplyDefaultSchedule`` should try them; put them in
front of TVM's dlight GPU rules (``ApplyDefaultSchedule(*cuda_rules(), dl.gpu.Matmul(), ...,
dl.gpu.Fallback())``), which would otherwise claim every PrimFunc.  Every rule declines (returns
None) for PrimFuncs that are not ours and for non-CUDA targets, and binds every loop nest it
schedules to ``blockIdx`` / ``threadIdx``.

Every rule follows the template protocol of :mod:`bitnet_tvm.schedules.rule` (``Knobs``,
``accepts`` / ``prepare`` / ``schedule`` / ``knob_space``), so the tuner searches the same code.
``TernaryGemm`` and ``TernaryGateUpGemm`` (tensor-core prefill of the dense and the fused
gate/up matmul, ``bitnet.m_hint >= 64``, 2-bit layout) come before ``TernaryGemv``, which takes
every other dense and gate/up matmul.  Not yet here: a parallel-per-row ``norm_quantize``.
"""

from __future__ import annotations

from tvm.s_tir.dlight import ScheduleRule

from bitnet_tvm.schedules.cuda.attention import KVAttention, KVAttentionKnobs
from bitnet_tvm.schedules.cuda.gemm import GemmKnobs, TernaryGemm
from bitnet_tvm.schedules.cuda.gemm_gate_up import TernaryGateUpGemm
from bitnet_tvm.schedules.cuda.gemv import GemvKnobs, TernaryGemv
from bitnet_tvm.schedules.cuda.norm_quantize import NormQuantize, NormQuantizeKnobs
from bitnet_tvm.schedules.cuda.sparse_gemv import SparseGemv, SparseGemvKnobs

__all__ = [
    "GemmKnobs",
    "GemvKnobs",
    "KVAttention",
    "KVAttentionKnobs",
    "NormQuantize",
    "NormQuantizeKnobs",
    "SparseGemv",
    "SparseGemvKnobs",
    "TernaryGateUpGemm",
    "TernaryGemm",
    "TernaryGemv",
    "cuda_rules",
]


def cuda_rules() -> list[ScheduleRule]:
    """The bitnet-tvm CUDA schedule rules with default knobs."""
    return [
        TernaryGemm(),
        TernaryGateUpGemm(),
        TernaryGemv(),
        SparseGemv(),
        NormQuantize(),
        KVAttention(),
    ]
