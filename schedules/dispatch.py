"""Which schedule rules run for a target: ours first, then TVM's dlight rules for the rest."""

from __future__ import annotations

import os
from typing import Any

import tvm
from tvm.s_tir import dlight as dl

__all__ = ["bitnet_rules", "schedule_passes"]


def bitnet_rules(target: tvm.target.Target) -> list:
    """Our schedule rules for ``target``'s kind, in dispatch order (default knobs)."""
    if target.kind.name == "llvm":
        from .cpu import cpu_rules

        return cpu_rules()
    if target.kind.name == "cuda":
        from .cuda import cuda_rules

        return cuda_rules()
    raise ValueError(f"no schedule rules for target kind {target.kind.name!r}; use llvm or cuda")


def schedule_passes(
    target: tvm.target.Target, tuning_db: str | os.PathLike[str] | Any | None = None
) -> list[tvm.transform.Pass]:
    """The scheduling passes of the lowering pipeline for ``target``.

    Our operators are scheduled first, per token-count bucket, with the tuned knobs of
    ``tuning_db`` (a directory or a :class:`~bitnet_tvm.tuning.database.TuningDatabase`) where it
    has them and the rules' defaults otherwise (:mod:`bitnet_tvm.tuning.apply`).  dlight's rules
    then take the remaining GEMVs and reductions (our rules, listed again, claim any operator
    left over).  On CPU, :class:`~bitnet_tvm.schedules.cpu.matmul_fp.FloatMatmul` and
    :class:`~bitnet_tvm.schedules.cpu.injective.Injective` take the float matmuls and the
    injective ops that dlight's rules do not.  A function no rule claims stays a plain loop nest.
    """
    from bitnet_tvm.tuning.apply import bucket_dispatch
    from bitnet_tvm.tuning.database import TuningDatabase

    rules = bitnet_rules(target)
    db = tuning_db
    if db is not None and not isinstance(db, TuningDatabase):
        db = TuningDatabase(db)
    ours = bucket_dispatch(rules, target, db)
    if target.kind.name == "llvm":
        from .cpu.injective import Injective
        from .cpu.matmul_fp import FloatMatmul

        # After our operators: float matmuls (LM head, attention), dlight's GEMV (inner
        # reductions) and Reduction (softmax, norms), then every injective op left.
        generic = [FloatMatmul(), dl.cpu.GEMV(), dl.cpu.Reduction(), Injective()]
        return [ours, dl.ApplyDefaultSchedule(*rules, *generic)]
    return [
        ours,
        dl.ApplyDefaultSchedule(
            *rules,
            dl.gpu.Matmul(),
            dl.gpu.GEMV(),
            dl.gpu.Reduction(),
            dl.gpu.GeneralReduction(),
            dl.gpu.Fallback(),
        ),
    ]
