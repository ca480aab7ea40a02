"""The roofs kernels are measured against: DRAM read bandwidth and peak int8 dot throughput.

* :func:`read_bandwidth` -- STREAM-like: a TVM kernel that sums ``mib`` MiB of int32 (default
  512, far beyond any cache) in parallel chunks of eight sequential streams, 512-bit loads
  into one vector accumulator per stream (eight independent chains in registers).  Best of
  ``repeat`` runs, GB/s (1e9 B/s).  A decode GEMV streams its weights once, so weight bytes /
  time over this is its % of roof.
* :func:`peak_int8_ops` -- AVX-512 VNNI: a TVM kernel that chains ``vpdpbusd`` (64 uint8 x
  int8 multiply-adds into 16 int32) on register-resident operands, eight independent
  accumulators per thread held in registers; ops/s with a multiply-add counted as 2 ops
  (as GOPS of a GEMM ``2 M N K / t``).  On a CPU without VNNI it raises :class:`RuntimeError`.

Both use TVM's thread pool with ``threads`` workers (default: every CPU this process may
use) and restore the pool size of ``TVM_NUM_THREADS`` afterwards.  Results are cached per
process (:func:`roofs`).  On a shared machine they are a lower bound: take them on a quiet one.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import tvm
from tvm.script import tirx as T

from bitnet_tvm.schedules.target import host_target

__all__ = ["peak_int8_ops", "read_bandwidth", "roofs"]

#: Per parallel chunk: independent sequential streams (the hardware prefetchers follow each
#: one, so a core keeps many more cache-line misses in flight than with one stream), int32
#: steps per stream and lanes per step (one 512-bit load into one accumulator register).
#: Measured on Zen 4 (2 cores): 1 stream of 128 lanes read 17 / 32 GB/s (1 / 2 threads),
#: 8 streams of 16 lanes 35 / 48 GB/s.
_STREAMS, _STEPS, _LANES = 8, 4096, 16
_CHUNK = _STREAMS * _STEPS * _LANES


def _threads(threads: int | None) -> int:
    if threads is None:
        return len(os.sched_getaffinity(0))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    return threads


def _set_pool(threads: int | None) -> None:
    default = int(os.environ.get("TVM_NUM_THREADS", "0") or 0)
    tvm.get_global_func("runtime.config_threadpool")(0, threads or default)


def _time(executable, *args, threads: int, repeat: int) -> float:
    """Best seconds per call of ``main`` over ``repeat`` runs with ``threads`` workers."""
    _set_pool(threads)
    try:
        timer = executable.mod.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat)
        timer(*args)  # warm-up: page faults, thread start
        return min(timer(*args).results)
    finally:
        _set_pool(None)


def _sum_kernel(chunks: int) -> tvm.IRModule:
    @T.prim_func(s_tir=True)
    def read_sum(
        a: T.Buffer((chunks, _STREAMS, _STEPS, _LANES), "int32"),
        out: T.Buffer((chunks, _STREAMS, _LANES), "int32"),
    ):
        for c in T.parallel(chunks):
            with T.sblock("chunk"):
                vc = T.axis.spatial(chunks, c)
                acc = T.sblock_alloc_buffer((_STREAMS, _LANES), "int32", scope="local")
                for st in T.unroll(_STREAMS):
                    for lane in T.vectorized(_LANES):
                        acc[st, lane] = 0
                for step in range(_STEPS):
                    for st in T.unroll(_STREAMS):
                        for lane in T.vectorized(_LANES):
                            acc[st, lane] = acc[st, lane] + a[vc, st, step, lane]
                for st in T.unroll(_STREAMS):
                    for lane in T.vectorized(_LANES):
                        out[vc, st, lane] = acc[st, lane]

    return tvm.IRModule({"main": read_sum})


def read_bandwidth(threads: int | None = None, mib: int = 512, repeat: int = 10) -> float:
    """DRAM read bandwidth in GB/s (1e9 B/s) with ``threads`` workers (see module doc).

    Parameters
    ----------
    threads : int, optional
        TVM worker threads (default: every CPU available to this process).
    mib : int
        MiB read per run (>= 64; keep it well above the last-level cache).
    repeat : int
        Runs; the fastest counts.
    """
    threads = _threads(threads)
    if isinstance(mib, bool) or not isinstance(mib, int) or mib < 64:
        raise ValueError(f"mib must be an int >= 64, got {mib!r}")
    chunks = (mib << 20) // (4 * _CHUNK)
    executable = tvm.compile(_sum_kernel(chunks), target=host_target(threads))
    # random bytes: no two pages alike (a hypervisor may merge identical pages, and then
    # the "DRAM" reads come from cache); small values: the int32 sums cannot overflow
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (chunks, _STREAMS, _STEPS, _LANES), dtype=np.int32)
    a = tvm.runtime.tensor(data)
    out = tvm.runtime.tensor(np.zeros((chunks, _STREAMS, _LANES), np.int32))
    secs = _time(executable, a, out, threads=threads, repeat=repeat)
    if not np.array_equal(out.numpy(), data.sum(axis=2, dtype=np.int32)):  # read everything
        raise RuntimeError("read_bandwidth: the probe kernel computed a wrong sum")
    return data.nbytes / secs / 1e9


#: Independent vpdpbusd chains per thread, iterations of the loop over them, and dependent
#: ``vpdpbusd`` per chain and iteration.  The chain is one nested expression, so LLVM keeps
#: each accumulator in a register: a loop body of one ``vpdpbusd`` per accumulator stored
#: it back to memory every time (TVM cannot prove the output does not alias the operands)
#: and measured the store port, 330 GOPS per Zen 4 core instead of ~740.
_CHAINS, _DOTS, _NEST = 8, 1 << 13, 16


def _nested_dots(acc, u, s):
    """``_NEST`` dependent ``vpdpbusd`` of ``u . s`` into ``acc`` (one TIR expression)."""
    from bitnet_tvm.schedules.cpu.intrin_x86 import vpdpbusd

    for _ in range(_NEST):
        acc = vpdpbusd(acc, u, s)
    return acc


def _vnni_kernel(threads: int) -> tvm.IRModule:
    @T.prim_func(s_tir=True)
    def dots(
        u: T.Buffer((_CHAINS, 64), "uint8"),
        s: T.Buffer((_CHAINS, 64), "int8"),
        out: T.Buffer((threads, _CHAINS, 16), "int32"),
    ):
        for t in T.parallel(threads):
            for c in T.unroll(_CHAINS):
                out[t, c, T.Ramp(0, 1, 16)] = T.Broadcast(0, 16)
            for _i in range(_DOTS):
                for c in T.unroll(_CHAINS):
                    out[t, c, T.Ramp(0, 1, 16)] = _nested_dots(
                        out[t, c, T.Ramp(0, 1, 16)], u[c, T.Ramp(0, 1, 64)], s[c, T.Ramp(0, 1, 64)]
                    )

    return tvm.IRModule({"main": dots})


def peak_int8_ops(threads: int | None = None, repeat: int = 10) -> float:
    """Peak int8 multiply-add throughput in ops/s (2 per multiply-add) with ``vpdpbusd``."""
    threads = _threads(threads)
    if not _has_vnni():
        raise RuntimeError("peak_int8_ops: this CPU has no AVX-512 VNNI (vpdpbusd)")
    executable = tvm.compile(_vnni_kernel(threads), target=host_target(threads))
    rng = np.random.default_rng(0)
    u = rng.integers(0, 4, (_CHAINS, 64)).astype(np.uint8)
    s = rng.integers(-2, 3, (_CHAINS, 64)).astype(np.int8)
    out = tvm.runtime.tensor(np.zeros((threads, _CHAINS, 16), np.int32))
    args = (tvm.runtime.tensor(u), tvm.runtime.tensor(s), out)
    secs = _time(executable, *args, threads=threads, repeat=repeat)
    want = _DOTS * _NEST * (u.astype(np.int32) * s).reshape(_CHAINS, 16, 4).sum(-1)
    if not np.array_equal(out.numpy()[0], want):
        raise RuntimeError("peak_int8_ops: the probe kernel computed wrong dot products")
    return threads * _DOTS * _NEST * _CHAINS * 64 * 2 / secs


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_vnni" in f.read()
    except OSError:
        return False


@functools.cache
def roofs(threads: int | None = None) -> dict[str, float]:
    """``{"read_gbs": ..., "int8_ops": ...}`` for ``threads`` (measured once per process;
    ``int8_ops`` is NaN on a CPU without VNNI)."""
    try:
        ops = peak_int8_ops(threads)
    except RuntimeError:
        ops = float("nan")
    return {"read_gbs": read_bandwidth(threads), "int8_ops": ops}
