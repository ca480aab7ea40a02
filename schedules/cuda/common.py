"""Pieces shared by the CUDA schedule rules: target check, op dispatch, tile arithmetic."""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from bitnet_tvm.schedules import attrs

__all__ = ["DENSE", "GATE_UP", "BitnetCUDARule", "divisor", "is_cuda", "pow2_divisor"]

DENSE = (attrs.OpName.TERNARY_INT4_MATMUL, attrs.OpName.TERNARY_INT8_MATMUL)
GATE_UP = (attrs.OpName.TERNARY_INT4_GATE_UP, attrs.OpName.TERNARY_INT8_GATE_UP)


def is_cuda(target: Target | None) -> bool:
    """Whether ``target`` is a CUDA target."""
    return target is not None and target.kind.name == "cuda"


class BitnetCUDARule(ScheduleRule):
    """A CUDA rule that declines (returns None) unless the PrimFunc is one of ``ops``."""

    ops: tuple[attrs.OpName, ...] = ()

    def matches(self, func: tirx.PrimFunc, target: Target) -> bool:
        """Whether this rule should schedule ``func`` for ``target``."""
        return (
            isinstance(func, tirx.PrimFunc)
            and is_cuda(target)
            and attrs.get_op(func) in self.ops
            and "tirx.is_scheduled" not in func.attrs
        )


def pow2_divisor(extent: int, want: int) -> int:
    """The largest power of two that divides ``extent`` and is at most ``want`` (at least 1).

    Thread counts along a reduction are powers of two so that the cross-thread reduction is a
    plain warp-shuffle tree, and divisors so that no tail predicate is needed.
    """
    factor = 1
    while factor * 2 <= want and extent % (factor * 2) == 0:
        factor *= 2
    return factor


def divisor(extent: int, want: int) -> int:
    """The largest divisor of ``extent`` that is at most ``want`` (no tail predicate then)."""
    for factor in range(min(want, extent), 0, -1):
        if extent % factor == 0:
            return factor
    return 1
