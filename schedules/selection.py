"""Per-target choices the graph passes ask the schedules for (weight layout of each operator)."""

from __future__ import annotations

import tvm

from .layouts import WeightLayout
from .target import has_avx512_vnni, has_llvm_features

__all__ = ["gate_up_layout", "select_layout"]


def select_layout(kind: str, target: tvm.target.Target, *, base3: bool = False) -> WeightLayout:
    """The packed weight layout the ``target``'s schedules want for a ternary matmul ``kind``.

    Parameters
    ----------
    kind : {"dense", "gate_up", "sparse"}
        Operator kind.  The sparse operator reads whole rows of ``W^T`` (one per non-zero
        activation), so it wants K-major weights; the dense ones stream ``W`` row-major.
    target : tvm.target.Target
        Compilation target.  On AVX-512 VNNI CPUs the dense matmul takes the row-interleaved
        ``2bit_vnni`` (``base3_vnni`` with GFNI), which the VNNI decode tile streams linearly;
        elsewhere (CUDA, AVX2, generic) the plain layouts.
    base3 : bool
        1.6-bit weights (5 per byte) for the dense matmul instead of 2-bit.
    """
    if kind == "sparse":
        return WeightLayout.TWO_BIT_KMAJOR
    if kind == "dense" and has_avx512_vnni(target):
        if not base3:
            return WeightLayout.TWO_BIT_VNNI
        if has_llvm_features(target, "gfni"):
            return WeightLayout.BASE3_VNNI
    if kind == "dense" and base3:
        return WeightLayout.BASE3
    if kind in ("dense", "gate_up"):
        return WeightLayout.TWO_BIT
    raise ValueError(f"unknown ternary matmul kind {kind!r}; expected dense, gate_up or sparse")


# Row-interleaved layouts -> the row-major layout of the same width.
_ROW_MAJOR = {
    WeightLayout.TWO_BIT_VNNI: WeightLayout.TWO_BIT,
    WeightLayout.BASE3_VNNI: WeightLayout.BASE3,
}


def gate_up_layout(dense: WeightLayout) -> WeightLayout:
    """The layout of a gate/up fused from two projections packed in ``dense``.

    The gate-first kernels read one gate row, then its up row only where ``relu(gate) > 0``, so
    they want plain row-major rows; an interleaved dense layout becomes its row-major form.
    """
    return _ROW_MAJOR.get(WeightLayout(dense), WeightLayout(dense))
