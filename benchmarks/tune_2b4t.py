"""Tune the distinct BitLinear kernels of a BitNet-2B4T-shaped a4.8 model; cold, then warm.

The kernels are built directly from the operator definitions at the 2B4T shapes (hidden 2560,
intermediate 6912, 20 heads / 5 KV heads of 128): QKV (3840 x 2560, int4 act), O (2560 x 2560,
sparse int8: TopK 50 %), gate/up (2 x 6912 x 2560, int4), down (2560 x 6912, sparse int8).
Exporting and importing the full 2B ONNX model (``benchmarks/compile_2b4t.py``) gives the same
operators but costs minutes the tuning budget does not need.
Writes ``benchmarks/results/tune_2b4t.json``
and ``.png`` (default vs tuned per kernel and bucket, % of the roofline on the tuned bars).

The cold run also measures this machine's roofs (:mod:`bitnet_tvm.bench.roofline`) and judges
every kernel (:mod:`bitnet_tvm.tuning.roof`; ``goal`` in the JSON); the warm run (a fresh
process) is answered by the database's manifest without planning.

Usage: ``python benchmarks/tune_2b4t.py [--trials 4] [--buckets all] [--db DIR]``.
The machine is shared (2 cores, several jobs): times are noisy, compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tvm

from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.schedules.operators import sparse_int8_matmul, ternary_gate_up, ternary_matmul
from bitnet_tvm.tuning.tuner import tune

HIDDEN, INTER, QKV = 2560, 6912, 2560 + 2 * 5 * 128
RESULTS = Path(__file__).parent / "results"


def kernels() -> tvm.IRModule:
    """The distinct BitLinear operators of a 2B4T a4.8 model."""
    funcs = {
        "qkv": ternary_matmul(QKV, HIDDEN, act_bits=4),
        "o_proj": sparse_int8_matmul(HIDDEN, HIDDEN),
        "gate_up": ternary_gate_up(INTER, HIDDEN, act_bits=4),
        "down": sparse_int8_matmul(HIDDEN, INTER),
    }
    return tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [t for t in report["tasks"] if t["default_us"] and t["tuned_us"]]
    labels = [
        f"{t['kernel'].split()[0][:18]} {t['kernel'].split(' ', 1)[1]}\n{t['bucket']}" for t in rows
    ]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.9), 5))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [t["default_us"] for t in rows], 0.4, label="default")
    ax.bar([x + 0.2 for x in xs], [t["tuned_us"] for t in rows], 0.4, label="tuned")
    for x, t in zip(xs, rows, strict=True):  # % of roofline (d: DRAM, cold; i: int8 peak)
        if t.get("roofline_pct") is not None:
            mark = "" if t.get("meets") else " ✗"
            label = f"{t['roofline_pct']:.0f}% {t['bound'][0]}{mark}"
            ax.annotate(label, (x + 0.2, t["tuned_us"]), ha="center", va="bottom", fontsize=6)
    ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("µs (log)")
    ax.set_title(
        f"BitNet-2B4T kernels: default vs tuned ({report['trials']} trials, shared 2-core VM)"
    )
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--buckets", default="all")
    parser.add_argument("--db", default=None, help="database (default: a fresh temporary one)")
    parser.add_argument("--output", default=str(RESULTS / "tune_2b4t.json"))
    args = parser.parse_args(argv)
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="tune-2b4t-"))
    mod = kernels()
    start = time.perf_counter()
    cold = tune(mod, "llvm", trials=args.trials, db=db, buckets=args.buckets)
    cold_s = time.perf_counter() - start
    print(cold, file=sys.stderr)
    # warm: a fresh process (as a user's second run), whole command timed, imports included
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "bitnet_tvm.cli", "tune", "--help"]
    subprocess.run(cmd, check=True, capture_output=True)
    import_s = time.perf_counter() - start
    start = time.perf_counter()
    here, db_text = str(Path(__file__).parent), str(db)
    code = (
        f"import sys, time; sys.path.insert(0, {here!r}); from tune_2b4t import kernels; "
        "from bitnet_tvm.tuning.tuner import tune; t = time.perf_counter(); "
        f"r = tune(kernels(), 'llvm', trials={args.trials}, db={db_text!r}, "
        f"buckets={args.buckets!r}, progress=False); "
        "print(r.tuned_now, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    warm_total_s = time.perf_counter() - start
    warm_tuned_now, warm_s = out.stdout.split()[-2:]
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": len(__import__("os").sched_getaffinity(0)),
            "shared": True,
        },
        "tvm_version": tvm.__version__,
        "cold_seconds": cold_s,
        "warm_seconds": float(warm_s),
        "warm_process_seconds": warm_total_s,
        "cli_import_seconds": import_s,
        "warm_tuned_now": int(warm_tuned_now),
        **cold.to_dict(),
    }
    judged = [t for t in result["tasks"] if t["meets"] is not None]
    result["goal"] = {
        "rule": ">= 1.1x the default or >= 90 % of the roofline (see bitnet_tvm.tuning.roof)",
        "met": sum(t["meets"] for t in judged),
        "judged": len(judged),
        "not_met": [f"{t['kernel']} {t['bucket']}" for t in judged if not t["meets"]],
    }
    path = Path(args.output)
    with atomic_open(path) as f:
        json.dump(result, f, indent=2, default=str)
    _plot(result, path.with_suffix(".png"))
    goal = result["goal"]
    print(
        f"cold {cold_s:.0f} s, warm {float(warm_s):.2f} s; goal met by {goal['met']} of "
        f"{goal['judged']} kernels -> {path}",
        file=sys.stderr,
    )
    if not args.db:
        shutil.rmtree(db, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
