"""AVX-512 VNNI decode kernel of the fused gate/up projection, gate first.

``ternary_int{4,8}_gate_up`` in the plain ``2bit`` layout (``W_gu = [W_gate; W_up]``, one
contiguous packed row per output).  Per activation row ``m``::

    x_pack = x[m] in VNNI lane order (64-code blocks), x_sum = sum of the 64-aligned head
    parallel for task (``rows`` gate rows each):
      for n in the task's rows:                                   # prefetch gate row n + 4
        g[n] = dot(W_gate[n], x) * x_scale[m] * alpha[n]          # one linear 2-bit stream
      for n in the task's rows:                                   # prefetch the next two up
        acc_u = dot(W_up[n], x) if g[n] > 0 else 0                # rows that will be read
        h[m, n] = (max(g, 0) * max(g, 0)) * (float32(acc_u) * x_scale[m] * alpha[I + n])

Each row dot decodes 16 packed bytes per ``vpdpbusd`` (:func:`~bitnet_tvm.schedules.cpu.
intrin_x86.decode_2bit_x64`) into ``chains`` independent accumulators (consecutive 64-code
blocks), so one row at a time keeps the ``vpdpbusd`` pipe busy and a skipped up row is a whole
skipped stretch of memory (with interleaved rows it would not be).  ``sum(x)`` is subtracted
once per row, the ``K % 64`` tail is summed directly.  The expressions and their order are the
operator's (:mod:`~bitnet_tvm.schedules.operators.gate_up`), so ``h`` equals the reference
bit for bit (a skipped row gives +0.0 where the reference may give -0.0).

Measured (noisy, shared machine): ~7x the generic GEMV, but cold still ~1.2x slower than the
dense ``2bit_vnni`` kernel over all 2I rows: row-at-a-time streams prefetch worse than the
16-row interleaved tile (a gate tile in ``2bit_vnni`` plus plain up rows would fix it).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.script import tirx as T
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule
from bitnet_tvm.schedules.cpu.intrin_x86 import decode_2bit_x64, vpdpbusd
from bitnet_tvm.schedules.layouts import WeightLayout, packed_shape
from bitnet_tvm.schedules.operators.common import ternary_code
from bitnet_tvm.schedules.target import has_avx512_vnni

__all__ = ["VnniGateUp", "VnniGateUpKnobs", "vnni_gate_up"]

_BLOCK = 64
_GATE_UP = (attrs.OpName.TERNARY_INT4_GATE_UP, attrs.OpName.TERNARY_INT8_GATE_UP)


@dataclass(frozen=True)
class VnniGateUpKnobs:
    """Tunable choices of :class:`VnniGateUp`.

    Attributes
    ----------
    rows : int
        Gate rows per parallel task (64 beat 4, 16 and 16 x 8 chains on Zen 4, noisy).
    chains : int
        Independent ``vpdpbusd`` accumulators per row (consecutive 64-code blocks).
    max_m : int
        Largest ``bitnet.m_hint`` taken (the kernel re-reads the weights for every row of x).
    """

    rows: int = 64
    chains: int = 4
    max_m: int = 8

    def __post_init__(self) -> None:
        for name in ("rows", "chains", "max_m"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VnniGateUpKnobs.{name} must be a positive int, got {value!r}")


def vnni_gate_up(i: int, k: int, rows: int, chains: int) -> tirx.PrimFunc:
    """The VNNI kernel of ``ternary_gate_up(i, k, layout="2bit")`` (same signature, ``k >= 64``)."""
    if k < _BLOCK:
        raise ValueError(f"k must be at least {_BLOCK} for the VNNI gate/up, got {k}")
    i64 = T.int64
    I_, K_ = i64(i), i64(k)
    n_blocks = k // _BLOCK
    K0, tail = n_blocks * _BLOCK, k - n_blocks * _BLOCK
    rounds, rest = divmod(n_blocks, chains)
    w_rows, w_cols = packed_shape(2 * i, k, WeightLayout.TWO_BIT)
    tasks = -(-i // rows)
    lines = -(-w_cols // 64)  # cache lines per packed row
    ahead = 4  # gate rows prefetched ahead

    def block_dot(acc, w, x_pack, n, block, c):
        piece = decode_2bit_x64(w.vload([n, block * i64(16)], "uint8x16"))
        lanes = T.Ramp(c * 16, 1, 16)
        return vpdpbusd(acc[lanes], piece, x_pack.vload([block * i64(64)], "int8x64"))

    def lane_sum(acc):
        vec = acc[T.Ramp(0, 1, 16)]
        for c in range(1, chains):
            vec = vec + acc[T.Ramp(16 * c, 1, 16)]
        return T.call_llvm_pure_intrin("int32", "llvm.vector.reduce.add.v16i32", vec)

    @T.macro
    def prefetch(w, n, line):
        T.evaluate(
            T.call_llvm_intrin(
                "void",
                "llvm.prefetch.p0",
                T.address_of(w[n, T.Cast("int64", line) * i64(64)]),
                T.int32(0),
                T.int32(3),
                T.int32(1),
            )
        )

    @T.macro
    def row_dot(acc, total, w, x_pack, x_q, m, n, x_sum):
        for lane in T.vectorized(chains * 16):
            acc[lane] = 0
        for rnd in range(rounds):
            for c in T.unroll(chains):
                acc[T.Ramp(c * 16, 1, 16)] = block_dot(
                    acc, w, x_pack, n, rnd * i64(chains) + T.Cast("int64", c), c
                )
        for r in range(rest):
            acc[T.Ramp(0, 1, 16)] = block_dot(
                acc, w, x_pack, n, i64(rounds * chains) + T.Cast("int64", r), 0
            )
        total[0] = lane_sum(acc) - x_sum
        for kk in range(tail):
            total[0] = total[0] + T.Cast("int32", x_q[m, i64(K0) + kk]) * (
                ternary_code(w, WeightLayout.TWO_BIT, n, i64(K0) + kk) - 1
            )

    @T.prim_func
    def func(
        var_x_q: T.handle,
        var_x_scale: T.handle,
        w: T.Buffer((i64(w_rows), i64(w_cols)), "uint8"),
        alpha: T.Buffer((i64(2 * i),), "float32"),
        var_h: T.handle,
    ):
        T.func_attr({"tirx.noalias": True})
        M = T.int64()
        x_q = T.match_buffer(var_x_q, (M, K_), "int8")
        x_scale = T.match_buffer(var_x_scale, (M, i64(1)), "float32")
        h = T.match_buffer(var_h, (M, I_), "float32")
        x_pack = T.decl_buffer((i64(K0),), "int8")
        x_sum = T.decl_buffer((1,), "int32", scope="local")
        for m in range(M):
            x_sum[0] = 0
            for kk in range(i64(K0)):
                x_sum[0] = x_sum[0] + T.Cast("int32", x_q[m, kk])
            for blk in range(i64(n_blocks)):
                for p in T.vectorized(64):
                    x_pack[blk * i64(64) + p] = x_q[m, blk * i64(64) + i64(p % 16 * 4 + p // 16)]
            for task in T.parallel(i64(tasks)):
                acc = T.decl_buffer((chains * 16,), "int32", scope="local")
                total = T.decl_buffer((1,), "int32", scope="local")
                g = T.decl_buffer((rows,), "float32", scope="local")
                nxt = T.decl_buffer((rows + 1,), "int32", scope="local")
                for r in range(rows):  # gate rows: one linear stream
                    for line in range(lines):
                        prefetch(w, T.min(task * i64(rows) + i64(r + ahead), I_ - i64(1)), line)
                    g[r] = T.float32(0)
                    if task * i64(rows) + i64(r) < I_:
                        n = task * i64(rows) + i64(r)
                        row_dot(acc, total, w, x_pack, x_q, m, n, x_sum[0])
                        g[r] = T.Cast("float32", total[0]) * x_scale[m, i64(0)] * alpha[n]
                nxt[rows] = rows  # nxt[r]: the first row >= r whose up row is read
                for rr in range(rows):
                    nxt[rows - 1 - rr] = T.Select(
                        g[rows - 1 - rr] > T.float32(0), rows - 1 - rr, nxt[rows - rr]
                    )
                for line in range(lines):  # the first two up rows read
                    prefetch(w, task * i64(rows) + i64(T.min(nxt[0], rows - 1)) + I_, line)
                    prefetch(
                        w,
                        task * i64(rows) + i64(T.min(nxt[T.min(nxt[0] + 1, rows)], rows - 1)) + I_,
                        line,
                    )
                for r in range(rows):
                    if task * i64(rows) + i64(r) < I_:
                        n = task * i64(rows) + i64(r)
                        total[0] = 0
                        if g[r] > T.float32(0):
                            for line in range(lines):  # two needed up rows ahead
                                prefetch(
                                    w,
                                    T.min(
                                        task * i64(rows)
                                        + i64(nxt[T.min(nxt[T.min(r + 1, rows)] + 1, rows)]),
                                        I_ - i64(1),
                                    )
                                    + I_,
                                    line,
                                )
                            row_dot(acc, total, w, x_pack, x_q, m, n + I_, x_sum[0])
                        h[m, n] = (T.max(g[r], T.float32(0)) * T.max(g[r], T.float32(0))) * (
                            T.Cast("float32", total[0]) * x_scale[m, i64(0)] * alpha[n + I_]
                        )

    return func


class VnniGateUp(BitnetCPURule):
    """Decode ``ternary_int{4,8}_gate_up`` in the ``2bit`` layout on AVX-512 VNNI CPUs.

    Declines other layouts, ``K < 64``, ``bitnet.m_hint > max_m`` (prefill: the generic GEMM
    takes it), targets without ``avx512vnni`` (the generic GEMV takes those) and every other
    PrimFunc.
    """

    ops = _GATE_UP
    Knobs = VnniGateUpKnobs
    structural_knobs = ("rows", "chains", "max_m")

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """A decode gate/up in the ``2bit`` layout with ``K >= 64``, for a VNNI target."""
        if not self.matches(func, target) or not has_avx512_vnni(target):
            return False
        m_hint = attrs.get_int(func, attrs.M_HINT)
        return (
            str(func.attrs[attrs.LAYOUT]) == WeightLayout.TWO_BIT.value
            and attrs.get_int(func, attrs.K) >= _BLOCK
            and (m_hint is None or m_hint <= self.knobs.max_m)
        )

    def prepare(self, func: tirx.PrimFunc, knobs: VnniGateUpKnobs) -> tirx.PrimFunc:
        """The gate-first kernel for ``func`` (same signature and attributes)."""
        i, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
        kernel = vnni_gate_up(i, k, knobs.rows, knobs.chains)
        return kernel.with_attrs({**dict(func.attrs), "tirx.noalias": True})

    def schedule(self, sch: s_tir.Schedule, knobs: VnniGateUpKnobs) -> None:
        """Nothing left to schedule: :meth:`prepare` builds the loop nest."""

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Rows per task and accumulator chains per row."""
        return {"rows": (64, 16, 32, 128), "chains": (4, 2, 8), "max_m": (8,)}
