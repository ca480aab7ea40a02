"""How close a tuned kernel comes to the machine's roofline, and whether it meets the goal.

A kernel instance moves at least ``bytes`` (every parameter read or written once: weights,
activations, scales, output) and, for the matmuls, does ``ops = 2 M N K`` int8 operations
(``2 M 2N K`` for the fused gate/up).  Its roofline time is the larger of ``bytes /
read_bandwidth`` and ``ops / peak_int8_ops`` (the roofs of :mod:`bitnet_tvm.bench.roofline`):
memory-bound (``dram``) for decode, compute-bound (``int8``) for long prefill.  ``% of roofline``
is that time over the measured one.

The goal of the tuning issue: tuned >= 1.1x the default schedule, or >= 90 % of the roofline.
MetaSchedule times repeated calls on the same buffers (no cache flush), so weights smaller than
the last-level cache come from cache: the tuner times ``dram``-bound kernels again with the
caches flushed (``cold_us``) and judges those.  A kernel that beats its roof by more than
:data:`MAX_PCT` (noise aside) is not bound by it -- the LUT kernels replace int8 multiply-adds
by table lookups, the sparse GEMV skips the weights of zero activations -- so its roofline % is
reported but only its speedup can meet the goal.
"""

from __future__ import annotations

import math

import tvm

from bitnet_tvm.schedules import attrs

__all__ = ["GOAL_PCT", "GOAL_SPEEDUP", "judge", "kernel_cost"]

GOAL_SPEEDUP = 1.1
GOAL_PCT = 90.0
#: A roof passed by more than measurement noise does not bound the kernel (see module doc).
MAX_PCT = 110.0


def kernel_cost(mod: tvm.IRModule) -> tuple[int, int | None]:
    """``(bytes, ops)`` of the instance ``mod["main"]`` (M concrete); ops None if not a matmul."""
    func = mod["main"]
    nbytes = 0
    for param in func.params:
        shape = getattr(param, "shape", None)
        if shape is None:
            continue
        bits = tvm.runtime.DataType(str(param.dtype)).bits
        nbytes += math.prod(int(d) for d in shape) * bits // 8
    op = str(attrs.get_op(func) or "")
    n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    if ("matmul" not in op and "gate_up" not in op) or n is None or k is None:
        return nbytes, None
    m = int(func.params[0].shape[0])
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
        (speedup is not None and speedup >= GOAL_SPEEDUP)
        or (pct is not None and GOAL_PCT <= pct <= MAX_PCT)
    )
    return out
