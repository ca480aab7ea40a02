"""How a kernel is measured while tuning: its arguments (sparse activations) and cold runs.

MetaSchedule's runners fill every argument with random values.  That is right for the dense
kernels, whose time does not depend on the values, and wrong for ``sparse_int8_matmul``: its
kernels skip the weight rows of zero activations, and a uniformly random int8 row has almost
none (1 in 256), so every candidate would be timed -- and picked -- as a dense GEMV.  Its
activation argument (``x_q``, int8 ``[M, K]``, the first parameter) is therefore replaced by
:func:`sparse_activations`: ``round(zeros K)`` zeros per row at seeded random places, with
``zeros`` = :data:`SPARSE_ZEROS`.  The roofline (:mod:`~.roof`) counts the bytes and
multiply-adds of exactly that pattern (:func:`sparse_work`).

:data:`SPARSE_ZEROS` is the smallest share of zeros the a4.8 spec gives a sparse input (the
o_proj's TopK 50 %; the down projection's ReLU² input has >= 80 %, paper Table 2), so a down
kernel is timed denser, i.e. slower, than it runs in a model.

A cold measurement (decode kernels: a model's weights stream from DRAM, while one kernel's
weights measured alone stay in the last-level cache) allocates copies of the arguments, at
least :data:`COLD_BYTES` in all, and times back-to-back calls cycling through them
(:func:`run_rotating`).  MetaSchedule's own way, flushing the caches before each timed call,
also lets the thread pool fall asleep between calls: a 2-thread 100 µs GEMV then measured
1.5-3x slower, and differently from run to run.
"""

from __future__ import annotations

import functools
import math
import statistics
import time

import numpy as np

from bitnet_tvm.schedules import attrs

__all__ = [
    "COLD_BYTES",
    "MAX_COPIES",
    "SPARSE_ZEROS",
    "activation_zeros",
    "alloc_local",
    "alloc_rpc",
    "run_rotating",
    "sparse_activations",
    "sparse_work",
]

#: Share of zeros in each row of a sparse operator's activations while it is measured.
SPARSE_ZEROS = 0.5
#: Bytes of argument copies a cold measurement cycles through (4x a 32 MiB last-level cache).
COLD_BYTES = 128 << 20
#: Most copies (a kernel with tiny arguments is not made cold by a million of them).
MAX_COPIES = 256
_SEED = 0


def activation_zeros(op: str | None) -> float | None:
    """Share of zero activations the operator ``op`` is measured with; None: random values."""
    return SPARSE_ZEROS if op == attrs.OpName.SPARSE_INT8_MATMUL.value else None


@functools.lru_cache(maxsize=8)
def sparse_activations(m: int, k: int, zeros: float) -> np.ndarray:
    """int8 ``[m, k]``: per row ``round(zeros k)`` zeros at seeded random places, the rest
    uniform non-zero values in [-127, 127] (read-only; the same array for the same call)."""
    if not 0.0 <= zeros < 1.0:
        raise ValueError(f"zeros must be in [0, 1), got {zeros!r}")
    rng = np.random.default_rng(_SEED)
    values = rng.integers(1, 128, (m, k)) * rng.choice(np.array([-1, 1]), (m, k))
    places = np.argsort(rng.random((m, k)), axis=1)[:, : round(zeros * k)]
    np.put_along_axis(values, places, 0, axis=1)
    out = values.astype(np.int8)
    out.flags.writeable = False
    return out


def sparse_work(m: int, k: int, zeros: float) -> tuple[int, int]:
    """``(rows, nonzeros)`` of :func:`sparse_activations`: the K indices with a non-zero in
    some row (the weight rows a kernel must read) and the non-zero activations (each one a
    multiply-add per output)."""
    x = sparse_activations(m, k, zeros)
    return int(np.count_nonzero(x.any(axis=0))), int(np.count_nonzero(x))


def _sparsify(args: list, zeros: float) -> list:
    """``args`` with the first (int8 ``[M, K]``) overwritten by :func:`sparse_activations`."""
    x = args[0]
    if str(x.dtype) == "int8" and len(x.shape) == 2:
        x.copyfrom(sparse_activations(int(x.shape[0]), int(x.shape[1]), zeros))
    return args


def _nbytes(args_info) -> int:
    """Bytes of one set of arguments (``ArgInfo`` JSON: ``["TENSOR", dtype, shape]``)."""
    total = 0
    for info in args_info:
        if info[0] == "TENSOR":
            bits = np.dtype(str(info[1])).itemsize * 8 if str(info[1]) != "bool" else 8
            total += math.prod(int(d) for d in info[2]) * bits // 8
    return total


def alloc_local(
    device, args_info, alloc_repeat: int, *, zeros: float | None = None, cold_bytes: int = 0
) -> list:
    """``LocalRunner`` ``f_alloc_argument``: the default random arguments, activations sparse
    (``zeros`` not None), and as many copies as ``cold_bytes`` needs, up to :data:`MAX_COPIES`
    (:func:`run_rotating`)."""
    from tvm.s_tir.meta_schedule.runner.local_runner import default_alloc_argument

    copies = min(MAX_COPIES, math.ceil(cold_bytes / max(_nbytes(args_info), 1)))
    copies = max(alloc_repeat, copies)
    repeated = default_alloc_argument(device, args_info, copies)
    return [_sparsify(args, zeros) for args in repeated] if zeros is not None else repeated


def run_rotating(rt_mod, device, evaluator_config, repeated_args: list) -> list[float]:
    """``LocalRunner`` ``f_run_evaluator`` of a cold measurement: a warm-up pass over the
    argument copies (page faults), then ``evaluator_config.repeat`` rounds of back-to-back
    calls cycling through them; per round the median seconds of a call."""
    func = rt_mod[rt_mod.entry_name]
    for args in repeated_args:
        func(*args)
    device.sync()
    rounds = []
    for _ in range(evaluator_config.repeat):
        times = []
        for args in repeated_args:
            start = time.perf_counter()
            func(*args)
            device.sync()
            times.append(time.perf_counter() - start)
        rounds.append(statistics.median(times))
    return rounds


def alloc_rpc(session, device, args_info, alloc_repeat: int, *, zeros: float) -> list:
    """``RPCRunner`` ``f_alloc_argument``: as :func:`alloc_local`, on the remote device."""
    from tvm.s_tir.meta_schedule.runner.rpc_runner import default_alloc_argument

    repeated = default_alloc_argument(session, device, args_info, alloc_repeat)
    return [_sparsify(args, zeros) for args in repeated]
