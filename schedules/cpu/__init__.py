"""CPU (x86 AVX-512 / AVX2, generic LLVM) schedule rules, one workload per file.

``cpu_rules()`` lists them in the order ``ApplyDefaultSchedule`` should try them; put them in
front of TVM's own rules (``ApplyDefaultSchedule(*cpu_rules(), dl.cpu.GEMV(), ...)``).  Every
rule declines (returns None) for PrimFuncs that are not ours and for non-CPU targets.
"""

from __future__ import annotations

from tvm.s_tir.dlight import ScheduleRule

from bitnet_tvm.schedules.cpu.gemm import GemmKnobs, TernaryGemm
from bitnet_tvm.schedules.cpu.gemv import GemvKnobs, TernaryGemv
from bitnet_tvm.schedules.cpu.norm_quantize import NormQuantize
from bitnet_tvm.schedules.cpu.sparse_gemv import SparseGemv, SparseGemvKnobs
from bitnet_tvm.schedules.cpu.vnni_matmul import VnniKnobs, VnniMatmul, VnniTile

__all__ = [
    "GemmKnobs",
    "GemvKnobs",
    "NormQuantize",
    "SparseGemv",
    "SparseGemvKnobs",
    "TernaryGemm",
    "TernaryGemv",
    "VnniKnobs",
    "VnniMatmul",
    "VnniTile",
    "cpu_rules",
]


def cpu_rules() -> list[ScheduleRule]:
    """The bitnet-tvm CPU schedule rules with default knobs.

    :class:`VnniMatmul` comes first: on AVX-512 VNNI targets it takes the dense ``2bit``
    matmuls of any M; elsewhere it declines and the generic GEMV (before GEMM) rules take them.
    """
    return [VnniMatmul(), TernaryGemv(), TernaryGemm(), SparseGemv(), NormQuantize()]
