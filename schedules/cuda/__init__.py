"""CUDA (sm_80, sm_90) schedule rules, one workload per file.

``cuda_rules()`` lists them in the order ``ApplyDefaultSchedule`` should try them; put them in
front of TVM's dlight GPU rules (``ApplyDefaultSchedule(*cuda_rules(), dl.gpu.Matmul(), ...,
dl.gpu.Fallback())``), which would otherwise claim every PrimFunc.  Every rule declines (returns
None) for PrimFuncs that are not ours and for non-CUDA targets, and binds every loop nest it
schedules to ``blockIdx`` / ``threadIdx``.

Not yet here: a tiled prefill GEMM (large M runs on the GEMV rule, correct but re-reading the
weights per token), tensor-core MMA, and a parallel-per-row ``norm_quantize``.
"""

from __future__ import annotations

from tvm.s_tir.dlight import ScheduleRule

from bitnet_tvm.schedules.cuda.gemv import GemvKnobs, TernaryGemv
from bitnet_tvm.schedules.cuda.norm_quantize import NormQuantize, NormQuantizeKnobs
from bitnet_tvm.schedules.cuda.sparse_gemv import SparseGemv, SparseGemvKnobs

__all__ = [
    "GemvKnobs",
    "NormQuantize",
    "NormQuantizeKnobs",
    "SparseGemv",
    "SparseGemvKnobs",
    "TernaryGemv",
    "cuda_rules",
]


def cuda_rules() -> list[ScheduleRule]:
    """The bitnet-tvm CUDA schedule rules with default knobs."""
    return [TernaryGemv(), SparseGemv(), NormQuantize()]
