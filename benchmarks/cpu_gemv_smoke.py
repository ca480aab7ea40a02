"""Smoke micro-benchmark of the CPU decode GEMV (M = 1), not a test.

Prints microseconds and GB/s of packed weight bytes for the scheduled ternary matmul and, in the
same run, NumPy's float32 matmul of the same shape (the baseline: these machines are noisy).

    python benchmarks/cpu_gemv_smoke.py [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tvm

from bitnet_tvm.schedules.cpu import cpu_rules
from bitnet_tvm.schedules.layouts import WeightLayout, pack_weight
from bitnet_tvm.schedules.operators import sparse_int8_matmul, ternary_gate_up, ternary_matmul
from bitnet_tvm.schedules.target import host_target

SHAPES = [(2560, 2560), (13824, 2560), (2560, 6912)]


def _schedule(func, target):
    mod = tvm.IRModule({"main": func})
    with target:
        from tvm.s_tir.dlight import ApplyDefaultSchedule

        return ApplyDefaultSchedule(*cpu_rules())(mod)


def time_tvm(func, args, target, repeat: int = 200) -> float:
    """Median µs of one call of ``func`` scheduled by the CPU rules."""
    ex = tvm.compile(_schedule(func, target), target=target)
    tensors = [tvm.runtime.tensor(a) for a in args]
    timer = ex.mod.time_evaluator("main", tvm.cpu(), number=repeat, repeat=5)
    return float(np.median(timer(*tensors).results)) * 1e6


def time_numpy(w: np.ndarray, x: np.ndarray, repeat: int = 200) -> float:
    """Median µs of ``x @ w.T`` in float32."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            x @ w.T
        runs.append((time.perf_counter() - start) / repeat)
    return float(np.median(runs)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    target = host_target(args.threads)
    rng = np.random.default_rng(0)
    print(f"target: {target}")
    print(f"{'kernel':<28}{'N x K':>14}{'µs':>10}{'GB/s':>8}{'numpy fp32 µs':>16}{'speedup':>9}")
    for n, k in SHAPES:
        q_w = rng.integers(-1, 2, (n, k)).astype(np.int8)
        x_q = rng.integers(-8, 8, (1, k)).astype(np.int8)
        x_s = np.full((1, 1), 0.01, np.float32)
        alpha = np.full(n, 0.5, np.float32)
        base = time_numpy(q_w.astype(np.float32), x_q.astype(np.float32))
        y = np.zeros((1, n), np.float32)
        cases = [
            ("ternary_int4_matmul 2bit", WeightLayout.TWO_BIT, ternary_matmul(n, k, act_bits=4))
        ]
        if n % 2 == 0:
            gate = ternary_gate_up(n // 2, k, act_bits=4)
            cases.append(("ternary_gate_up 2bit", WeightLayout.TWO_BIT, gate))
        sparse_x = x_q.copy()
        sparse_x[rng.random(sparse_x.shape) < 0.8] = 0
        cases.append(("sparse_int8 (80% 0) kmajor", WeightLayout.TWO_BIT_KMAJOR, None))
        for name, layout, func in cases:
            w = pack_weight(q_w, layout)
            if func is None:
                func, xin = sparse_int8_matmul(n, k), sparse_x
            else:
                xin = x_q
            out = y if "gate" not in name else np.zeros((1, n // 2), np.float32)
            us = time_tvm(func, [xin, x_s, w, alpha, out], target)
            gbs = w.nbytes / us / 1e3
            print(f"{name:<28}{f'{n}x{k}':>14}{us:>10.1f}{gbs:>8.2f}{base:>16.1f}{base / us:>9.2f}")


if __name__ == "__main__":
    main()
