"""Per-target choices the graph passes ask the schedules for (weight layout of each operator)."""

from __future__ import annotations

import tvm

from .layouts import WeightLayout

__all__ = ["select_layout"]


def select_layout(kind: str, target: tvm.target.Target) -> WeightLayout:
    """The packed weight layout the ``target``'s schedules want for a ternary matmul ``kind``.

    Parameters
    ----------
    kind : {"dense", "gate_up", "sparse"}
        Operator kind.  The sparse operator reads whole rows of ``W^T`` (one per non-zero
        activation), so it wants K-major weights; the dense ones stream ``W`` row-major.
    target : tvm.target.Target
        Compilation target (CPU and CUDA take the same layouts today).
    """
    if kind == "sparse":
        return WeightLayout.TWO_BIT_KMAJOR
    if kind in ("dense", "gate_up"):
        return WeightLayout.TWO_BIT
    raise ValueError(f"unknown ternary matmul kind {kind!r}; expected dense, gate_up or sparse")
