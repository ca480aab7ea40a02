"""Prefill GEMM benchmark: INT4 by vpermb lookup tables against INT8 (and INT4) on VNNI.

For BitNet-2B4T shapes (13824x2560, 2560x2560 and the down 2560x6912 matmuls; the fused
gate/up 2 x 6912 x 2560 with its ReLU^2 GLU; M in {128, 512}), 1 and 2 threads, this times in
one process, interleaved call by call (A, B, C, D, A, B, C, D, ...):

* ``int8_vnni``: our INT8 kernel, what ``cpu_rules()`` gives the INT8 operator (the VNNI GEMM,
  for the prefill gate/up too);
* ``int4_vnni``: the INT4 operator scheduled by ``cpu_rules()`` without the LUT rule (the VNNI
  GEMM);
* ``int4_lut_flat``: :class:`LutGemm` without M blocks (``m_block`` above any M: the kernel
  before M blocking);
* ``int4_lut``: the INT4 operator as ``cpu_rules()`` schedules it (:class:`LutGemm`, vpermb,
  in M blocks where its tables outgrow :data:`~bitnet_tvm.schedules.cpu.lut_gemm.TABLE_BYTES`).

All read the weight layout :func:`select_layout` picks for this host and operator. The weights
are warm (one matrix, reused: prefill is compute-bound). Each number is the minimum wall time
over the repeats (the machine is shared; minimums are the least noisy statistic, and still
noisy: the JSON records the load average before and after). llama.cpp TQ2_0 (217 GOP/s at M=128,
13824x2560, 2 threads, from the issue) is the outside reference.

    python benchmarks/cpu_lut.py            # ~5 min
    python benchmarks/cpu_lut.py --threads 1
    python benchmarks/cpu_lut.py --quick    # one shape, M=128, 2 threads

Writes ``benchmarks/results/cpu_lut.json`` and ``cpu_lut.png`` (``--quick``: ``_quick``; other
``--threads``: ``_t1`` etc.).
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))  # before TVM starts

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import tvm
from tvm.s_tir.dlight import ApplyDefaultSchedule

from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.machine import cpu_model
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu import LutGemm, LutKnobs, cpu_rules
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import ternary_gate_up, ternary_matmul
from bitnet_tvm.schedules.selection import select_layout
from bitnet_tvm.schedules.target import cpu_flags, host_target

RESULTS = Path(__file__).resolve().parent / "results"
#: (operator, N or I, K): the fused gate/up of 2B4T has 2 x 6912 weight rows (13824x2560).
SHAPES = [
    ("matmul", 13824, 2560),
    ("matmul", 2560, 2560),
    ("matmul", 2560, 6912),
    ("gate_up", 6912, 2560),
]
BUILDERS = {"matmul": ternary_matmul, "gate_up": ternary_gate_up}
TQ2_0_GOPS = 217.0  # llama.cpp TQ2_0, M=128, 13824x2560, 2 threads (the issue)
KERNELS = ("int8_vnni", "int4_vnni", "int4_lut_flat", "int4_lut")
#: ``LutGemm`` knobs that never block M (any real M is below this).
FLAT = LutKnobs(m_block=1 << 30)


def machine_info(target: tvm.target.Target) -> dict:
    """CPU, flags, versions, command and load of this run."""
    simd = ["avx512_vnni", "avx512vbmi", "avx512bw", "avx512f"]
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": sorted(f for f in cpu_flags()[1] if f in simd),
        "target": str(target),
        "tvm": tvm.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_before": os.getloadavg(),
        "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS"),
    }


def build(op: str, n: int, k: int, m: int, target: tvm.target.Target, layout) -> dict:
    """The compiled :data:`KERNELS` of operator ``op`` (``n`` outputs, K ``k``), ``m_hint = m``."""
    rules = cpu_rules()
    no_lut = [r for r in rules if not isinstance(r, LutGemm)]
    flat = [LutGemm(FLAT) if isinstance(r, LutGemm) else r for r in rules]
    out = {}
    for name, bits, rule_set in (
        ("int8_vnni", 8, rules),
        ("int4_vnni", 4, no_lut),
        ("int4_lut_flat", 4, flat),
        ("int4_lut", 4, rules),
    ):
        func = BUILDERS[op](n, k, act_bits=bits, layout=layout).with_attr(attrs.M_HINT, m)
        with target:
            mod = ApplyDefaultSchedule(*rule_set)(tvm.IRModule({"main": func}))
        text = mod["main"].script()
        if ("permvar" in text) != name.startswith("int4_lut"):
            raise RuntimeError(f"{name}: the rules did not pick the expected kernel")
        out[name] = tvm.compile(mod, target=target)["main"]
    return out


def measure(op: str, n: int, k: int, m: int, threads: int, kernels: dict, layout, reps: int):
    """``(wall, cpu)``: minimum wall and process CPU seconds per call of each kernel, interleaved.

    CPU time is less disturbed by other processes on a shared machine (time slices taken away
    do not count) but counts TVM workers' spin-waits; both are reported.
    """
    tvm.get_global_func("runtime.config_threadpool")(0, threads)
    rng = np.random.default_rng(0)
    rows = 2 * n if op == "gate_up" else n
    q_w = rng.integers(-1, 2, (rows, k)).astype(np.int8)
    x_q = rng.integers(-8, 8, (m, k)).astype(np.int8)
    args = [
        tvm.runtime.tensor(a)
        for a in (
            x_q,
            rng.random((m, 1)).astype(np.float32),
            pack_weight(q_w, layout),
            rng.random(rows).astype(np.float32),
            np.zeros((m, n), np.float32),
        )
    ]
    wall = dict.fromkeys(kernels, float("inf"))
    cpu = dict.fromkeys(kernels, float("inf"))
    for _ in range(reps + 1):  # the first pass warms up
        for name, kernel in kernels.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            kernel(*args)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
            wall[name] = min(wall[name], time.perf_counter() - start)
    return wall, cpu


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars per (shape, M, threads): GOP/s from wall time (top) and CPU time (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['op']} {r['n']}x{r['k']}\nM={r['m']} t={r['threads']}" for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.2 * len(rows)), 8), sharex=True)
    for ax, suffix, what in zip(axes, ("gops", "cpu_gops"), ("wall", "CPU"), strict=True):
        width = 0.8 / len(KERNELS)
        for i, name in enumerate(KERNELS):
            offset = (i - (len(KERNELS) - 1) / 2) * width
            ax.bar(x + offset, [r[f"{name}_{suffix}"] for r in rows], width, label=name)
        ax.axhline(TQ2_0_GOPS, color="gray", ls="--", lw=1, label="llama.cpp TQ2_0 (M=128, 2t)")
        ax.set_ylabel(f"GOP/s from min {what} time")
        ax.legend(fontsize=8)
    axes[1].set_xticks(x, labels, fontsize=8)
    axes[0].set_title("Ternary prefill GEMM: INT4 vpermb LUT vs VNNI (interleaved, shared machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="13824x2560, M=128, 2 threads")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="pool sizes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    target = host_target()
    info = machine_info(target)
    print(f"{info['cpu']}, {' '.join(info['flags'])}; tvm {info['tvm']}")
    shapes, ms, thread_counts = SHAPES, (128, 512), tuple(args.threads)
    layouts = {op: select_layout("dense" if op == "matmul" else op, target) for op in BUILDERS}
    info["layouts"] = {op: layout.value for op, layout in layouts.items()}
    if args.quick:
        shapes, ms, thread_counts = SHAPES[:1], (128,), (2,)
    rows = []
    for op, n, k in shapes:
        layout = layouts[op]
        for m in ms:
            kernels = build(op, n, k, m, target, layout)
            for threads in thread_counts:
                wall, cpu = measure(op, n, k, m, threads, kernels, layout, args.reps)
                row = {"op": op, "n": n, "k": k, "m": m, "threads": threads}
                macs = m * k * (2 * n if op == "gate_up" else n)
                for name, seconds in wall.items():
                    row[f"{name}_ms"] = seconds * 1e3
                    row[f"{name}_gops"] = 2 * macs / seconds / 1e9
                    row[f"{name}_cpu_ms"] = cpu[name] * 1e3
                    row[f"{name}_cpu_gops"] = 2 * macs / (cpu[name] / threads) / 1e9
                row["lut_vs_int8"] = row["int4_lut_gops"] / row["int8_vnni_gops"]
                row["lut_vs_int8_cpu"] = row["int4_lut_cpu_gops"] / row["int8_vnni_cpu_gops"]
                row["flat_vs_int8_cpu"] = row["int4_lut_flat_cpu_gops"] / row["int8_vnni_cpu_gops"]
                row["lut_vs_tq2_0"] = row["int4_lut_gops"] / TQ2_0_GOPS
                rows.append(row)
                print(
                    f"{op:7} {n:>5}x{k:<5} M={m:<4} t={threads}  "
                    + "  ".join(f"{name} {row[f'{name}_gops']:6.0f}" for name in KERNELS)
                    + f"  GOP/s  LUT/INT8 {row['lut_vs_int8']:.2f}x (CPU time"
                    + f" {row['lut_vs_int8_cpu']:.2f}x, flat {row['flat_vs_int8_cpu']:.2f}x)"
                    + f"  LUT/TQ2_0 {row['lut_vs_tq2_0']:.2f}x",
                    flush=True,
                )
    info["load_after"] = os.getloadavg()
    stem = "cpu_lut_quick" if args.quick else "cpu_lut"
    if not args.quick and thread_counts != (1, 2):
        stem += "_t" + "-".join(map(str, thread_counts))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "tq2_0_gops": TQ2_0_GOPS, "reps": args.reps, "rows": rows}
    with atomic_open(args.out / f"{stem}.json") as f:
        f.write(json.dumps(report, indent=1))
    plot(rows, args.out / f"{stem}.png")
    print(f"wrote {args.out / stem}.json and .png")


if __name__ == "__main__":
    main()
