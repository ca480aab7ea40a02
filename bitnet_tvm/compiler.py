"""``bitnet_tvm.compile``: ONNX BitNet model -> compiled model with fused ternary operators."""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

import onnx
import tvm
from tvm import relax

from bitnet_tvm.frontend import symbolic_input_shapes
from bitnet_tvm.frontend.max_positions import max_positions
from bitnet_tvm.relay_passes.lift_params import lift_params
from bitnet_tvm.relay_passes.pipeline import lowering_pipeline, run_graph_passes
from bitnet_tvm.relay_passes.quantize_kv_cache import packed_kv_io
from bitnet_tvm.relay_passes.quantize_lm_head import LM_HEAD_CHOICES
from bitnet_tvm.report import CompileReport, collect_report
from bitnet_tvm.runtime import FORMAT_VERSION, CompiledModel
from bitnet_tvm.schedules.selection import check_weights
from bitnet_tvm.schedules.target import host_target
from bitnet_tvm.schemes import QuantScheme, get_scheme
from bitnet_tvm.weight_import import import_compact

__all__ = ["compile_model"]

log = logging.getLogger(__name__)


def graph_module(
    model: str | os.PathLike[str] | onnx.ModelProto,
    target: tvm.target.Target,
    scheme: QuantScheme | None = None,
) -> tvm.IRModule:
    """The module after import and the BitNet graph passes (our operators as PrimFuncs), as
    :func:`compile_model` builds it; used by the tuner to find the operators."""
    mod, _ = import_compact(model if isinstance(model, onnx.ModelProto) else Path(model))
    return run_graph_passes(mod, target, scheme)


def _io_specs(model: onnx.ModelProto, mod: tvm.IRModule) -> tuple[list[dict], list[dict]]:
    # main's parameters are the graph inputs in order (the frontend may rename them).
    shapes = list(symbolic_input_shapes(mod).values())
    inputs = []
    for value, shape in zip(model.graph.input, shapes, strict=False):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        inputs.append({"name": value.name, "shape": shape, "dtype": str(dtype)})
    outputs = [{"name": value.name} for value in model.graph.output]
    return inputs, outputs


def resolve_target(target: str | dict | tvm.target.Target) -> tvm.target.Target:
    """A TVM target from a name: ``"llvm"`` is the host CPU with its features detected."""
    if isinstance(target, tvm.target.Target):
        return target
    if target == "llvm":
        return host_target()
    if target == "cuda":
        return tvm.target.Target({"kind": "cuda", "arch": "sm_90"}, host=host_target())
    return tvm.target.Target(target)


def compile_model(
    model: str | os.PathLike[str] | onnx.ModelProto,
    target: str | dict | tvm.target.Target = "llvm",
    scheme: str | QuantScheme | None = None,
    *,
    dump_dir: str | os.PathLike[str] | None = None,
    model_info: dict | None = None,
    rewrite: bool = True,
    tuning_db: str | os.PathLike[str] | None = None,
    lm_head: str = "fp32",
    weights: str = "2bit",
) -> CompiledModel:
    """Compile an ONNX BitNet model for ``target``.

    Parameters
    ----------
    model : path or onnx.ModelProto
        ONNX file (external data beside it) or a loaded model.
    target : str, dict or tvm.target.Target
        ``"llvm"`` (the host CPU, detected), ``"cuda"``, or any TVM target.
    scheme : str, QuantScheme or None
        Re-quantize activations with this scheme's quantizers; None (the default) keeps the
        quantizers the graph has.
    dump_dir : path, optional
        Write the IR after each graph-pass phase there.
    model_info : dict, optional
        Facts about the model the graph does not hold (e.g. ``BitNetConfig.to_dict()``: vocab
        size, max positions), kept as ``metadata["model"]`` for generation; must be JSON-able.
    rewrite : bool
        False builds the graph as imported, without the BitNet graph passes, with TVM's default
        Relax pipeline (``relax_pipeline="default"``): the unrewritten full-precision baseline
        of the benchmark.  Weight-only subgraphs (int8 code casts, transposes) are folded to
        float32 constants first, so they are not recomputed per call; ``scheme`` must be None.
    tuning_db : path, optional
        Tuning database directory written by :func:`bitnet_tvm.tune`: its records schedule the
        operators they were tuned for (rule defaults otherwise; an unreadable database is
        warned about and ignored).  Operators dispatch on the token count M at run time over
        the buckets of :mod:`bitnet_tvm.tuning.buckets` either way.
    lm_head : {"fp32", "int8"}
        ``"int8"`` quantizes the LM head (the float matmul producing the logits): weight per
        vocabulary row, activation per token, both absmax INT8
        (:mod:`bitnet_tvm.relay_passes.quantize_lm_head`); a quarter of its bytes.
    weights : {"2bit", "1.6bit"}
        Storage of the ternary weights: 2 bits (4 per byte), or 1.6 bits (5 per byte, base 3:
        ``base3_vnni`` for the dense matmuls and the gate/up on AVX-512 VNNI + GFNI CPUs,
        ``base3`` elsewhere, ``base3_kmajor`` for the sparse o_proj/down), 20% fewer weight
        bytes.  Same numerics (bit-identical outputs).

    Returns
    -------
    CompiledModel
        With ``run(output_names, input_feed)``, ``report`` and ``save(path)``.
    """
    if lm_head not in LM_HEAD_CHOICES:
        raise ValueError(f"lm_head must be one of {LM_HEAD_CHOICES}, got {lm_head!r}")
    if lm_head != "fp32" and not rewrite:
        raise ValueError(f"lm_head={lm_head!r} needs rewrite=True (it is a graph pass)")
    if check_weights(weights) != "2bit" and not rewrite:
        raise ValueError(f"weights={weights!r} needs rewrite=True (it is a graph pass)")
    start = time.perf_counter()
    tvm_target = resolve_target(target)
    scheme_obj = get_scheme(scheme) if scheme is not None else None
    if not rewrite and scheme_obj is not None:
        raise ValueError("scheme must be None with rewrite=False (the graph is not rewritten)")
    log.info("[1/4] importing %s", "ONNX model" if isinstance(model, onnx.ModelProto) else model)
    # large weights are read once, int8 ones stay int8; the proto comes without external data
    mod, proto = import_compact(model if isinstance(model, onnx.ModelProto) else Path(model))
    inputs, outputs = _io_specs(proto, mod)
    positions = max_positions(proto)  # generation's length check without model_info
    del proto
    if not rewrite:
        compiled = _compile_unrewritten(mod, tvm_target, inputs, outputs, model_info)
        compiled.metadata["max_positions"] = positions
        return compiled
    log.info("[2/4] graph passes (target %s, scheme %s)", tvm_target.kind.name, scheme or "graph")
    mod = run_graph_passes(
        mod,
        tvm_target,
        scheme_obj,
        Path(dump_dir) if dump_dir else None,
        lm_head=lm_head,
        weights=weights,
    )
    inputs, outputs, kv_cache = packed_kv_io(mod, inputs, outputs)  # packed KV cache I/O
    report = collect_report(mod)
    mod, params = lift_params(mod)
    # Rewriters (PyExprMutator) sit in reference cycles with the modules they rewrote, and so
    # keep their constants (GBs for 2B-class models) until the cycle collector runs.
    gc.collect()
    log.info("[3/4] building %d fused operators", len(report.layers))
    executable = tvm.compile(
        mod, target=tvm_target, relax_pipeline=lowering_pipeline(tvm_target, tuning_db)
    )
    log.info("[4/4] done in %.1f s", time.perf_counter() - start)
    metadata = _metadata(tvm_target, scheme_obj, inputs, outputs, params, report, model_info)
    if kv_cache is not None:
        metadata["kv_cache"] = kv_cache.to_metadata()
    metadata["lm_head"] = lm_head
    metadata["max_positions"] = positions
    metadata["weights"] = weights
    # The lifted params are views of the module's constants; CompiledModel copies each into a
    # runtime tensor.  Handing them over one at a time frees each constant once it is copied,
    # so the weights are not held twice (3+ GB for 2B-class models).
    return CompiledModel(executable, _ReleasedOnRead(params), metadata)


def _compile_unrewritten(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    inputs: list[dict],
    outputs: list[dict],
    model_info: dict | None,
) -> CompiledModel:
    """``compile_model(..., rewrite=False)``: fold weights, lift them, TVM's default build."""
    start = time.perf_counter()
    log.info("[2/4] folding weight casts (no graph passes)")
    with target:
        mod = relax.transform.FoldConstant()(relax.transform.LegalizeOps()(mod))
    mod, params = lift_params(mod)
    gc.collect()
    log.info("[3/4] building with TVM's default pipeline")
    executable = tvm.compile(mod, target=target, relax_pipeline="default")
    log.info("[4/4] done in %.1f s", time.perf_counter() - start)
    metadata = _metadata(target, None, inputs, outputs, params, CompileReport(), model_info)
    return CompiledModel(executable, _ReleasedOnRead(params), metadata)


def _metadata(
    tvm_target: tvm.target.Target,
    scheme_obj: QuantScheme | None,
    inputs: list[dict],
    outputs: list[dict],
    params: dict,
    report: CompileReport,
    model_info: dict | None,
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "bitnet_tvm_version": _version(),
        "tvm_version": tvm.__version__,
        "target": str(tvm_target),
        "device": "cuda" if tvm_target.kind.name == "cuda" else "cpu",
        "scheme": scheme_obj.to_dict() if scheme_obj else None,
        "inputs": inputs,
        "outputs": outputs,
        "params": list(params),
        "report": report.to_dict(),
        "model": dict(model_info) if model_info else None,
    }


class _ReleasedOnRead(dict):
    """A dict that forgets an item when it is read."""

    def __getitem__(self, key: str) -> Any:
        return self.pop(key)


def _version() -> str:
    from bitnet_tvm import __version__

    return __version__
