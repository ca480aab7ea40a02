"""How close a tuned kernel comes to the machine's roofline, and whether it meets the goal.

A kernel instance moves at least ``bytes`` (every parameter read or written once: weights,
activations, scales, output) and, for the matmuls, does ``ops = 2 M N K`` int8 operations
(``2 M 2N K`` for the fused gate/up).  Its roofline time is the larger of ``bytes /
read_bandwidth`` and ``ops / peak_int8_ops`` (the roofs of :mod:`bitnet_tvm.bench.roofline`,
measured with the target's threads): memory-bound (``dram``) for decode, compute-bound
(``int8``) for long prefill.  ``% of roofline`` is that time over the measured one.

A sparse matmul is measured with sparse activations (:mod:`~.inputs`), and its work is what
those need: the weight rows of the K indices some token uses, and ``2 N`` ops per non-zero
activation.  MetaSchedule times repeated calls on the same buffers, so
weights smaller than the last-level cache come from cache: ``dram``-bound kernels are judged
by a cold time (``cold_us``: calls cycling through copies of the arguments, see :mod:`~.inputs`).

The goal of the tuning issue: tuned >= 1.1x the default schedule, or >= 90 % of the roofline
(DRAM bandwidth for decode, peak int8 throughput for prefill).  The LUT kernels pass the int8
roof by design -- one ``vpermb`` does 128 ternary multiply-adds where a ``vpdpbusd`` does 64 --
and meet the goal there; a roof passed by more than :data:`MAX_PCT` is flagged in the report.
"""

from __future__ import annotations

import math

import tvm

from bitnet_tvm.schedules import attrs
from bitnet_tvm.tuning.inputs import sparse_work

__all__ = ["GOAL_PCT", "GOAL_SPEEDUP", "MAX_PCT", "judge", "kernel_cost"]

GOAL_SPEEDUP = 1.1
GOAL_PCT = 90.0
#: Above this % a kernel is faster than the roof (flagged in the report; see the module doc).
MAX_PCT = 110.0


def kernel_cost(mod: tvm.IRModule, zeros: float | None = None) -> tuple[int, int | None]:
    """``(bytes, ops)`` of the instance ``mod["main"]`` (M concrete); ops None if not a matmul.

    ``zeros``: the share of zero activations it is measured with (a sparse matmul, see
    :mod:`~.inputs`): only the weight rows (uint8 parameters, ``[K, ...]`` K-major) of used K
    indices are counted, and ``2 N`` ops per non-zero activation.
    """
    func = mod["main"]
    op = str(attrs.get_op(func) or "")
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    m = int(func.params[0].shape[0]) if func.params and hasattr(func.params[0], "shape") else 1
    rows, nonzeros = sparse_work(m, k, zeros) if zeros is not None and k else (k, None)
    nbytes = 0
    for param in func.params:
        shape = getattr(param, "shape", None)
        if shape is None:
            continue
        size = math.prod(int(d) for d in shape) * tvm.runtime.DataType(str(param.dtype)).bits // 8
        if nonzeros is not None and str(param.dtype) == "uint8":  # rows of used K only
            size = size * rows // k
        nbytes += size
    if ("matmul" not in op and "gate_up" not in op) or n is None or k is None:
        return nbytes, None
    if nonzeros is not None:
        return nbytes, 2 * n * nonzeros
    return nbytes, 2 * m * n * k * (2 if "gate_up" in op else 1)


def judge(
    tuned_us: float | None,
    speedup: float | None,
    nbytes: int | None,
    ops: int | None,
    roofs: dict | None,
) -> dict:
    """``{"roofline_pct", "bound", "meets"}`` of one kernel (None where not measurable)."""
    out: dict = {"roofline_pct": None, "bound": None, "meets": None}
    if tuned_us is None or not tuned_us > 0:
        return out
    times = {}
    if roofs and nbytes and roofs.get("read_gbs", 0) > 0:
        times["dram"] = nbytes / (roofs["read_gbs"] * 1e9)
    if roofs and ops and roofs.get("int8_ops", 0) > 0:  # NaN > 0 is False
        times["int8"] = ops / roofs["int8_ops"]
    if times:
        bound = max(times, key=times.get)
        out["bound"] = bound
        out["roofline_pct"] = 100 * times[bound] / (tuned_us * 1e-6)
    pct = out["roofline_pct"]
    out["meets"] = bool(
        (speedup is not None and speedup >= GOAL_SPEEDUP) or (pct is not None and pct >= GOAL_PCT)
    )
    return out
