"""Compile benchmark: a BitNet-2B4T-shaped a4.8 model (random ternary weights), time and memory.

Exports the model (``random_int8_model`` + ``export_onnx(weights="int8")``, ONNX with external
data) under ``--workdir``, reusing an earlier export of the same shape and seed, then compiles it
with ``bitnet_tvm.compiler.compile_model`` for the host CPU.  Each step runs in a subprocess while
this process samples its resident memory (RSS of the process and its children, every 0.1 s) and
prints its progress; the compile's log lines mark its phases (import, graph passes, build), so
the peak memory is also reported per phase.  Results go to
``benchmarks/results/compile_2b4t.json`` (written atomically) and are printed as a table.

    python benchmarks/compile_2b4t.py [--layers N] [--workdir DIR] [--force-export]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.machine import cpu_model

RESULTS = Path(__file__).resolve().parent / "results" / "compile_2b4t.json"
GIB = float(1 << 30)
# compile_model's log messages that open a phase -> phase name
PHASES = {"[1/4]": "import", "[2/4]": "graph passes", "[3/4]": "build", "[4/4]": "done"}


# ----------------------------------------------------------------------------- child steps


def _child_export(args: argparse.Namespace) -> None:
    import torch

    from bitnet_tvm.export import export_onnx
    from bitnet_tvm.model import get_config
    from bitnet_tvm.model.synthetic import random_int8_model

    torch.set_num_threads(os.cpu_count() or 1)
    config = get_config("2b4t", num_hidden_layers=args.layers)
    start = time.perf_counter()
    model = random_int8_model(config, seed=args.seed)
    print(f"built the int8 model in {time.perf_counter() - start:.1f} s", flush=True)
    export_onnx(model, args.onnx, weights="int8", verify=False)
    print(f"exported in {time.perf_counter() - start:.1f} s", flush=True)


def _child_compile(args: argparse.Namespace) -> None:
    import logging

    from bitnet_tvm.compiler import compile_model

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    compiled = compile_model(args.onnx, "llvm")
    report = compiled.report
    result = {
        "fused_operators": len(report.layers),
        "unfused_matmuls": report.unfused_matmuls,
        "params": len(compiled.metadata["params"]),
    }
    Path(args.child_result).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- parent


def _rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(cmd: list[str], label: str) -> dict:
    """Run ``cmd``, echo its output with elapsed time and RSS, return time and peak RSS (also
    per phase, for the compile's phase markers)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    proc = psutil.Process(child.pid)
    state = {"peak": 0, "phase": "start", "phases": {}, "now": 0}
    phase_start = {"start": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                rss = _rss(proc)
            except psutil.NoSuchProcess:
                break
            state["now"] = rss
            state["peak"] = max(state["peak"], rss)
            ph = state["phases"].setdefault(state["phase"], 0)
            state["phases"][state["phase"]] = max(ph, rss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in child.stdout:
        line = line.rstrip()
        for marker, name in PHASES.items():
            if line.startswith(marker):
                state["phase"] = name
                phase_start[name] = time.perf_counter() - start
        if "Warning: Fast mode segfaults" in line or "torchvision is not installed" in line:
            continue
        elapsed = time.perf_counter() - start
        print(f"  [{label} {elapsed:7.1f} s, rss {state['now'] / GIB:5.2f} GiB] {line}", flush=True)
    rc = child.wait()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"{label} failed with exit code {rc}: {' '.join(cmd)}")
    marks = sorted(phase_start.items(), key=lambda kv: kv[1])
    phases = {}
    for i, (name, t0) in enumerate(marks):
        t1 = marks[i + 1][1] if i + 1 < len(marks) else seconds
        phases[name] = {
            "seconds": round(t1 - t0, 1),
            "peak_rss_gib": round(state["phases"].get(name, 0) / GIB, 2),
        }
    return {
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(state["peak"] / GIB, 2),
        "phases": phases,
    }


def _machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / GIB, 1),
        "python": platform.python_version(),
    }


def _write_atomic(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30, help="decoder layers (default 30)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bitnet_2b4t"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force-export", action="store_true", help="export even if cached")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=["export", "compile"], help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.layers < 1:
        parser.error(f"--layers must be >= 1, got {args.layers}")
    if args.child == "export":
        return _child_export(args)
    if args.child == "compile":
        return _child_compile(args)

    import tvm

    args.workdir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.workdir / f"bitnet_2b4t_L{args.layers}_s{args.seed}.onnx"
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--layers", str(args.layers), "--seed", str(args.seed), "--onnx", str(onnx_path)]
    export = None
    if args.force_export or not onnx_path.exists():
        print(f"exporting {args.layers}-layer 2B4T-shaped a4.8 model to {onnx_path}")
        export = run_measured([*me, "--child", "export", *common], "export")
    else:
        print(f"reusing {onnx_path} (--force-export to redo)")
    size = sum(f.stat().st_size for f in args.workdir.glob(onnx_path.name + "*"))
    child_result = args.workdir / "compile_child.json"
    child_result.unlink(missing_ok=True)
    print(f"compiling {onnx_path} for llvm")
    compile_ = run_measured(
        [*me, "--child", "compile", *common, "--child-result", str(child_result)], "compile"
    )
    counts = json.loads(child_result.read_text())
    result = {
        "benchmark": "compile_2b4t",
        "machine": _machine(),
        "tvm_version": tvm.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": "2b4t (hidden 2560, inter 6912, 20/5 heads, vocab 128256, tied), scheme a4.8",
        "layers": args.layers,
        "onnx_bytes": size,
        "export": export,
        "export_seconds": export["seconds"] if export else None,
        "export_peak_rss_gib": export["peak_rss_gib"] if export else None,
        "compile": compile_,
        "compile_seconds": compile_["seconds"],
        "compile_peak_rss_gib": compile_["peak_rss_gib"],
        "fused_operators": counts["fused_operators"],
        "unfused_matmuls": counts["unfused_matmuls"],
        "limits": {"compile_seconds": 900, "peak_rss_gib": 12},
    }
    if export is None and args.output.exists():  # keep the export numbers of the cached export
        old = json.loads(args.output.read_text())
        if old.get("layers") == args.layers and old.get("export"):
            for key in ("export", "export_seconds", "export_peak_rss_gib"):
                result[key] = old[key]
    _write_atomic(args.output, json.dumps(result, indent=1) + "\n")
    _print_table(result)
    print(f"wrote {args.output}")


def _print_table(r: dict) -> None:
    rows = [("step", "seconds", "peak RSS GiB")]
    for step in ("export", "compile"):
        data = r.get(step)
        if not data:
            rows.append((step, "cached", "-"))
            continue
        rows.append((step, f"{data['seconds']:.1f}", f"{data['peak_rss_gib']:.2f}"))
        for name, ph in data["phases"].items():
            if name in ("start", "done") and ph["seconds"] < 0.5:
                continue
            rows.append((f"  {name}", f"{ph['seconds']:.1f}", f"{ph['peak_rss_gib']:.2f}"))
    print()
    print(
        f"{r['layers']}-layer 2B4T-shaped a4.8 model, {r['machine']['cpu']}, "
        f"{r['machine']['cores']} cores, {r['machine']['ram_gib']} GiB, tvm {r['tvm_version']}"
    )
    for a, b, c in rows:
        print(f"{a:<16}{b:>10}{c:>14}")
    print(
        f"fused operators: {r['fused_operators']}, unfused ternary MatMuls: {r['unfused_matmuls']}"
    )
    ok = r["compile_seconds"] <= 900 and r["compile_peak_rss_gib"] <= 12
    print(f"limits (<= 900 s, <= 12 GiB): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
