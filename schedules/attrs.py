"""PrimFunc attribute keys shared by the graph passes and the schedule rules.

Graph passes hand facts to schedules through PrimFunc attributes; every key is defined here,
once.  Each fused operator of :mod:`bitnet_tvm.schedules.operators` carries at least
:data:`OP`, :data:`LAYOUT` (matmuls), :data:`ACT_BITS` and its static shapes.  Schedule rules
dispatch on :data:`OP` with :func:`get_op`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "ACT_BITS",
    "ACT_EPS",
    "ACT_EPS_MODE",
    "ACT_METHOD",
    "ACT_TOPK",
    "ATTN_SCALE",
    "HAS_WEIGHT",
    "HEADS",
    "HEAD_DIM",
    "KV_BITS",
    "KV_BOS_BITS",
    "KV_HEADS",
    "LAYOUT",
    "M_HINT",
    "NORM_EPS",
    "OP",
    "K",
    "N",
    "OpName",
    "get_int",
    "get_op",
]

#: Operator name, a :class:`OpName` value (str).
OP = "bitnet.op"
#: Weight layout name, a :class:`bitnet_tvm.schedules.layouts.WeightLayout` value (str).
LAYOUT = "bitnet.layout"
#: Activation width in bits (4 or 8, int).
ACT_BITS = "bitnet.act_bits"
#: Output features (int): N of a matmul, I (not 2I) of a fused gate/up.
N = "bitnet.n"
#: Reduction length / hidden size (int).
K = "bitnet.k"
#: Expected number of tokens M (int), set by the graph pass that specializes a call site for
#: decode (small M) or prefill; schedule rules pick GEMV or GEMM from it (absent: decode).
M_HINT = "bitnet.m_hint"
#: norm_quantize: activation statistic, ``"absmean"`` or ``"absmax"`` (str).
ACT_METHOD = "bitnet.act_method"
#: norm_quantize: TopK keep ratio (float); absent when the site has no TopK.
ACT_TOPK = "bitnet.act_topk"
#: norm_quantize: ``"add"`` or ``"clamp"`` (str).
ACT_EPS_MODE = "bitnet.act_eps_mode"
#: norm_quantize: the quantizer's epsilon (float).
ACT_EPS = "bitnet.act_eps"
#: norm_quantize: RMSNorm epsilon (float); absent when there is no norm.
NORM_EPS = "bitnet.norm_eps"
#: norm_quantize: whether the RMSNorm has a ``gamma`` parameter (bool).
HAS_WEIGHT = "bitnet.has_weight"
#: kv_append / kv_attention: KV-cache code width, 3 or 4 (int).
KV_BITS = "bitnet.kv_bits"
#: kv_append / kv_attention: width of the separate BOS slot (int); absent when there is none.
KV_BOS_BITS = "bitnet.kv_bos_bits"
#: kv_append / kv_attention: key/value heads (int).
KV_HEADS = "bitnet.kv_heads"
#: kv_attention: query heads (int).
HEADS = "bitnet.heads"
#: kv_append / kv_attention: head_dim (int).
HEAD_DIM = "bitnet.head_dim"
#: kv_attention: score multiplier, ``1 / sqrt(head_dim)`` as the graph has it (float).
ATTN_SCALE = "bitnet.attn_scale"


class OpName(StrEnum):
    """Values of the :data:`OP` attribute."""

    TERNARY_INT4_MATMUL = "ternary_int4_matmul"
    TERNARY_INT8_MATMUL = "ternary_int8_matmul"
    TERNARY_INT4_GATE_UP = "ternary_int4_gate_up"
    TERNARY_INT8_GATE_UP = "ternary_int8_gate_up"
    SPARSE_INT8_MATMUL = "sparse_int8_matmul"
    NORM_QUANTIZE = "norm_quantize"
    #: INT8 x INT8 matmul with per-row weight scales (the optional INT8 LM head).
    INT8_MATMUL = "int8_matmul"
    KV_APPEND = "kv_append"
    KV_ATTENTION = "kv_attention"


def get_int(func: Any, key: str) -> int | None:
    """Integer attribute ``key`` of ``func``, or None when absent."""
    attrs = getattr(func, "attrs", None)
    if attrs is None or key not in attrs:
        return None
    return int(attrs[key])


def get_op(func: Any) -> OpName | None:
    """The :class:`OpName` of a PrimFunc built by this package, or None for any other function."""
    attrs = getattr(func, "attrs", None)
    if attrs is None or OP not in attrs:
        return None
    try:
        return OpName(str(attrs[OP]))
    except ValueError:
        return None
