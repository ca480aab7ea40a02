"""``run_benchmark``: every backend on the same exports and prompts, in one process.

Per variant (``layers``, then ``full``; see :mod:`bitnet_tvm.bench.workload`):

1. export the ONNX file (child process; reused when present);
2. build the compiled artifacts (child processes): bitnet-tvm a4.8 and b1.58, and TVM's
   unrewritten fp32 build;
3. load each backend while :class:`~bitnet_tvm.bench.measure.PeakRSS` samples this process's
   memory, and run it once (warm-up): its peak RSS delta;
4. compare each backend's prefill logits with onnxruntime's (a sanity check of the numerics);
5. ``repeats`` rounds, each running every backend once in turn (interleaved, so a noisy
   stretch of time hits them all): prefill of the prompt, then ``decode_steps`` greedy steps;
   the best prefill and the best decode over the rounds are kept.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitnet_tvm.bench.backends import (
    Backend,
    CompiledBackend,
    OrtBackend,
    TorchBackend,
    build_artifact,
    onnx_fp32_weight_bytes,
)
from bitnet_tvm.bench.child import run_in_child
from bitnet_tvm.bench.claims import TARGETS, memory_claims, speed_claims
from bitnet_tvm.bench.measure import PeakRSS, Timing, best_timing
from bitnet_tvm.bench.workload import (
    VARIANTS,
    Workload,
    bench_config,
    export_workload,
    make_workload,
    prompt_ids,
)

__all__ = ["BACKENDS", "BenchSpec", "run_benchmark"]

log = logging.getLogger(__name__)

#: Backend keys, in the order they are loaded and run.
BACKENDS = ("bitnet_a4.8", "bitnet_b1.58", "tvm_fp32", "onnxruntime", "pytorch")
#: Which backends' logits should match onnxruntime's (same graph and quantizers); b1.58
#: re-quantizes the graph, so its logits differ by design.
_SAME_MODEL = ("bitnet_a4.8", "tvm_fp32", "pytorch", "bitnet_a4.8_1.6bit")
#: Backends run only when named in ``backends``: the a4.8 build with 1.6-bit weights
#: (``compile_model(weights="1.6bit")``; same logits as ``bitnet_a4.8``, 20% fewer weight bytes).
#: ``bitnet_a4.8_compact``: the smallest a4.8 build -- 1.6-bit weights, 3-bit KV cache (scheme
#: ``a4.8-kv3``) and INT8 LM head; its logits differ from the others' by the KV and head
#: quantization, so they are not compared.
OPTIONAL_BACKENDS = ("bitnet_a4.8_1.6bit", "bitnet_a4.8_compact")
#: a4.8 builds whose artifacts get memory claims (``claims["memory"]`` is bitnet_a4.8's).
_MEMORY_BACKENDS = ("bitnet_a4.8", "bitnet_a4.8_1.6bit", "bitnet_a4.8_compact")


@dataclass(frozen=True)
class BenchSpec:
    """What to benchmark.

    Parameters
    ----------
    model : str
        Config preset (``tiny`` for a smoke run, ``2b4t`` for the real shape).
    layers : int or None
        Decoder layers (None: the preset's).
    prompt_len : int
        Prompt tokens ``P`` of the prefill.
    decode_steps : int
        Greedy decode steps ``N`` timed after the prefill.
    batch : int
        Sequences per run.
    repeats : int
        Rounds; the best time of each backend is kept.
    backends : tuple of str
        A subset of :data:`BACKENDS` and :data:`OPTIONAL_BACKENDS`.
    seed : int
        Seed of the random weights and of the prompts.
    workdir : Path
        Where exports and artifacts go (reused across runs).
    target : str
        Target of the compiled backends (``llvm``: the host CPU).
    isolate : bool
        Export and compile in child processes (the default: this process's memory then
        measures only the backends); False does it in this process (quicker for tiny models).
    """

    model: str = "tiny"
    layers: int | None = None
    prompt_len: int = 32
    decode_steps: int = 32
    batch: int = 1
    repeats: int = 3
    backends: tuple[str, ...] = BACKENDS
    seed: int = 0
    workdir: Path = field(default_factory=lambda: Path("artifacts/bench"))
    target: str = "llvm"
    isolate: bool = True

    def __post_init__(self) -> None:
        for name in ("prompt_len", "decode_steps", "batch", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        unknown = [b for b in self.backends if b not in BACKENDS + OPTIONAL_BACKENDS]
        if unknown or not self.backends:
            raise ValueError(
                f"backends must be a non-empty subset of {list(BACKENDS + OPTIONAL_BACKENDS)}, "
                f"got {unknown}"
            )
        if "onnxruntime" not in self.backends:
            raise ValueError("backends must include onnxruntime (the baseline of every ratio)")
        object.__setattr__(self, "workdir", Path(self.workdir))
        config = bench_config(self.model, self.layers)  # ValueError for a bad name / layers
        need = self.prompt_len + self.decode_steps + 1
        if need > config.max_position_embeddings:
            raise ValueError(
                f"prompt_len ({self.prompt_len}) + decode_steps ({self.decode_steps}) + 1 = "
                f"{need} exceeds the model's maximum length {config.max_position_embeddings}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**asdict(self), "workdir": str(self.workdir), "backends": list(self.backends)}


def _artifacts(spec: BenchSpec, workload: Workload) -> dict[str, Path]:
    builds = {
        "bitnet_a4.8": {"scheme": None},
        "bitnet_a4.8_1.6bit": {"scheme": None, "weights": "1.6bit"},
        "bitnet_a4.8_compact": {"scheme": "a4.8-kv3", "weights": "1.6bit", "lm_head": "int8"},
        "bitnet_b1.58": {"scheme": "b1.58"},
        "tvm_fp32": {"rewrite": False},
    }
    paths = {}
    todo = [name for name in builds if name in spec.backends]
    for i, name in enumerate(todo, start=1):
        out = workload.onnx.with_name(f"{workload.onnx.stem}.{name}.{spec.target}")
        log.info("[%s %d/%d] building %s -> %s", workload.variant, i, len(todo), name, out)
        paths[name] = build_artifact(
            workload, out, target=spec.target, isolate=spec.isolate, **builds[name]
        )
    return paths


def _load(name: str, workload: Workload, artifacts: dict[str, Path]) -> Backend:
    if name == "onnxruntime":
        return OrtBackend(workload)
    if name == "pytorch":
        return TorchBackend(workload)
    return CompiledBackend(artifacts[name], name)


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    scale = float(np.abs(want).max())
    return float(np.abs(got - want).max()) / (scale or 1.0)


def _variant(spec: BenchSpec, workload: Workload) -> dict[str, dict[str, Any]]:
    if not workload.onnx.exists():
        run_in_child(
            export_workload, workload, what=f"exporting {workload.onnx.name}", isolate=spec.isolate
        )
    else:
        log.info("reusing %s", workload.onnx)
    artifacts = _artifacts(spec, workload)
    ids = prompt_ids(workload.config.vocab_size, spec.batch, spec.prompt_len, spec.seed)
    backends: dict[str, Backend] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in spec.backends:
        log.info("[%s] loading %s", workload.variant, name)
        with PeakRSS() as mem:
            backend = _load(name, workload, artifacts)
            backend.generate(ids, 1)  # warm-up (first-run allocations count as its memory)
        backends[name] = backend
        results[name] = {
            "peak_rss_delta_bytes": mem.delta,
            "weight_bytes": backend.weight_bytes,
            "kv_bytes_per_token": backend.kv_bytes_per_token,
        }
        if isinstance(backend, OrtBackend):
            results[name]["providers"] = backend.providers
    reference = backends["onnxruntime"].logits(ids)
    for name, backend in backends.items():
        same = name in _SAME_MODEL
        results[name]["logits_rel_err_vs_onnxruntime"] = (
            _rel_err(backend.logits(ids), reference) if same else None
        )
    runs: dict[str, list[Timing]] = {name: [] for name in backends}
    load = [os.getloadavg()[0]]  # how busy the machine was: these timings are noisy
    for r in range(spec.repeats):
        for name, backend in backends.items():
            runs[name].append(backend.generate(ids, spec.decode_steps))
        log.info(
            "[%s round %d/%d] decode tokens/s: %s",
            workload.variant,
            r + 1,
            spec.repeats,
            ", ".join(f"{n} {runs[n][-1].decode_tokens_per_second:.1f}" for n in backends),
        )
        load.append(os.getloadavg()[0])
    ort_tokens = runs["onnxruntime"][0].tokens
    for name, timings in runs.items():
        best = best_timing(timings)
        results[name].update(
            {
                "prefill_seconds": best.prefill_seconds,
                "decode_seconds": best.decode_seconds,
                "decode_step_seconds": best.decode_seconds / best.steps,
                "decode_tokens_per_second": best.decode_tokens_per_second,
                "load_average_1min": [min(load), max(load)],
                "greedy_tokens_match_onnxruntime": (
                    float(np.mean(best.tokens == ort_tokens)) if name in _SAME_MODEL else None
                ),
            }
        )
    backends.clear()
    gc.collect()
    return results


def _lm_head(result: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Seconds per decode step of the LM head: full minus layers (None if either is missing)."""
    full, layers = result.get("full"), result.get("layers")
    if not full or not layers:
        return {"lm_head_step_seconds": None, "lm_head_share_of_full_step": None}
    head = full["decode_step_seconds"] - layers["decode_step_seconds"]
    return {
        "lm_head_step_seconds": head,
        "lm_head_share_of_full_step": head / full["decode_step_seconds"],
    }


def run_benchmark(spec: BenchSpec) -> dict[str, Any]:
    """Run ``spec``; returns the results (see :func:`bitnet_tvm.bench.report.build_report`).

    Returns
    -------
    dict
        ``config`` (the full model's), ``backends`` (per backend: per variant the timings,
        memory and the logits check, plus the LM head split), ``claims`` (memory and speed
        ratios), ``targets`` (the issue's) and ``spec``.
    """
    config = bench_config(spec.model, spec.layers)
    per_variant = {}
    workloads = {}
    for variant in VARIANTS:
        workloads[variant] = make_workload(config, variant, spec.workdir, spec.seed)
        log.info("variant %s: %s", variant, workloads[variant].onnx.name)
        per_variant[variant] = _variant(spec, workloads[variant])
    backends = {
        name: {variant: per_variant[variant][name] for variant in VARIANTS}
        for name in spec.backends
    }
    for result in backends.values():
        result.update(_lm_head(result))
    from bitnet_tvm.cli import artifact_info

    full = workloads["full"]
    claims: dict[str, Any] = {"speed": speed_claims(backends)}
    for name in (b for b in _MEMORY_BACKENDS if b in spec.backends):
        artifact = full.onnx.with_name(f"{full.onnx.stem}.{name}.{spec.target}")
        if artifact.exists():
            memory = memory_claims(
                config, artifact_info(artifact), onnx_fp32_weight_bytes(full.onnx)
            )
            key = "memory" if name == "bitnet_a4.8" else f"memory_{name.removeprefix('bitnet_')}"
            claims[key] = memory
    for result in backends.values():  # NaN/inf would not survive JSON
        for variant in VARIANTS:
            for key, value in result[variant].items():
                if isinstance(value, float) and not math.isfinite(value):
                    result[variant][key] = None
    return {
        "config": config.to_dict(),
        "backends": backends,
        "claims": claims,
        "targets": TARGETS,
        "spec": spec.to_dict(),
    }
