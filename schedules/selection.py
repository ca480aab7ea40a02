"""Per-target choices the graph passes ask the schedules for (weight layout of each operator)."""

from __future__ import annotations

import tvm

from .layouts import WeightLayout
from .target import has_avx512_vnni, has_llvm_features

__all__ = [
    "WEIGHT_CHOICES",
    "check_weights",
    "gate_up_layout",
    "gate_up_unfused",
    "select_layout",
]


#: Names of the weight storage choices of :func:`select_layout` (``compile_model(weights=)``).
WEIGHT_CHOICES = ("2bit", "1.6bit")


def check_weights(weights: object) -> str:
    """``weights`` if it is one of :data:`WEIGHT_CHOICES`, else a ValueError naming it."""
    if not isinstance(weights, str) or weights not in WEIGHT_CHOICES:
        raise ValueError(
            f"weights must be one of {WEIGHT_CHOICES} (2 or 1.6 bits per ternary weight), "
            f"got {weights!r}"
        )
    return weights


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
        1.6-bit weights (5 per byte) instead of 2-bit: ``base3_vnni`` (VNNI + GFNI) or ``base3``
        for the dense matmul, ``base3`` for the gate/up, ``base3_kmajor`` for the sparse one.
    """
    if kind == "sparse":
        return WeightLayout.BASE3_KMAJOR if base3 else WeightLayout.TWO_BIT_KMAJOR
    if kind == "dense" and has_avx512_vnni(target):
        if not base3:
            return WeightLayout.TWO_BIT_VNNI
        if has_llvm_features(target, "gfni"):
            return WeightLayout.BASE3_VNNI
    if kind in ("dense", "gate_up"):
        return WeightLayout.BASE3 if base3 else WeightLayout.TWO_BIT
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


def gate_up_unfused(dense: WeightLayout) -> bool:
    """Whether a gate/up pair packed in ``dense`` should stay one dense matmul of
    ``[W_gate; W_up]`` with the GLU as elementwise ops instead of a ``ternary_gate_up``.

    True for ``base3_vnni``: no gate-first kernel reads 1.6-bit weights (the gate/up would run
    the generic GEMV, ~5x slower), while the dense VNNI base-3 kernel streams them faster than
    the dense 2-bit one (INT4, 13824x2560, 2 threads, cold, interleaved A/B on a shared machine:
    171 vs 201 µs; the 2-bit gate-first kernel: 226 µs INT8 in cpu_kernels.json).
    """
    return WeightLayout(dense) is WeightLayout.BASE3_VNNI
