"""Helpers shared by the fused operator definitions: argument checks, weight decoding, attrs."""

from __future__ import annotations

from typing import Any

from tvm import tirx
from tvm.script import tirx as T

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.layouts import WeightLayout, packed_shape

__all__ = [
    "base3_digit",
    "check_act_bits",
    "check_dim",
    "matmul_attrs",
    "mulshift_digit",
    "mulshift_t",
    "pow3",
    "ternary_code",
    "weight_shape",
]


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


def pow3(e: tirx.PrimExpr) -> tirx.PrimExpr:
    """``3 ** e`` for an integer expression ``e`` in 0..5 (int32)."""
    return T.Select(
        e < 3,
        T.Select(e == 0, 1, T.Select(e == 1, 3, 9)),
        T.Select(e == 3, 27, T.Select(e == 4, 81, 243)),
    )


def base3_digit(byte: tirx.PrimExpr, digit: tirx.PrimExpr) -> tirx.PrimExpr:
    """int32 base-3 digit ``digit`` (0..4) of the int32 ``byte``: ``byte // 3**digit % 3``."""
    return T.truncmod(T.truncdiv(byte, pow3(digit)), 3)


def mulshift_t(byte: tirx.PrimExpr, e: tirx.PrimExpr) -> tirx.PrimExpr:
    """``t_e = byte * 3**e mod 256`` of the int32 ``byte`` (``e`` in 0..5), as int32."""
    return T.bitwise_and(byte * pow3(e), 255)


def mulshift_digit(byte: tirx.PrimExpr, digit: tirx.PrimExpr) -> tirx.PrimExpr:
    """Digit ``digit`` (0..4) of a multiply-shift byte: ``(3 t_digit) >> 8`` (see
    :func:`bitnet_tvm.reference.pack_ternary_base3_vnni`)."""
    return T.shift_right(mulshift_t(byte, digit) * 3, 8)


def ternary_code(w: tirx.Buffer, layout: WeightLayout, n: tirx.PrimExpr, k: tirx.PrimExpr):
    """int32 code ``W[n, k] + 1`` in {0, 1, 2}, read from the packed buffer ``w``.

    The unpacking is done in int32 (uint8 vector shifts broke CUDA code generation, and int32
    is what AVX-512 shifts by variable amounts natively).
    """
    i64 = T.int64
    if layout is WeightLayout.BASE3:
        return base3_digit(T.Cast("int32", w[n, k // i64(5)]), T.Cast("int32", k % i64(5)))
    if layout is WeightLayout.BASE3_KMAJOR:  # see reference.pack_ternary_base3_mulshift
        return mulshift_digit(T.Cast("int32", w[k, n // i64(5)]), T.Cast("int32", n % i64(5)))
    if layout is WeightLayout.BASE3_VNNI:  # see reference.pack_ternary_base3_vnni
        byte = w[n // i64(16), k // i64(320) * i64(1024) + n % i64(16) * i64(64) + k % i64(64)]
        return mulshift_digit(T.Cast("int32", byte), T.Cast("int32", k % i64(320) // i64(64)))
    if layout is WeightLayout.TWO_BIT_VNNI:  # see reference.pack_ternary_2bit_vnni
        byte = w[
            n // i64(16), k // i64(64) * i64(256) + n % i64(16) * i64(16) + k % i64(64) // i64(4)
        ]
        pos = k % i64(4)
    elif layout.k_major:
        byte, pos = w[k, n // i64(4)], n % i64(4)
    else:
        byte, pos = w[n, k // i64(4)], k % i64(4)
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
