"""Benchmark results: the JSON document (with machine, versions and command), a table, charts.

Both files are written atomically (:func:`bitnet_tvm.atomic.atomic_open`).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import psutil

from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.machine import cpu_model

__all__ = ["build_report", "format_table", "machine_info", "write_json", "write_png"]

NOTES = [
    "Timings are the best of `repeats` interleaved rounds on a shared machine: noisy (+-30% seen); "
    "compare backends of the same run only.",
    "'layers' is the model with a 16-token vocabulary (embedding lookup, every decoder layer, "
    "final norm, a 16-wide head): the transformer layers' time. 'full' has the real vocabulary; "
    "LM head time per decode step = full - layers.",
    "Weights are random ternary codes (random_int8_model) of the config's shape; all backends run "
    "the same with-past ONNX export (int8 weights) and the same seeded random prompts.",
    "tvm_fp32 is compile_model(rewrite=False): the import without BitNet graph passes, weight "
    "casts folded to float32, TVM's default Relax pipeline (relax_pipeline='default').",
    "onnxruntime and pytorch run float32 (onnxruntime folds the int8-code casts at session "
    "creation; pytorch keeps int8 codes and casts per call). bitnet_b1.58 re-quantizes the same "
    "graph with the b1.58 scheme, so its logits are not compared.",
    "load_average_1min: [min, max] of the 1-minute load average around the rounds; a 'layers' "
    "row measured while the machine was busier than its 'full' row makes the LM head time "
    "(full - layers) wrong, even negative.",
    "peak_rss_delta_bytes: peak RSS while loading the backend and running it once, minus the RSS "
    "before (backends are loaded in turn into one process).",
]


def machine_info() -> dict[str, Any]:
    """CPU model, cores this process may use, RAM, Python and platform."""
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"),
    }


def build_report(results: dict[str, Any], command: str) -> dict[str, Any]:
    """The JSON document: ``results`` of :func:`run_benchmark` plus machine, versions, command."""
    import onnxruntime
    import torch
    import tvm

    from bitnet_tvm import __version__

    return {
        "benchmark": "bench",
        "machine": machine_info(),
        "tvm_version": tvm.__version__,
        "versions": {
            "bitnet_tvm": __version__,
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
        },
        "command": command,
        **results,
        "notes": NOTES,
    }


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write ``report`` as indented JSON to ``path`` (atomically)."""
    import json

    with atomic_open(path) as f:
        f.write(json.dumps(report, indent=1, allow_nan=False) + "\n")
    return path


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    """Per-backend rows and the claims, as text."""
    spec = report["spec"]
    cfg = report["config"]
    lines = [
        f"bitnet-tvm bench: model {spec['model']} ({cfg['num_hidden_layers']} layers, hidden "
        f"{cfg['hidden_size']}, vocab {cfg['vocab_size']}), prompt {spec['prompt_len']}, "
        f"{spec['decode_steps']} decode steps, batch {spec['batch']}, best of {spec['repeats']}",
        f"{'backend':<14}{'prefill ms':>11}{'tok/s layers':>13}{'tok/s full':>11}"
        f"{'LM head ms':>11}{'weights MiB':>12}{'KV B/tok':>9}{'RSS MiB':>9}{'rel err':>9}",
    ]
    for name, r in report["backends"].items():
        full, layers = r["full"], r["layers"]
        head = r["lm_head_step_seconds"]
        lines.append(
            f"{name:<14}{_fmt(1e3 * full['prefill_seconds'], '.1f'):>11}"
            f"{_fmt(layers['decode_tokens_per_second'], '.1f'):>13}"
            f"{_fmt(full['decode_tokens_per_second'], '.1f'):>11}"
            f"{_fmt(None if head is None else 1e3 * head, '.2f'):>11}"
            f"{full['weight_bytes'] / 2**20:>12.1f}{full['kv_bytes_per_token']:>9}"
            f"{full['peak_rss_delta_bytes'] / 2**20:>9.0f}"
            f"{_fmt(full['logits_rel_err_vs_onnxruntime'], '.1e'):>9}"
        )
    speed = report["claims"]["speed"]
    lines.append("claims")
    for key, value in speed.items():
        if "decode" in key:
            lines.append(f"  speed {key:<44} {_fmt(value, '.2f')}x")
    for part, values in report["claims"].get("memory", {}).items():
        ratios = ", ".join(
            f"{k} {_fmt(v, '.2f')}x" for k, v in values.items() if k.startswith("vs")
        )
        lines.append(f"  memory {part:<20} {ratios}")
    return "\n".join(lines)


def write_png(report: dict[str, Any], path: Path) -> Path:
    """Three bar charts (decode tokens/s per variant, prefill latency, weights and peak RSS)
    written to ``path`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["backends"])
    rows = report["backends"]
    x = range(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    width = 0.4
    for offset, variant in ((-width / 2, "layers"), (width / 2, "full")):
        values = [rows[n][variant]["decode_tokens_per_second"] or 0 for n in names]
        axes[0].bar([i + offset for i in x], values, width, label=variant)
    axes[0].set_title("decode tokens/s, log scale (higher is better)")
    axes[0].legend(title="variant")
    axes[1].bar(x, [1e3 * (rows[n]["full"]["prefill_seconds"] or 0) for n in names])
    axes[1].set_title(
        f"prefill of {report['spec']['prompt_len']} tokens, ms, log scale (full model)"
    )
    for ax in axes[:2]:  # backends differ by orders of magnitude
        ax.set_yscale("log")
    for offset, key, label in (
        (-width / 2, "weight_bytes", "weights"),
        (width / 2, "peak_rss_delta_bytes", "peak RSS delta"),
    ):
        values = [rows[n]["full"][key] / 2**20 for n in names]
        axes[2].bar([i + offset for i in x], values, width, label=label)
    axes[2].set_title("memory, MiB (full model)")
    axes[2].legend()
    for ax in axes:
        ax.set_xticks(list(x), names, rotation=20)
    cfg = report["config"]
    fig.suptitle(
        f"bitnet-tvm bench: {report['spec']['model']} ({cfg['num_hidden_layers']} layers), "
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores, tvm "
        f"{report['tvm_version']} (noisy shared machine)"
    )
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path
