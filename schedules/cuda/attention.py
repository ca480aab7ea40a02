"""CUDA schedule of the packed-KV operators: a thread per output element, one kernel per stage.

A first, correct schedule (built for sm_80 / sm_90 here, not yet timed on a GPU).  The K/V
dequantization and the causal mask are inlined into their consumers, so codes are unpacked in
registers where they are read; every remaining block of
:mod:`bitnet_tvm.schedules.operators.attention` becomes one kernel whose spatial loops are fused
and spread over ``blockIdx.x`` x ``threadIdx.x``, its reduction (over D or over S) serial in the
thread::

    score[b, h, t, s]  one thread each, sum over D of q * deq(k)     (kv_attention)
    row_max / row_sum  one thread per query row, over S
    row_exp / prob     one thread each
    out[b, h, t, d]    one thread each, sum over S of prob * deq(v)

``kv_append`` likewise (absmax per row, codes, scales, packed bytes, BOS slot).  The scratch
``[B, Hq, T, S]`` tensors live in global memory.  Next steps: a warp per query row with the
softmax in registers (flash-decoding split over S for long caches).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cuda.common import BitnetCUDARule

__all__ = ["KVAttention", "KVAttentionKnobs"]

_INLINED = ("k_deq", "v_deq", "masked")


@dataclass(frozen=True)
class KVAttentionKnobs:
    """Tunable choices of :class:`KVAttention`.

    Attributes
    ----------
    threads : int
        Threads per block (``threadIdx.x``) of every kernel.
    """

    threads: int = 128

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int):
            raise ValueError(f"KVAttentionKnobs.threads must be an int, got {self.threads!r}")
        if not 0 < self.threads <= 1024:
            raise ValueError(f"KVAttentionKnobs.threads must lie in [1, 1024], got {self.threads}")


class KVAttention(BitnetCUDARule):
    """``kv_attention`` and ``kv_append`` on CUDA."""

    ops = (attrs.OpName.KV_ATTENTION, attrs.OpName.KV_APPEND)
    Knobs = KVAttentionKnobs

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Threads per block: 64 to 512."""
        return {"threads": (64, 128, 256, 512)}

    def schedule(self, sch: s_tir.Schedule, knobs: KVAttentionKnobs) -> None:
        """Schedule ``sch`` in place (see the module docstring)."""
        if attrs.get_op(sch.mod["main"]) is attrs.OpName.KV_ATTENTION:
            for name in _INLINED:
                sch.compute_inline(sch.get_sblock(name))
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            iters = sch.get(block).iter_vars
            spatial = sum(1 for it in iters if it.iter_type == tirx.IterVar.DataPar)
            fused = sch.fuse(*sch.get_loops(block)[:spatial])
            bx, tx = sch.split(fused, [None, knobs.threads])
            sch.bind(bx, "blockIdx.x")
            sch.bind(tx, "threadIdx.x")
