"""Helpers shared by the fused operator definitions: argument checks, weight decoding, attrs."""

from __future__ import annotations

from typing import Any

from tvm import tirx
from tvm.script import tirx as T

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.layouts import WeightLayout, packed_shape

__all__ = ["check_act_bits", "check_dim", "matmul_attrs", "ternary_code", "weight_shape"]


def check_dim(value: object, name: str) -> int:
    """``value`` as a positive Python int, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_act_bits(act_bits: object) -> int:
    """4 or 8, or a ValueError."""
    if act_bits not in (4, 8) or isinstance(act_bits, bool):
        raise ValueError(f"act_bits must be 4 or 8, got {act_bits!r}")
    return int(act_bits)


def weight_shape(n: int, k: int, layout: WeightLayout) -> tuple[tirx.IntImm, tirx.IntImm]:
    """The packed weight shape as int64 immediates (the index type of every operator)."""
    rows, cols = packed_shape(n, k, layout)
    return T.int64(rows), T.int64(cols)


def ternary_code(w: tirx.Buffer, layout: WeightLayout, n: tirx.PrimExpr, k: tirx.PrimExpr):
    """int32 code ``W[n, k] + 1`` in {0, 1, 2}, read from the packed buffer ``w``.

    The unpacking is done in int32 (uint8 vector shifts broke CUDA code generation, and int32
    is what AVX-512 shifts by variable amounts natively).
    """
    if layout is WeightLayout.BASE3:
        byte = T.Cast("int32", w[n, k // T.int64(5)])
        digit = T.Cast("int32", k % T.int64(5))
        pow3 = T.Select(
            digit < 2,
            T.Select(digit == 0, 1, 3),
            T.Select(digit == 2, 9, T.Select(digit == 3, 27, 81)),
        )
        return T.truncmod(T.truncdiv(byte, pow3), 3)
    if layout.k_major:
        byte, pos = w[k, n // T.int64(4)], n % T.int64(4)
    else:
        byte, pos = w[n, k // T.int64(4)], k % T.int64(4)
    return T.bitwise_and(T.shift_right(T.Cast("int32", byte), T.Cast("int32", pos) * 2), 3)


def matmul_attrs(
    op: attrs.OpName, n: int, k: int, layout: WeightLayout, act_bits: int
) -> dict[str, Any]:
    """The attributes every ternary matmul PrimFunc carries."""
    return {
        attrs.OP: op.value,
        attrs.LAYOUT: layout.value,
        attrs.ACT_BITS: act_bits,
        attrs.N: n,
        attrs.K: k,
        "tirx.noalias": True,
    }
