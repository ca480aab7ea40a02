"""Which schedule rules run for a target: ours first, then TVM's dlight rules for the rest."""

from __future__ import annotations

import tvm
from tvm.s_tir import dlight as dl

__all__ = ["schedule_passes"]


def schedule_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """The scheduling passes of the lowering pipeline for ``target``.

    Our rules claim the fused ternary operators (they check the ``bitnet.op`` attribute and
    return None for anything else); dlight's rules then take the remaining GEMVs and
    reductions.  A function no rule claims stays a plain loop nest.
    """
    if target.kind.name == "llvm":
        from .cpu import cpu_rules

        return [dl.ApplyDefaultSchedule(*cpu_rules(), dl.cpu.GEMV(), dl.cpu.Reduction())]
    if target.kind.name == "cuda":
        from .cuda import cuda_rules

        return [
            dl.ApplyDefaultSchedule(
                *cuda_rules(),
                dl.gpu.Matmul(),
                dl.gpu.GEMV(),
                dl.gpu.Reduction(),
                dl.gpu.GeneralReduction(),
                dl.gpu.Fallback(),
            )
        ]
    raise ValueError(f"no schedule rules for target kind {target.kind.name!r}; use llvm or cuda")
