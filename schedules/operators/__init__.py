"""Fused BitNet operators as target-independent TensorIR, one operator family per module.

Every builder returns a PrimFunc whose tokens axis M is a symbolic int64 taken from the buffer
shapes (one compiled function serves any M) and whose attributes (keys in
:mod:`bitnet_tvm.schedules.attrs`) name the operator for the schedule rules.  Schedules only
transform these definitions; they never change what is computed.
"""

from bitnet_tvm.schedules.operators.attention import kv_append, kv_attention
from bitnet_tvm.schedules.operators.gate_up import ternary_gate_up
from bitnet_tvm.schedules.operators.norm_quantize import norm_quantize
from bitnet_tvm.schedules.operators.sparse_matmul import sparse_int8_matmul
from bitnet_tvm.schedules.operators.ternary_matmul import ternary_matmul

__all__ = [
    "kv_append",
    "kv_attention",
    "norm_quantize",
    "sparse_int8_matmul",
    "ternary_gate_up",
    "ternary_matmul",
]
