"""CPU kernel benchmark: ternary matmuls of BitNet-2B4T shapes against fp32 and int8 baselines.

One run measures, on this machine and in this process:

* read bandwidth, STREAM-like (:func:`bitnet_tvm.bench.roofline.read_bandwidth`: a TVM
  parallel int32 sum over 512 MiB in eight streams per chunk, 1 and 2 threads; NumPy's
  single-threaded sum for reference) -- the roof for the decode GEMVs (``%DRAM``) -- and peak
  int8 ``vpdpbusd`` throughput (:func:`~bitnet_tvm.bench.roofline.peak_int8_ops`);
* NumPy/OpenBLAS float32 ``x @ W.T``;
* ONNX Runtime int8 ``MatMulInteger`` (uint8 activations with zero point x int8 weights);
* our ternary matmul with INT8 and with INT4 activations in the layout the CPU rules select
  (AVX-512 VNNI: row-interleaved ``2bit_vnni``), INT8 with 1.6-bit weights (``base3_vnni``),
  and the generic (pre-VNNI) schedule on plain ``2bit`` for reference (M <= 128);
* INT8 on an AVX2-only target (``x86-64-v3``: the ``vpmaddubsw`` decode kernel,
  :class:`~bitnet_tvm.schedules.cpu.avx2_matmul.Avx2Matmul`), M <= 8, where the host has AVX2;
* the fused gate/up (gate first, ~half the up rows skipped) on the gate/up shapes at M=1;
* the sparse INT8 GEMV of the ``down`` shapes at 85 % zero activations.

Shapes: BitNet-2B4T (hidden 2560, intermediate 6912) and the paper's 3B (hidden 3200,
intermediate 8640, 32 heads), fused QKV and gate/up as the compiler emits them.

"cold" cycles through distinct weight copies totalling >= 128 MiB between calls (weights come
from DRAM, as in a model); "warm" calls one matrix repeatedly.  M > 1 rows are cold only.
Every number is the median of per-call times (5 batches; ``spread`` is the max/min of the batch
medians).  Timings include TVM's Python call overhead (a few µs; see ``call_overhead_us``).

    python benchmarks/cpu_kernels.py            # full table (a quiet machine: ~1 h)
    python benchmarks/cpu_kernels.py --quick    # smoke run, two shapes, M=1, ~2 min

Writes ``benchmarks/results/cpu_kernels.json`` and ``cpu_kernels.png`` (``--quick``: the
``_quick`` variants).
"""

from __future__ import annotations

import os

# TVM sizes its thread pool once, at the first parallel call, to TVM_NUM_THREADS or else half
# the CPUs (it assumes hyper-threading): 1 worker on a 2-CPU VM, whatever config_threadpool
# asks for later.  Set it before TVM starts.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

import argparse
import contextlib
import ctypes
import glob
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm.s_tir.dlight import ApplyDefaultSchedule
from tvm.script import tirx as T

from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.bench.roofline import peak_int8_ops, read_bandwidth
from bitnet_tvm.machine import cpu_model
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu import (
    Avx2Knobs,
    NormQuantize,
    SparseGemv,
    TernaryGemm,
    TernaryGemv,
    cpu_rules,
)
from bitnet_tvm.schedules.layouts import pack_weight
from bitnet_tvm.schedules.operators import sparse_int8_matmul, ternary_gate_up, ternary_matmul
from bitnet_tvm.schedules.selection import select_layout
from bitnet_tvm.schedules.target import cpu_flags, host_target

SHAPES = {  # name: (N, K) of W[N, K]
    "attn 2560x2560": (2560, 2560),
    "qkv 3840x2560": (3840, 2560),
    "gate/up 13824x2560": (13824, 2560),
    "down 2560x6912": (2560, 6912),
    "3B attn 3200x3200": (3200, 3200),
    "3B qkv 9600x3200": (9600, 3200),
    "3B gate/up 17280x3200": (17280, 3200),
    "3B down 3200x8640": (3200, 8640),
}
QUICK_SHAPES = ("attn 2560x2560", "down 2560x6912")
#: llama.cpp TQ2_0 on a machine like this one, 2 threads (from the issue).
LLAMA_CPP = {
    ("gate/up 13824x2560", 1, "cold"): 403.0,
    ("gate/up 13824x2560", 1, "warm"): 320.0,
    ("gate/up 13824x2560", 128, "cold"): 41700.0,
}
COLD_BYTES = 128 << 20
SPARSE_ZEROS = 0.85
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    shape: str
    n: int
    k: int
    m: int
    threads: int
    impl: str
    mode: str
    us: float
    spread: float
    weight_bytes: int
    gbs: float = 0.0
    pct_dram: float = 0.0
    gops: float = 0.0
    vs_fp32: float | None = None
    vs_ort: float | None = None
    vs_generic: float | None = None


# ------------------------------------------------------------------ machine and threads
def machine_info() -> dict:
    """CPU model, cores, SIMD flags, versions and load of this machine."""
    simd = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512vbmi", "avx512_vpopcntdq"]
    import onnxruntime

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": sorted(f for f in cpu_flags()[1] if f in simd),
        "target": str(host_target()),
        "tvm": tvm.__version__,
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_before": os.getloadavg(),
        "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS"),
    }


def _openblas():
    libs = glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "libscipy_openblas*.so"))
    return ctypes.CDLL(libs[0]) if libs else None


_BLAS = _openblas()


def set_threads(n: int) -> None:
    """Thread count of TVM's pool and of OpenBLAS (ONNX Runtime takes it per session)."""
    tvm.get_global_func("runtime.config_threadpool")(0, n)
    if _BLAS is not None:
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads"):
            if hasattr(_BLAS, name):
                getattr(_BLAS, name)(ctypes.c_int(n))
                break


# ------------------------------------------------------------------ timing
def time_calls(calls: list, budget_s: float, max_reps: int = 400) -> tuple[float, float]:
    """Median µs per call cycling through ``calls``, and the spread (max/min batch median)."""
    for call in calls:  # warm-up: one pass (for cold, every copy once)
        call()
    start = time.perf_counter()
    calls[0]()
    once = time.perf_counter() - start
    reps = int(min(max_reps, max(10, budget_s / max(once, 1e-6))))
    reps = max(reps, 5 * len(calls)) if len(calls) > 1 else reps
    times = []
    for i in range(reps):
        call = calls[i % len(calls)]
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    batches = [np.median(b) for b in np.array_split(np.array(times), 5)]
    return float(np.median(times)) * 1e6, float(max(batches) / min(batches))


def copies_for(nbytes: int, cold: bool) -> int:
    """Distinct weight copies to cycle through: >= COLD_BYTES in all when cold."""
    return max(2, math.ceil(COLD_BYTES / nbytes)) if cold else 1


# ------------------------------------------------------------------ read bandwidth
def numpy_read_bandwidth(mib: int) -> float:
    """GB/s of ``np.sum`` (one thread) over ``mib`` MiB of float32 (best of 5)."""
    a = np.ones((mib << 20) // 4, np.float32)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return a.nbytes / best / 1e9


# ------------------------------------------------------------------ implementations
def numpy_fp32(n, k, m, cold, budget) -> tuple[float, float, int]:
    """NumPy/OpenBLAS float32 ``x @ W.T`` (W stored transposed, [K, N])."""
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (k, n)).astype(np.float32)
    ws = [w] + [w.copy() for _ in range(copies_for(w.nbytes, cold) - 1)]
    x = rng.standard_normal((m, k)).astype(np.float32)
    us, spread = time_calls([lambda w=w: x @ w for w in ws], budget)
    return us, spread, w.nbytes


def _ort_session(n, k, threads, w):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "x_zero"], ["y"])],
        "mmi",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["M", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["M", n])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.uint8(128), "x_zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_int8(n, k, m, cold, budget, threads) -> tuple[float, float, int]:
    """ONNX Runtime ``MatMulInteger``, uint8 activations (zero point 128) x int8 ``W^T``.

    (MLAS's fast path is u8 x s8; int8 activations ``x`` are fed as ``x + 128``.)
    """
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (k, n)).astype(np.int8)
    sessions = [_ort_session(n, k, threads, w) for _ in range(copies_for(w.nbytes, cold))]
    x = rng.integers(0, 256, (m, k)).astype(np.uint8)
    us, spread = time_calls([lambda s=s: s.run(None, {"x": x}) for s in sessions], budget)
    return us, spread, w.nbytes


GENERIC_RULES = [TernaryGemv(), TernaryGemm(), SparseGemv(), NormQuantize()]
GENERIC_IMPL = "ours int4 generic (pre-VNNI)"
BASE3_IMPL = "ours int8 1.6-bit ternary"
BASE3_INT4_IMPL = "ours int4 1.6-bit ternary"
SPARSE_IMPL = f"ours sparse int8 {SPARSE_ZEROS:.0%} zeros"
GATE_UP_IMPL = "ours int8 gate_up, gate first"
AVX2_IMPL = "ours int8 AVX2"


def avx2_target(threads: int) -> tvm.target.Target:
    """An AVX2-only target (no AVX-512): the ``Avx2Matmul`` decode kernel on this host."""
    return tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": threads})


def _compile(func, target, rules):
    with target:
        mod = ApplyDefaultSchedule(*rules)(tvm.IRModule({"main": func}))
    return tvm.compile(mod, target=target)


def tvm_ternary(
    n, k, m, cold, budget, threads, act_bits, rules, kind="dense", base3=False, target=None
):
    """Our scheduled ternary matmul in the layout ``select_layout`` picks for ``kind``
    (``"sparse"``: the sparse GEMV; ``"generic"``: plain 2-bit rows); ``base3``: 1.6 bits;
    ``target``: instead of the host's (e.g. :func:`avx2_target`)."""
    rng = np.random.default_rng(0)
    target = target if target is not None else host_target(threads)
    q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    sparse = kind == "sparse"
    if sparse:
        layout = select_layout("sparse", target)
        func = sparse_int8_matmul(n, k, layout=layout)
    else:
        layout = "2bit" if kind == "generic" else select_layout("dense", target, base3=base3)
        func = ternary_matmul(n, k, act_bits=act_bits, layout=layout)
    if m > 1:
        func = func.with_attr(attrs.M_HINT, m)
    ex = _compile(func, target, rules)
    packed = pack_weight(q_w, layout)
    ws = [tvm.runtime.tensor(packed) for _ in range(copies_for(packed.nbytes, cold))]
    lo, hi = (-8, 8) if act_bits == 4 else (-128, 128)
    x_q = rng.integers(lo, hi, (m, k)).astype(np.int8)
    if sparse:
        x_q[rng.random(x_q.shape) < SPARSE_ZEROS] = 0
    x_s = tvm.runtime.tensor(np.full((m, 1), 0.01, np.float32))
    alpha = tvm.runtime.tensor(np.full(n, 0.5, np.float32))
    y = tvm.runtime.tensor(np.zeros((m, n), np.float32))
    x = tvm.runtime.tensor(x_q)
    f = ex["main"]
    set_threads(threads)
    us, spread = time_calls([lambda w=w: f(x, x_s, w, alpha, y) for w in ws], budget)
    return us, spread, packed.nbytes


def tvm_gate_up(n, k, cold, budget, threads):
    """Our fused gate/up + ReLU^2 GLU at decode (``W_gu`` of ``n = 2I`` rows): gate first, up
    rows only where ``relu(gate) > 0`` (about half of them here: random signs)."""
    rng = np.random.default_rng(0)
    target = host_target(threads)
    i = n // 2
    q_w = rng.integers(-1, 2, (2 * i, k)).astype(np.int8)
    layout = select_layout("gate_up", target)
    ex = _compile(ternary_gate_up(i, k, act_bits=8, layout=layout), target, cpu_rules())
    packed = pack_weight(q_w, layout)
    ws = [tvm.runtime.tensor(packed) for _ in range(copies_for(packed.nbytes, cold))]
    x = tvm.runtime.tensor(rng.integers(-128, 128, (1, k)).astype(np.int8))
    x_s = tvm.runtime.tensor(np.full((1, 1), 0.01, np.float32))
    alpha = tvm.runtime.tensor(rng.standard_normal(2 * i).astype(np.float32))
    h = tvm.runtime.tensor(np.zeros((1, i), np.float32))
    f = ex["main"]
    set_threads(threads)
    us, spread = time_calls([lambda w=w: f(x, x_s, w, alpha, h) for w in ws], budget)
    return us, spread, packed.nbytes


def call_overhead_us() -> float:
    """µs of calling a trivial compiled TVM function with five tensors from Python."""

    @T.prim_func(s_tir=True)
    def nop(
        a: T.Buffer((1,), "int8"),
        b: T.Buffer((1,), "int8"),
        c: T.Buffer((1,), "int8"),
        d: T.Buffer((1,), "int8"),
        e: T.Buffer((1,), "int8"),
    ):
        e[0] = a[0]

    ex = tvm.compile(tvm.IRModule({"main": nop}), target=host_target(1))
    args = [tvm.runtime.tensor(np.zeros(1, np.int8)) for _ in range(5)]
    f = ex["main"]
    return time_calls([lambda: f(*args)], 0.2)[0]


# ------------------------------------------------------------------ harness
def measure(args) -> tuple[list[Row], dict]:
    names = QUICK_SHAPES if args.quick else args.shapes or tuple(SHAPES)
    shapes = {name: SHAPES[name] for name in names}
    ms = [1] if args.quick else args.m
    threads_list = [2] if args.quick else args.threads
    budget = 0.1 if args.quick else args.budget
    mib = 256
    bw = {t: read_bandwidth(t) for t in sorted(set(threads_list) | {1})}
    extra = {"read_gbs": bw, "numpy_sum_gbs_1thread": numpy_read_bandwidth(mib)}
    with contextlib.suppress(RuntimeError):  # no VNNI: no int8 roof
        extra["int8_peak_gops"] = {t: peak_int8_ops(t) / 1e9 for t in bw}
    extra["call_overhead_us"] = call_overhead_us()
    rows: list[Row] = []
    for threads in threads_list:
        set_threads(threads)
        for name, (n, k) in shapes.items():
            for m in ms:
                modes = ["cold", "warm"] if m == 1 else ["cold"]
                for mode in modes:
                    cold = mode == "cold"

                    def add(impl, result, threads=threads, m=m, mode=mode, n=n, k=k, name=name):
                        us, spread, nbytes = result
                        rows.append(Row(name, n, k, m, threads, impl, mode, us, spread, nbytes))
                        print(
                            f"  {name:<20} M={m:<4} t={threads} {mode:<4} {impl:<28}{us:>11.1f} µs",
                            flush=True,
                        )

                    set_threads(threads)
                    add("numpy fp32", numpy_fp32(n, k, m, cold, budget))
                    add("onnxruntime int8", ort_int8(n, k, m, cold, budget, threads))
                    for bits in (8, 4):
                        add(
                            f"ours int{bits} ternary",
                            tvm_ternary(n, k, m, cold, budget, threads, bits, cpu_rules()),
                        )
                    add(
                        BASE3_IMPL,
                        tvm_ternary(n, k, m, cold, budget, threads, 8, cpu_rules(), base3=True),
                    )
                    add(
                        BASE3_INT4_IMPL,
                        tvm_ternary(n, k, m, cold, budget, threads, 4, cpu_rules(), base3=True),
                    )
                    if m == 1 or (m <= 128 and not args.quick):
                        add(
                            GENERIC_IMPL,
                            tvm_ternary(
                                n, k, m, cold, budget, threads, 4, GENERIC_RULES, "generic"
                            ),
                        )
                    if "avx2" in cpu_flags()[1] and m <= Avx2Knobs().max_decode_m:
                        target = avx2_target(threads)
                        rules = cpu_rules()
                        add(
                            AVX2_IMPL,
                            tvm_ternary(n, k, m, cold, budget, threads, 8, rules, target=target),
                        )
                    if "gate/up" in name and m == 1:
                        add(GATE_UP_IMPL, tvm_gate_up(n, k, cold, budget, threads))
                    if "down" in name and m == 1:
                        add(
                            SPARSE_IMPL,
                            tvm_ternary(n, k, m, cold, budget, threads, 8, cpu_rules(), "sparse"),
                        )
    return rows, extra


def derive(rows: list[Row], bw: dict) -> None:
    """Fill GB/s, % of read bandwidth, GOPS and speedups."""
    index = {(r.shape, r.m, r.threads, r.mode, r.impl): r for r in rows}
    for r in rows:
        r.gbs = r.weight_bytes / r.us / 1e3
        r.pct_dram = 100 * r.gbs / bw[r.threads]
        r.gops = 2 * r.m * r.n * r.k / r.us / 1e3
        key = (r.shape, r.m, r.threads, r.mode)
        for attr, impl in (
            ("vs_fp32", "numpy fp32"),
            ("vs_ort", "onnxruntime int8"),
            ("vs_generic", GENERIC_IMPL),
        ):
            base = index.get((*key, impl))
            if base is not None and r.impl.startswith("ours"):
                setattr(r, attr, base.us / r.us)


def targets(rows: list[Row], bw: dict) -> list[dict]:
    """The issue's goals, met or not, from the measured rows."""
    out = []
    for (shape, m, mode), ref_us in LLAMA_CPP.items():
        ours = [
            r
            for r in rows
            if (r.shape, r.m, r.mode, r.threads) == (shape, m, mode, 2)
            and r.impl == "ours int4 ternary"
        ]
        if ours:
            out.append(
                {
                    "goal": f"llama.cpp TQ2_0 {shape} M={m} {mode}: {ref_us:.0f} µs",
                    "ours_us": ours[0].us,
                    "speedup": ref_us / ours[0].us,
                }
            )
    for r in rows:
        if r.m == 1 and r.mode == "cold" and r.impl == "ours int8 ternary":
            out.append(
                {
                    "goal": f">= 80% DRAM read bw: {r.shape} t={r.threads}",
                    "pct_dram": r.pct_dram,
                    "met": r.pct_dram >= 80,
                }
            )
    index = {(r.shape, r.m, r.threads, r.mode, r.impl): r for r in rows}
    base3_vs_2bit = {BASE3_IMPL: "ours int8 ternary", BASE3_INT4_IMPL: "ours int4 ternary"}
    for r in rows:
        two = index.get((r.shape, r.m, r.threads, r.mode, base3_vs_2bit.get(r.impl)))
        if r.impl in base3_vs_2bit and r.m == 1 and two is not None:
            bits = r.impl.split()[1]  # like with like: int4 1.6-bit vs int4 2-bit
            out.append(
                {
                    "goal": f"{bits} 1.6-bit no slower than {bits} 2-bit: {r.shape} "
                    f"t={r.threads} {r.mode}",
                    "ratio_2bit_over_1p6bit": two.us / r.us,
                    "met": r.us <= two.us,
                }
            )
    for r in rows:
        if r.impl == SPARSE_IMPL:
            dense = [
                d
                for d in rows
                if (d.shape, d.m, d.threads, d.mode) == (r.shape, r.m, r.threads, r.mode)
                and d.impl == "ours int8 ternary"
            ]
            if dense:
                ratio = dense[0].us / r.us
                out.append(
                    {
                        "goal": f"sparse >= 3x dense: {r.shape} t={r.threads} {r.mode}",
                        "ratio": ratio,
                        "met": ratio >= 3,
                    }
                )
    return out


def print_table(rows: list[Row]) -> None:
    def fmt(v):
        return f"{v:.2f}x" if v is not None else "-"

    head = (
        f"{'shape':<20}{'M':>5}{'thr':>4} {'mode':<5}{'impl':<30}{'µs':>11}{'spread':>8}"
        f"{'GB/s':>8}{'%DRAM':>7}{'GOPS':>8}{'vs fp32':>9}{'vs ORT':>8}{'vs gen':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.shape:<20}{r.m:>5}{r.threads:>4} {r.mode:<5}{r.impl:<30}{r.us:>11.1f}"
            f"{r.spread:>8.2f}{r.gbs:>8.2f}{r.pct_dram:>7.1f}{r.gops:>8.1f}"
            f"{fmt(r.vs_fp32):>9}{fmt(r.vs_ort):>8}{fmt(r.vs_generic):>8}"
        )


def plot(rows: list[Row], bw: dict, path: Path) -> None:
    """Bars of weight GB/s (decode, cold) and GOPS (largest M), with the bandwidth roof."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = max(r.threads for r in rows)
    m_big = max(r.m for r in rows)
    panels = [("decode M=1, cold: weight GB/s", 1, "gbs")]
    if m_big > 1:
        panels.append((f"prefill M={m_big}, cold: GOP/s", m_big, "gops"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), squeeze=False)
    for ax, (title, m, field) in zip(axes[0], panels, strict=True):
        sel = [r for r in rows if r.m == m and r.mode == "cold" and r.threads == threads]
        shapes = list(dict.fromkeys(r.shape for r in sel))
        impls = list(dict.fromkeys(r.impl for r in sel))
        width = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            vals = [
                next((getattr(r, field) for r in sel if r.shape == s and r.impl == impl), 0)
                for s in shapes
            ]
            ax.bar(np.arange(len(shapes)) + j * width, vals, width, label=impl)
        if field == "gbs":
            ax.axhline(bw[threads], color="k", ls="--", label=f"read bw {bw[threads]:.1f} GB/s")
            ax.axhline(0.8 * bw[threads], color="gray", ls=":", label="80% of read bw")
        for (shape, mm, mode), ref in LLAMA_CPP.items():
            if mm == m and mode == "cold" and shape in shapes:
                n, k = SHAPES[shape]
                val = n * k / 4 / ref / 1e3 if field == "gbs" else 2 * m * n * k / ref / 1e3
                ax.plot(shapes.index(shape) + 0.4, val, "r*", ms=12, label="llama.cpp TQ2_0")
        ax.set_xticks(np.arange(len(shapes)) + 0.4, shapes, fontsize=8)
        ax.set_title(f"{title} ({threads} threads)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes, M=1, 2 threads")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--shapes", nargs="+", choices=tuple(SHAPES), metavar="SHAPE", help="subset of SHAPES"
    )
    parser.add_argument("--m", type=int, nargs="+", default=[1, 16, 128, 512])
    parser.add_argument("--budget", type=float, default=0.4, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    info = machine_info()
    print(f"{info['cpu']}, {info['cores']} cores, {' '.join(info['flags'])}; tvm {info['tvm']}")
    rows, extra = measure(args)
    bw = extra["read_gbs"]
    derive(rows, bw)
    info["load_after"] = os.getloadavg()
    print(
        f"\nread bandwidth (GB/s): {bw}  numpy sum 1 thread: {extra['numpy_sum_gbs_1thread']:.1f}"
    )
    print(f"TVM call overhead from Python: {extra['call_overhead_us']:.1f} µs\n")
    print_table(rows)
    goals = targets(rows, bw)
    print()
    for goal in goals:
        print(goal)
    stem = "cpu_kernels_quick" if args.quick else "cpu_kernels"
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": info,
        **extra,
        "llama_cpp_us": {" | ".join(map(str, k)): v for k, v in LLAMA_CPP.items()},
        "rows": [asdict(r) for r in rows],
        "goals": goals,
    }
    with atomic_open(args.out / f"{stem}.json") as f:
        f.write(json.dumps(report, indent=1))
    plot(rows, bw, args.out / f"{stem}.png")
    print(f"wrote {args.out / stem}.json and .png")


if __name__ == "__main__":
    main()
