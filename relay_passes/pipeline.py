"""The one place that owns the order of bitnet-tvm's graph passes.

Phases (each a list, run in order; ``dump_dir`` writes the IR after each phase):

1. ``fold``      -- weight-only subgraphs become constants (ternarization, HF unpacking).
2. ``bitlinear`` -- BitLinears become quantize + fused ternary matmul; shared quantizers are
                    merged; projections sharing an input are fused (QKV, gate/up + GLU);
                    RMSNorm is folded into the quantizer it feeds.
   ``kv_cache``  -- a 3/4-bit KV cache is stored packed; attention reads it (fused kernel).
3. ``legalize``  -- remaining Relax ops become TIR.  On CPU without FuseOps/FuseTIR, as TVM
                    0.27's own CPU build does: its FuseTIR fails in ``RenewDefs`` on our
                    decode graphs (past key/values), so elementwise ops stay unfused there.
4. ``schedule``  -- our schedule rules first, then TVM's dlight rules for everything else.
5. ``lower``     -- TVM's dataflow lowering and VM finalization.
"""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax

from bitnet_tvm.schedules.dispatch import schedule_passes
from bitnet_tvm.schemes import QuantScheme

from .fold_weights import FoldWeights
from .fuse_bitlinear import FuseBitLinear, require_ternary
from .fuse_norm_quantize import FuseNormQuantize
from .fuse_projections import FuseProjections
from .quantize_kv_cache import QuantizeKVCache
from .quantize_lm_head import LM_HEAD_CHOICES, QuantizeLMHead, require_lm_head

__all__ = ["graph_phases", "lowering_pipeline", "run_graph_passes"]


def graph_phases(
    target: tvm.target.Target,
    scheme: QuantScheme | None = None,
    lm_head: str = "fp32",
    weights: str = "2bit",
) -> list[tuple[str, list[tvm.transform.Pass]]]:
    """Phases 1-2: the BitNet-specific rewrites, target-aware only through the weight layout.

    ``lm_head="int8"`` adds :class:`QuantizeLMHead` before ``FuseNormQuantize`` (which then folds
    the final RMSNorm into the head's quantizer).  ``weights="1.6bit"`` stores every ternary
    weight 5 per byte (see :class:`FuseBitLinear`).
    """
    if lm_head not in LM_HEAD_CHOICES:
        raise ValueError(f"lm_head must be one of {LM_HEAD_CHOICES}, got {lm_head!r}")
    head = [QuantizeLMHead()] if lm_head == "int8" else []
    return [
        ("fold", [FoldWeights()]),
        (
            "bitlinear",
            [
                FuseBitLinear(target, scheme, weights),
                relax.transform.EliminateCommonSubexpr(),
                FuseProjections(),
                *head,
                FuseNormQuantize(),
                relax.transform.DeadCodeElimination(),
            ],
        ),
        ("kv_cache", [QuantizeKVCache(scheme)]),
    ]


def run_graph_passes(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    scheme: QuantScheme | None = None,
    dump_dir: Path | None = None,
    lm_head: str = "fp32",
    weights: str = "2bit",
) -> tvm.IRModule:
    """Run phases 1-2 on ``mod``, optionally writing ``<dump_dir>/<n>_<phase>.py`` after each."""
    phases = graph_phases(target, scheme, lm_head, weights)
    for index, (name, passes) in enumerate(phases, start=1):
        if name == "bitlinear":
            require_ternary(mod, scheme)  # a clear ValueError, not an FFI RuntimeError
            if lm_head == "int8":
                require_lm_head(mod)
        mod = tvm.transform.Sequential(passes, name=f"bitnet.{name}")(mod)
        if dump_dir is not None:
            dump_dir.mkdir(parents=True, exist_ok=True)
            (dump_dir / f"{index}_{name}.py").write_text(mod.script(show_meta=False))
    return mod


def _backend(target: tvm.target.Target):
    """TVM's per-target pipeline module (imported directly: in 0.27 the backend packages do not
    re-export every phase, so ``relax.pipeline.dataflow_lower_passes`` fails for llvm)."""
    if target.kind.name == "llvm":
        from tvm.relax.backend.cpu_generic import pipeline
    elif target.kind.name == "cuda":
        from tvm.relax.backend.cuda import pipeline
    else:
        raise ValueError(f"unsupported target kind {target.kind.name!r}; use llvm or cuda")
    return pipeline


def _legalize(target: tvm.target.Target, backend) -> list[tvm.transform.Pass]:
    if target.kind.name in ("llvm", "cuda"):
        # Not backend.legalize_passes: for CUDA it ends in dlight's ApplyDefaultSchedule, which
        # would claim our fused operators before schedule_passes runs ours; and its FuseTIR
        # fails in RenewDefs on our decode graphs.  Without FuseOps/FuseTIR every remaining op
        # is its own kernel, scheduled in phase 4.
        return [relax.transform.LegalizeOps(), relax.transform.FoldConstant()]
    return backend.legalize_passes(target)


def lowering_pipeline(target: tvm.target.Target, tuning_db=None) -> tvm.transform.Pass:
    """Phases 3-5 as one pass, for ``tvm.compile(..., relax_pipeline=...)``.

    ``tuning_db`` (a directory or a ``TuningDatabase``) gives phase 4 tuned schedules.
    """
    backend = _backend(target)

    @tvm.transform.module_pass(opt_level=0, name="bitnet.lowering")
    def _lower(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                backend.library_dispatch_passes(target)
                + _legalize(target, backend)
                + schedule_passes(target, tuning_db)
                + backend.dataflow_lower_passes(target)
                + backend.finalize_passes(target)
            )
            return seq(mod)

    return _lower
