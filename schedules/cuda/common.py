"""Pieces shared by the CUDA schedule rules: target check, op dispatch, tile arithmetic."""

from __future__ import annotations

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.rule import BitnetRule, split_factor

__all__ = ["DENSE", "GATE_UP", "BitnetCUDARule", "pow2_divisor", "split_factor"]

DENSE = (attrs.OpName.TERNARY_INT4_MATMUL, attrs.OpName.TERNARY_INT8_MATMUL)
GATE_UP = (attrs.OpName.TERNARY_INT4_GATE_UP, attrs.OpName.TERNARY_INT8_GATE_UP)


class BitnetCUDARule(BitnetRule):
    """A rule for target kind ``cuda`` (see :class:`~bitnet_tvm.schedules.rule.BitnetRule`)."""

    target_kind = "cuda"


def pow2_divisor(extent: int, want: int) -> int:
    """The largest power of two that divides ``extent`` and is at most ``want`` (at least 1).

    Thread counts along a reduction are powers of two so that the cross-thread reduction is a
    plain warp-shuffle tree, and divisors so that no tail predicate is needed.
    """
    factor = 1
    while factor * 2 <= want and extent % (factor * 2) == 0:
        factor *= 2
    return factor
