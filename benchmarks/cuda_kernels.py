"""CUDA kernel benchmark (H100): BitNet-2B4T shapes against the copy bandwidth, cuBLAS fp16
and ``torch._int_mm``, with every kernel checked against :mod:`bitnet_tvm.reference` first.

Two halves, because the GPU machine has no TVM compiler (see ``../shared/docs/tvm-notes.md``,
"Getting compiled code onto the lent GPU machine"):

``build`` (here, full TVM + nvcc)
    Schedules the kernels with our CUDA rules, exports them as one library
    (``kernels.so``) and compiles them ahead of time with our nvcc flags for each ``--arch``
    (:func:`bitnet_tvm.cuda_aot.embed_cubins`: ``cuda/``), plus ``bench.json`` (what is where).
``run`` (the GPU machine: runtime-only TVM, torch with CUDA, numpy)
    Serves the cubins to the CUDA runtime (:func:`bitnet_tvm.cuda_aot.install_aot_kernels`,
    no nvcc / NVRTC), checks every kernel exactly against the reference, then measures:

    * device-to-device copy bandwidth (``torch`` ``copy_`` of 1 GiB; read + write bytes);
    * decode GEMV 13824x2560 (INT4 activations, 2-bit weights) with the weights rotating
      through >= 2x L2 bytes of copies, each call timed alone after an L2 flush: µs and % of
      the copy bandwidth (packed weight + activation + output bytes), against torch fp16
      ``x @ W.T`` (cuBLAS) under the same rotation;
    * the decoder layer stack (norm_quantize, QKV, O sparse, gate/up, down sparse, x30 layers
      of distinct weights): sum of the per-kernel cold times against the bytes moved (launch
      overhead excluded: the kernels are launched from Python one at a time);
    * prefill M=2048 on 13824x2560: our INT8 tensor-core GEMM vs torch fp16 matmul and
      ``torch._int_mm`` (int8 x int8 -> int32), in TOPS.

    Prints a clear message and exits 0 when there is no GPU.  Writes
    ``benchmarks/results/cuda_kernels_<device>.json`` and ``.png``.

    python benchmarks/cuda_kernels.py build          # here: benchmarks/cuda_build, ~2-5 min
    python benchmarks/cuda_kernels.py pack-runtime   # here: runtime-only TVM for Python 3.12
    bash benchmarks/gpu_device_run.sh                # on the GPU machine

Timing: CUDA events around each call (``torch.cuda.Event``, the legacy default stream TVM
launches on), medians of ``--repeat`` calls.  No number here was taken on a GPU yet.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

HIDDEN, INTER, KV = 2560, 6912, 640  # BitNet-2B4T: hidden, intermediate, 5 KV heads x 128
LAYERS = 30
L2_BYTES = 50 * 2**20  # H100 SXM
PREFILL_M = 2048


def _kernels() -> dict[str, dict]:
    """name -> spec: operator, shape, and the M used for the numerics check."""
    return {
        "gemv_13824x2560": {"op": "dense", "n": 13824, "k": HIDDEN, "bits": 4, "check_m": 1},
        "gemm_13824x2560": {
            "op": "dense",
            "n": 13824,
            "k": HIDDEN,
            "bits": 4,
            "m_hint": PREFILL_M,
            "check_m": 96,
        },
        "nq_qkv": {"op": "norm", "k": HIDDEN, "site": "qkv", "check_m": 1},
        "qkv": {"op": "dense", "n": HIDDEN + 2 * KV, "k": HIDDEN, "bits": 4, "check_m": 1},
        "nq_o": {"op": "norm", "k": HIDDEN, "site": "o", "check_m": 1},
        "o": {"op": "sparse", "n": HIDDEN, "k": HIDDEN, "check_m": 1},
        "nq_gate_up": {"op": "norm", "k": HIDDEN, "site": "gate_up", "check_m": 1},
        "gate_up": {"op": "gate_up", "n": INTER, "k": HIDDEN, "bits": 4, "check_m": 1},
        "nq_down": {"op": "norm", "k": INTER, "site": "down", "check_m": 1},
        "down": {"op": "sparse", "n": HIDDEN, "k": INTER, "check_m": 1},
    }


LAYER = ("nq_qkv", "qkv", "nq_o", "o", "nq_gate_up", "gate_up", "nq_down", "down")


# ------------------------------------------------------------------------------------ build
def build(out: Path, archs: list[str]) -> None:
    """Schedule, export and compile ahead of time every kernel of :func:`_kernels`."""
    import tvm
    from tvm.s_tir.dlight import ApplyDefaultSchedule

    from bitnet_tvm.atomic import atomic_open
    from bitnet_tvm.cuda_aot import embed_cubins
    from bitnet_tvm.schedules import attrs
    from bitnet_tvm.schedules.cuda import cuda_rules
    from bitnet_tvm.schedules.operators import (
        norm_quantize,
        sparse_int8_matmul,
        ternary_gate_up,
        ternary_matmul,
    )
    from bitnet_tvm.schemes import get_scheme

    scheme = get_scheme("a4.8")
    funcs = {}
    for name, spec in _kernels().items():
        if spec["op"] == "dense":
            func = ternary_matmul(spec["n"], spec["k"], act_bits=spec["bits"])
        elif spec["op"] == "gate_up":
            func = ternary_gate_up(spec["n"], spec["k"], act_bits=spec["bits"])
        elif spec["op"] == "sparse":
            func = sparse_int8_matmul(spec["n"], spec["k"])
        else:
            has_norm = spec["site"] != "down"
            func = norm_quantize(
                spec["k"],
                act=getattr(scheme, spec["site"]),
                norm_eps=1e-5 if has_norm else None,
                has_weight=has_norm,
            )
        if "m_hint" in spec:
            func = func.with_attr(attrs.M_HINT, spec["m_hint"])
        funcs[name] = func.with_attr("global_symbol", name)
    out.mkdir(parents=True, exist_ok=True)
    target = tvm.target.Target({"kind": "cuda", "arch": archs[-1]}, host="llvm")
    print(f"scheduling and building {len(funcs)} kernels for {target}", flush=True)
    with target:
        mod = ApplyDefaultSchedule(*cuda_rules())(tvm.IRModule(funcs))
    ex = tvm.compile(mod, target=target)
    ex.export_library(str(out / "kernels.so"))
    print(f"nvcc for {', '.join(archs)}", flush=True)
    embed_cubins(out, ex, archs)
    with atomic_open(out / "bench.json") as f:
        json.dump({"library": "kernels.so", "archs": archs, "kernels": _kernels()}, f, indent=1)
    print(f"wrote {out}: kernels.so, cuda/, bench.json")


def pack_runtime(out: Path, python_version: str) -> None:
    """Copy a runtime-only TVM (the ``tvm`` package without ``libtvm_compiler.so``, headers and
    sources, ~17 MB) to ``out/tvm`` and download the ``apache-tvm-ffi`` wheel of the same
    version for ``python_version`` (the GPU machine's) to ``out/``."""
    import shutil
    import subprocess
    from importlib.metadata import version

    import tvm

    src = Path(tvm.__file__).parent
    skip = shutil.ignore_patterns("libtvm_compiler.so", "3rdparty", "src", "include", "__pycache__")
    if (out / "tvm").exists():
        shutil.rmtree(out / "tvm")
    shutil.copytree(src, out / "tvm", ignore=skip)
    ffi = f"apache-tvm-ffi=={version('apache-tvm-ffi')}"
    cmd = [sys.executable, "-m", "pip", "download", ffi, "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", python_version, "-d", str(out)]
    subprocess.run(cmd, check=True)
    print(f"wrote {out}: tvm/ (runtime only) and the {ffi} wheel for Python {python_version}")


# -------------------------------------------------------------------------------------- run
class _Gpu:
    """The runtime-only TVM side: library with AOT cubins, tensors, and event timing."""

    def __init__(self, build_dir: Path, torch) -> None:
        import tvm  # runtime-only: only tvm.runtime is used

        _load_cuda_runtime(tvm)
        from bitnet_tvm.cuda_aot import install_aot_kernels

        self.tvm, self.torch = tvm, torch
        self.dev = tvm.runtime.device("cuda", 0)
        self.arch = "sm_" + self.dev.compute_version.replace(".", "")
        install_aot_kernels(build_dir, self.arch)
        self.lib = tvm.runtime.load_module(str(build_dir / "kernels.so"))

    def put(self, array: np.ndarray):
        return self.tvm.runtime.tensor(array, device=self.dev)

    def empty(self, shape, dtype):
        return self.put(np.zeros(shape, dtype))

    def time_us(self, call, flush, repeat: int) -> float:
        """Median µs of ``call(i)``, each after ``flush()`` (cold L2), timed by CUDA events."""
        torch = self.torch
        times = []
        for i in range(repeat):
            flush()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call(i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        return float(np.median(times))


def _load_cuda_runtime(tvm) -> None:
    """Load TVM's CUDA runtime sidecar if the (runtime-only) import did not."""
    import ctypes

    import tvm_ffi

    if tvm_ffi.get_global_func("ffi.Module.load_from_bytes.cuda", allow_missing=True):
        return
    lib = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)


def _inputs(
    spec: dict, m: int, rng, *, want: bool = True
) -> tuple[list[np.ndarray], list, np.ndarray | None]:
    """Arguments of a kernel call, the reference outputs (empty unless ``want``), and the
    packed weight (None for norm_quantize)."""
    from bitnet_tvm import reference
    from bitnet_tvm.schemes import get_scheme

    k = spec["k"]
    if spec["op"] == "norm":
        act = getattr(get_scheme("a4.8"), spec["site"])
        x = rng.standard_normal((m, k)).astype(np.float32)
        if spec["site"] == "down":
            args, y = [x], x
        else:
            gamma = rng.random(k).astype(np.float32)
            args, y = [x, gamma], reference.rmsnorm(x, gamma, 1e-5)
        return args, list(reference.quantize_act(y, act)) if want else [], None
    rows = 2 * spec["n"] if spec["op"] == "gate_up" else spec["n"]
    q_w = rng.integers(-1, 2, (rows, k)).astype(np.int8)
    alpha = rng.random(rows).astype(np.float32)
    lim = 8 if spec.get("bits") == 4 else 128
    x_q = rng.integers(-lim, lim, (m, k)).astype(np.int8)
    if spec["op"] == "sparse":
        x_q[rng.random(x_q.shape) < 0.6] = 0
        w = reference.pack_ternary_2bit(np.ascontiguousarray(q_w.T))  # 2bit_kmajor
    else:
        w = reference.pack_ternary_2bit(q_w)
    x_s = rng.random((m, 1)).astype(np.float32) + np.float32(0.01)
    if not want:
        return [x_q, x_s, w, alpha], [], w
    if spec["op"] == "gate_up":
        n = spec["n"]
        g = reference.ternary_matmul(x_q, x_s, q_w[:n], alpha[:n])
        u = reference.ternary_matmul(x_q, x_s, q_w[n:], alpha[n:])
        r = np.maximum(g, np.float32(0))
        want = (r * r) * u
    else:
        want = reference.ternary_matmul(x_q, x_s, q_w, alpha)
    return [x_q, x_s, w, alpha], [want], w


def _out_specs(spec: dict, m: int) -> list[tuple[tuple, str]]:
    if spec["op"] == "norm":
        return [((m, spec["k"]), "int8"), ((m, 1), "float32")]
    return [((m, spec["n"]), "float32")]


def check(gpu: _Gpu, kernels: dict) -> dict[str, bool]:
    """Every kernel on the GPU equals the reference exactly (the on-device GPU tests)."""
    rng = np.random.default_rng(0)
    results = {}
    for name, spec in kernels.items():
        m = spec["check_m"]
        args, want, _ = _inputs(spec, m, rng)
        outs = [gpu.empty(shape, dtype) for shape, dtype in _out_specs(spec, m)]
        gpu.lib[name](*[gpu.put(a) for a in args], *outs)
        gpu.dev.sync()
        results[name] = all(np.array_equal(o.numpy(), w) for o, w in zip(outs, want, strict=True))
        print(f"  {name:18s} {'exact' if results[name] else 'MISMATCH'}", flush=True)
    return results


def _bytes(spec: dict, m: int, w: np.ndarray | None) -> int:
    """Bytes a call must move at least: packed weights, activations in, outputs out."""
    if spec["op"] == "norm":
        return m * spec["k"] * (4 + 1) + m * 4
    rows = 2 * spec["n"] if spec["op"] == "gate_up" else spec["n"]  # alpha entries
    return w.nbytes + m * spec["k"] + m * 4 + 4 * rows + 4 * m * spec["n"]


def measure(gpu: _Gpu, kernels: dict, repeat: int) -> dict:
    torch = gpu.torch
    cuda = torch.device("cuda")
    flush_buf = torch.empty(2 * L2_BYTES, dtype=torch.uint8, device=cuda)

    def flush() -> None:
        flush_buf.zero_()

    # copy bandwidth (read + write)
    src = torch.empty(2**30, dtype=torch.uint8, device=cuda)
    dst = torch.empty_like(src)
    copy_us = gpu.time_us(lambda i: dst.copy_(src), lambda: None, repeat)
    copy_gbs = 2 * src.numel() / copy_us / 1e3
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s", flush=True)
    rows: list[dict] = []
    rng = np.random.default_rng(1)

    def ours(name: str, m: int, copies: int) -> tuple[float, int]:
        spec = kernels[name]
        args, _, w = _inputs(spec, m, rng, want=False)
        dev_args = [gpu.put(a) for a in args]
        weights = [dev_args[2]] if w is not None else [None]
        while w is not None and len(weights) < copies:
            weights.append(gpu.put(w))
        outs = [gpu.empty(shape, dtype) for shape, dtype in _out_specs(spec, m)]
        fn = gpu.lib[name]

        def call(i: int) -> None:
            call_args = list(dev_args)
            if w is not None:
                call_args[2] = weights[i % len(weights)]
            fn(*call_args, *outs)

        return gpu.time_us(call, flush, repeat), _bytes(spec, m, w)

    # decode GEMV, rotating weights
    spec = kernels["gemv_13824x2560"]
    n, k = spec["n"], spec["k"]
    copies = math.ceil(2 * L2_BYTES / (n * k // 4)) + 1
    us, nbytes = ours("gemv_13824x2560", 1, copies)
    w16 = [torch.randn(n, k, dtype=torch.float16, device=cuda) for _ in range(2)]
    x16 = torch.randn(1, k, dtype=torch.float16, device=cuda)
    fp16_us = gpu.time_us(lambda i: x16 @ w16[i % 2].T, flush, repeat)
    rows.append(
        {
            "kernel": "decode gemv 13824x2560 (int4 act, 2-bit w)",
            "us": us,
            "pct_copy_bw": 100 * nbytes / us / 1e3 / copy_gbs,
            "torch_fp16_us": fp16_us,
            "speedup_vs_fp16": fp16_us / us,
            "weight_copies": copies,
        }
    )
    # layer stack: per-kernel cold times x LAYERS
    stack_us, stack_bytes = 0.0, 0
    for name in LAYER:
        us, nbytes = ours(name, 1, 2)
        rows.append(
            {"kernel": f"layer {name}", "us": us, "pct_copy_bw": 100 * nbytes / us / 1e3 / copy_gbs}
        )
        stack_us += LAYERS * us
        stack_bytes += LAYERS * nbytes
    rows.append(
        {
            "kernel": f"layer stack x{LAYERS} (sum of cold kernel times)",
            "us": stack_us,
            "pct_copy_bw": 100 * stack_bytes / stack_us / 1e3 / copy_gbs,
        }
    )
    # prefill
    m = PREFILL_M
    us, _ = ours("gemm_13824x2560", m, 2)
    ops = 2 * m * n * k
    a16 = torch.randn(m, k, dtype=torch.float16, device=cuda)
    b16 = torch.randn(k, n, dtype=torch.float16, device=cuda)
    a8 = torch.randint(-8, 8, (m, k), dtype=torch.int8, device=cuda)
    b8 = torch.randint(-1, 2, (k, n), dtype=torch.int8, device=cuda)
    fp16_us = gpu.time_us(lambda i: a16 @ b16, flush, repeat)
    int_mm_us = gpu.time_us(lambda i: torch._int_mm(a8, b8), flush, repeat)
    rows.append(
        {
            "kernel": f"prefill gemm M={m} 13824x2560 (int8 wmma)",
            "us": us,
            "tops": ops / us / 1e6,
            "torch_fp16_tops": ops / fp16_us / 1e6,
            "torch_int_mm_tops": ops / int_mm_us / 1e6,
            "vs_fp16": fp16_us / us,
            "vs_int_mm": int_mm_us / us,
        }
    )
    return {"copy_gbs": copy_gbs, "rows": rows}


def _plot(rows: list[dict], path: Path, device: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG")
        return
    bw = [r for r in rows if "pct_copy_bw" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.barh([r["kernel"] for r in bw], [r["pct_copy_bw"] for r in bw])
    ax1.axvline(60, color="k", ls="--", lw=0.8)
    ax1.set_xlabel("% of device-to-device copy bandwidth")
    ax1.set_title(f"decode kernels, {device}")
    pre = next(r for r in rows if "tops" in r)
    labels = ["ours (int8 wmma)", "torch fp16", "torch._int_mm"]
    ax2.bar(labels, [pre["tops"], pre["torch_fp16_tops"], pre["torch_int_mm_tops"]])
    ax2.set_ylabel("TOPS")
    ax2.set_title(f"prefill M={PREFILL_M}, 13824x2560")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(build_dir: Path, out_dir: Path, repeat: int) -> int:
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        print("No CUDA GPU (torch with CUDA not available): nothing to benchmark; exiting.")
        return 0
    bench = json.loads((build_dir / "bench.json").read_text())
    device = torch.cuda.get_device_name(0)
    gpu = _Gpu(build_dir, torch)
    print(f"{device} ({gpu.arch}); kernels from {build_dir}", flush=True)
    print("numerics against bitnet_tvm.reference:")
    exact = check(gpu, bench["kernels"])
    results = measure(gpu, bench["kernels"], repeat)
    for row in results["rows"]:
        print(
            "  "
            + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            )
        )
    slug = re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_").lower()
    record = {
        "device": device,
        "arch": gpu.arch,
        "machine": platform.node(),
        "tvm": getattr(gpu.tvm, "__version__", "runtime-only"),
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "exact": exact,
        **results,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"cuda_kernels_{slug}.json"
    path.write_text(json.dumps(record, indent=1))
    _plot(results["rows"], path.with_suffix(".png"), device)
    print(f"wrote {path}")
    return 0 if all(exact.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="schedule, export and nvcc-compile the kernels (here)")
    b.add_argument("--out", type=Path, default=Path("benchmarks/cuda_build"))
    b.add_argument("--arch", action="append", default=None, help="sm_80, sm_90 (repeatable)")
    p = sub.add_parser("pack-runtime", help="runtime-only TVM for the GPU machine (here)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/cuda_build/tvm_runtime"))
    p.add_argument("--python-version", default="3.12")
    r = sub.add_parser("run", help="check and time the kernels (on the GPU machine)")
    r.add_argument("--build", type=Path, default=Path("benchmarks/cuda_build"))
    r.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    r.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    if args.cmd == "build":
        build(args.out, args.arch or ["sm_80", "sm_90"])
        return 0
    if args.cmd == "pack-runtime":
        pack_runtime(args.out, args.python_version)
        return 0
    return run(args.build, args.out, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
