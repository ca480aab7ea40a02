"""CPU (x86 AVX-512 / AVX2, generic LLVM) schedule rules, one workload per file.

``cpu_rules()`` lists them in the order ``ApplyDefaultSchedule`` should try them; put them in
front of TVM's own rules (``ApplyDefaultSchedule(*cpu_rules(), dl.cpu.GEMV(), ...)``).  Every
rule declines (returns None) for PrimFuncs that are not ours and for non-CPU targets.
"""

from __future__ import annotations

from tvm.s_tir.dlight import ScheduleRule

from bitnet_tvm.schedules.cpu.attention import KVAttention
from bitnet_tvm.schedules.cpu.avx2_matmul import Avx2Knobs, Avx2Matmul
from bitnet_tvm.schedules.cpu.base3_sparse import Base3SparseGemv, Base3SparseKnobs
from bitnet_tvm.schedules.cpu.gemm import GemmKnobs, TernaryGemm
from bitnet_tvm.schedules.cpu.gemv import GemvKnobs, TernaryGemv
from bitnet_tvm.schedules.cpu.int8_matmul import Int8Matmul, Int8MatmulKnobs
from bitnet_tvm.schedules.cpu.lut_gemm import LutGemm, LutKnobs
from bitnet_tvm.schedules.cpu.norm_quantize import NormQuantize
from bitnet_tvm.schedules.cpu.sparse_gemv import SparseGemv, SparseGemvKnobs
from bitnet_tvm.schedules.cpu.vnni_gate_up import VnniGateUp, VnniGateUpKnobs
from bitnet_tvm.schedules.cpu.vnni_matmul import VnniKnobs, VnniMatmul, VnniTile
from bitnet_tvm.schedules.cpu.vnni_sparse import VnniSparseGemv, VnniSparseKnobs
from bitnet_tvm.schedules.cpu.vnni_sparse_base3 import VnniSparseBase3, VnniSparseBase3Knobs

__all__ = [
    "Avx2Knobs",
    "Avx2Matmul",
    "Base3SparseGemv",
    "Base3SparseKnobs",
    "GemmKnobs",
    "GemvKnobs",
    "Int8Matmul",
    "Int8MatmulKnobs",
    "KVAttention",
    "LutGemm",
    "LutKnobs",
    "NormQuantize",
    "SparseGemv",
    "SparseGemvKnobs",
    "TernaryGemm",
    "TernaryGemv",
    "VnniGateUp",
    "VnniGateUpKnobs",
    "VnniKnobs",
    "VnniMatmul",
    "VnniSparseBase3",
    "VnniSparseBase3Knobs",
    "VnniSparseGemv",
    "VnniSparseKnobs",
    "VnniTile",
    "cpu_rules",
]


def cpu_rules() -> list[ScheduleRule]:
    """The bitnet-tvm CPU schedule rules with default knobs.

    :class:`VnniMatmul` comes first: on AVX-512 VNNI targets it takes the dense ``2bit``
    matmuls of any M; elsewhere it declines and the generic GEMV (before GEMM) rules take them.
    Only :class:`LutGemm` precedes it: INT4 prefill (``m_hint >= 16``) on AVX-512 VBMI targets.
    :class:`VnniSparseGemv` takes the sparse matmul on VNNI targets, :class:`SparseGemv`
    elsewhere; on 1.6-bit ``base3_kmajor`` weights :class:`VnniSparseBase3` (VNNI) or
    :class:`Base3SparseGemv` do;
    :class:`VnniGateUp` the decode gate/up (gate first) before the generic GEMV; the prefill
    gate/up (``m_hint > 8``) goes to :class:`LutGemm` (INT4, VBMI) or :class:`VnniMatmul`.
    :class:`Avx2Matmul` follows :class:`VnniMatmul`: it takes the dense ``2bit`` decode matmuls
    on AVX2 targets without VNNI (``vpmaddubsw``); targets without AVX2 keep the generic rules.
    """
    return [
        LutGemm(),
        VnniMatmul(),
        Avx2Matmul(),
        VnniGateUp(),
        TernaryGemv(),
        TernaryGemm(),
        VnniSparseGemv(),
        VnniSparseBase3(),
        Base3SparseGemv(),
        SparseGemv(),
        NormQuantize(),
        Int8Matmul(),
        KVAttention(),
    ]
