"""Decode (small M) CUDA schedule of the dense ternary matmul and the fused gate/up.

One thread block computes ``rows`` outputs ``(m, n)`` (``threadIdx.y``); the ``threads`` lanes
of a warp (``threadIdx.x``) split the K reduction of one output and combine their partial sums
with a warp-shuffle reduction (``rfactor`` + a reduction loop bound to ``threadIdx.x``, lowered
by TVM's cross-thread allreduce).  ``blockIdx.x`` runs over ``M * N / rows``::

    for bx in blockIdx.x, ty in threadIdx.y:          # one output (m, n)
      for tx in threadIdx.x:                          # partial sum of lane tx
        acc_rf = 0
        for ko:                                       # K / (threads * vec) steps
          x_loc[0:vec]  = x_q[m, k..k+vec]            # one 128-bit load (vec = 16)
          w_loc[0:vec/4] = w[n, k/4..]                # one 32-bit load of packed codes
          w_dec[0:vec]  = ((int32(w_loc) >> 2j) & 3) - 1   # decode in int32 registers
          for kb (unrolled): acc_rf = __dp4a(x_loc[4kb:], w_dec[4kb:], acc_rf)
      acc = warp_sum(acc_rf); y[m, n] = float32(acc) * x_scale[m] * alpha[n]

This ``dp4a`` path is taken for the ``2bit`` layout when ``vec`` divides K; K is then split
into ``threads`` lanes with ``threads`` the largest power of two dividing ``K / vec`` (no tail
predicate).  Otherwise (base-3 weights, ``K % vec != 0``) the ``generic`` path inlines the
decode into the reduction; its lanes (the largest power of two up to ``threads`` dividing K)
read consecutive K (coalesced) and multiply-add in int32.  K is never split with a tail: TVM
0.27's ``compute_at`` regenerates the loops of a moved rfactor block without the split's
``K`` predicate, which would read past the row (found by the CPU check of this schedule).
Both paths compute the operator's own int32 sums (integers, so the order of the warp
reduction does not matter) and the reference epilogue, so results are bit-identical to
:func:`bitnet_tvm.reference.ternary_matmul`.

Gate/up: the gate row is reduced (dp4a path), scaled to ``g``, then the up row (generic path,
decode inlined) whose products are ``(g > 0) ? x * w : 0``; ``g`` is uniform across the lanes of
a row, so the weight bytes of the up rows with ``relu(g) == 0`` are loaded under a warp-uniform
condition (not through a vector cache, which would load them unconditionally).

Knobs are a dataclass with defaults chosen by reasoning about sm_80/sm_90 (not yet measured: no
GPU has run these kernels).  Any M is correct (``blockIdx.x`` covers M); dense matmuls with a
``bitnet.m_hint`` of at least 64 go to the tensor-core GEMM (:mod:`.gemm`, tried first), and
2-bit gate/up ones to :mod:`.gemm_gate_up`; hinted base-3 operators still run here, re-reading
the weights once per token.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cuda.common import (
    DENSE,
    GATE_UP,
    BitnetCUDARule,
    pow2_divisor,
    split_factor,
)
from bitnet_tvm.schedules.cuda.intrin import DP4A_LOCAL_INTRIN

__all__ = ["GemvKnobs", "TernaryGemv", "schedule_gemv"]


@dataclass(frozen=True)
class GemvKnobs:
    """Tunable choices of :class:`TernaryGemv`.

    Attributes
    ----------
    rows : int
        Outputs per thread block (``threadIdx.y``); the largest divisor of N up to this is
        used (a row tail predicate would block the dp4a tensorization).
    threads : int
        Lanes along K per output (``threadIdx.x``); a power of two up to 32 (one warp).
    vec : int
        Codes per lane per step on the dp4a path (a multiple of 4: ``vec / 4`` dp4a, one
        ``vec``-byte activation load, one ``vec / 4``-byte weight load).
    dp4a : bool
        Use ``__dp4a`` (sm_61+) where the layout allows; False forces the generic path.
    """

    rows: int = 4
    threads: int = 32
    vec: int = 16
    dp4a: bool = True

    def __post_init__(self) -> None:
        for name in ("rows", "threads", "vec"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GemvKnobs.{name} must be a positive int, got {value!r}")
        if self.vec % 4:
            raise ValueError(f"GemvKnobs.vec must be a multiple of 4, got {self.vec}")
        if self.threads > 32 or self.threads & (self.threads - 1):
            raise ValueError(f"GemvKnobs.threads must be a power of two <= 32, got {self.threads}")


class TernaryGemv(BitnetCUDARule):
    """Decode GEMV of ``ternary_int{4,8}_matmul`` and ``ternary_int{4,8}_gate_up`` on CUDA."""

    ops = DENSE + GATE_UP
    Knobs = GemvKnobs

    def schedule(self, sch: s_tir.Schedule, knobs: GemvKnobs) -> None:
        """Rows per block, K lanes with a warp reduction, dp4a where the layout allows."""
        _schedule(sch, knobs, bind_threads=True)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Rows per block, lanes per row, codes per lane step, and dp4a on/off (``vec = 4``,
        one weight byte per step, is left out: its staging loop cannot be vectorized)."""
        return {
            "rows": (1, 2, 4, 8),
            "threads": (8, 16, 32),
            "vec": (8, 16),
            "dp4a": (True, False),
        }


def schedule_gemv(
    func: tirx.PrimFunc, knobs: GemvKnobs, *, bind_threads: bool = True
) -> s_tir.Schedule:
    """The GEMV schedule of a dense or gate/up ternary matmul PrimFunc.

    ``bind_threads=False`` leaves the thread loops serial and does not tensorize (a loop nest
    an LLVM CPU target can build): the tests use it to check the tiling, caching and decode of
    this schedule against the reference on a machine without a GPU.
    """
    sch = s_tir.Schedule(func)
    _schedule(sch, knobs, bind_threads=bind_threads)
    return sch


def _schedule(sch: s_tir.Schedule, knobs: GemvKnobs, *, bind_threads: bool) -> None:
    func = sch.mod["main"]
    k = attrs.get_int(func, attrs.K)
    dp4a = knobs.dp4a and str(func.attrs[attrs.LAYOUT]) == "2bit" and k % knobs.vec == 0
    plan = _Plan(sch, knobs, k, bind_threads)
    # rfactor first, on the blocks' own loops (rfactor of a block already moved by compute_at
    # fails an internal check in TVM 0.27), then move both halves under the row's thread.
    if attrs.get_op(func) in GATE_UP:
        gate = plan.rfactor("gate", "decode_gate", dp4a=dp4a)
        up = plan.rfactor("up", "decode_up", dp4a=False)
        ty = plan.tile_rows(sch.get_sblock("glu"))
        plan.place(up, ty)
        scale = sch.get_sblock("gate_scale")
        sch.compute_at(scale, ty)
        sch.set_scope(scale, 0, "local")
        plan.place(gate, ty)
    else:
        matmul = plan.rfactor("matmul", "decode", dp4a=dp4a)
        ty = plan.tile_rows(sch.get_sblock("epilogue"))
        plan.place(matmul, ty)


@dataclass
class _Plan:
    sch: s_tir.Schedule
    knobs: GemvKnobs
    k: int
    bind_threads: bool

    def bind(self, loop, thread: str) -> None:
        if self.bind_threads:
            self.sch.bind(loop, thread)

    def tile_rows(self, block) -> tirx.For:
        """Split the ``(m, n)`` loops of the last block into ``(m * n_outer, rows)``, bound."""
        sch = self.sch
        m, n = sch.get_loops(block)
        rows = split_factor(int(sch.get(n).extent), self.knobs.rows)
        n_outer, ty = sch.split(n, [None, rows])
        bx = sch.fuse(m, n_outer)
        self.bind(bx, "blockIdx.x")
        self.bind(ty, "threadIdx.y")
        return ty

    def rfactor(self, name: str, decode: str, *, dp4a: bool) -> _Reduction:
        """Split the K loop of reduction ``name`` into lanes and rfactor the lanes out."""
        sch = self.sch
        block = sch.get_sblock(name)
        k_loop = sch.get_loops(block)[-1]
        if dp4a:
            threads = pow2_divisor(self.k // self.knobs.vec, self.knobs.threads)
            steps = (self.k // (threads * self.knobs.vec), self.knobs.vec // 4, 4)
            ko, tx, _, _ = sch.split(k_loop, [steps[0], threads, steps[1], 4])
        else:
            sch.compute_inline(sch.get_sblock(decode))
            threads = pow2_divisor(self.k, self.knobs.threads)
            steps = (self.k // threads,)
            ko, tx = sch.split(k_loop, [steps[0], threads])
        sch.reorder(tx, ko)
        rf = sch.rfactor(tx, factor_axis=0)
        sch.set_scope(rf, 0, "local")
        sch.set_scope(block, 0, "local")
        return _Reduction(rf, block, decode if dp4a else None, steps, threads)

    def place(self, red: _Reduction, ty) -> None:
        """Move the lanes and their warp sum under ``ty``; stage and tensorize the dp4a body."""
        sch = self.sch
        sch.compute_at(red.total, ty)
        sch.compute_at(red.rf, ty)
        # compute_at regenerates one loop per block iter of extent > 1: tx (absent for one lane,
        # e.g. an odd K), then the K steps.
        found = list(sch.get_loops(red.rf)[2:])
        tx = None
        if red.threads > 1:
            self.bind(sch.get_loops(red.total)[-1], "threadIdx.x")
            tx = found.pop(0)
            self.bind(tx, "threadIdx.x")
        found.reverse()
        ko, *inner = (found.pop() if extent > 1 else None for extent in red.steps)
        first = ko or next((loop for loop in inner if loop is not None), None)
        if red.decode is None:
            if first is not None:
                sch.decompose_reduction(red.rf, first)
            return
        kb, kc = inner
        anchor = next(loop for loop in (ko, tx, sch.get_loops(red.rf)[1]) if loop is not None)
        reads = [region.source.name for region in sch.get(red.rf).reads]
        x_loc = sch.cache_read(red.rf, reads.index("x_q"), "local", consumer_blocks=[red.rf])
        sch.compute_at(x_loc, anchor)
        sch.vectorize(sch.get_loops(x_loc)[-1])
        dec = sch.get_sblock(red.decode)
        sch.compute_at(dec, anchor)
        sch.set_scope(dec, 0, "local")
        w_loc = sch.cache_read(dec, 0, "local", consumer_blocks=[dec])
        sch.compute_at(w_loc, anchor)
        sch.vectorize(sch.get_loops(w_loc)[-1])
        for loop in sch.get_loops(dec)[len(sch.get_loops(w_loc)) - 1 :]:
            sch.unroll(loop)
        sch.decompose_reduction(red.rf, first)
        if kb is not None:
            sch.unroll(kb)
        if self.bind_threads:
            sch.tensorize(kc, DP4A_LOCAL_INTRIN)


@dataclass(frozen=True)
class _Reduction:
    rf: s_tir.schedule.SBlockRV
    total: s_tir.schedule.SBlockRV
    decode: str | None  # decode block to stage per step (dp4a path), None when inlined
    steps: tuple[int, ...]  # extents of the K loops under the lane loop: (ko, kb, kc) or (ko,)
    threads: int  # lanes along K (1: no lane loop, no cross-thread reduction)
