"""CPU schedule of the packed-KV operators: (batch x heads) in parallel, head_dim in vectors.

``kv_attention`` (see :mod:`bitnet_tvm.schedules.operators.attention`)::

    parallel for bh in B * Hq:                    # one (batch, query head) per task
      score[t, s]  = sum_d q[t, d] * deq(k[s, d])  # K decoded in the reduction (k_deq inlined)
      row_max / row_exp / row_sum / prob           # per query row, the mask inlined
      out[t, 0:D]  = 0
      for t, s:  out[t, 0:D] += prob[t, s] * deq(v[s, 0:D])   # vectorized over head_dim

Every producer is computed at ``bh``, so its scratch shrinks to one head's ``[T, S]``.
``kv_append``: the copy of the past rows and the packing of the new ones run in parallel over
``B * Hkv``; the per-row absmax and codes (``T * D`` values) stay serial.
"""

from __future__ import annotations

from tvm import s_tir

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule
from bitnet_tvm.schedules.rule import NoKnobs

__all__ = ["KVAttention"]

_PRODUCERS = ("prob", "row_sum", "row_exp", "row_max", "score")


class KVAttention(BitnetCPURule):
    """``kv_attention`` and ``kv_append`` on CPU."""

    ops = (attrs.OpName.KV_ATTENTION, attrs.OpName.KV_APPEND)

    def schedule(self, sch: s_tir.Schedule, knobs: NoKnobs) -> None:
        """Schedule ``sch`` in place (see the module docstring)."""
        if attrs.get_op(sch.mod["main"]) is attrs.OpName.KV_APPEND:
            for name in ("kv_codes", "kv_scale"):
                b, h, *_ = sch.get_loops(sch.get_sblock(name))
                sch.parallel(sch.fuse(b, h))
            return
        for name in ("k_deq", "v_deq", "masked"):
            sch.compute_inline(sch.get_sblock(name))
        out = sch.get_sblock("out")
        b, h, t, d, s = sch.get_loops(out)
        sch.reorder(b, h, t, s, d)
        bh = sch.fuse(b, h)
        sch.parallel(bh)
        for name in _PRODUCERS:
            sch.compute_at(sch.get_sblock(name), bh)
        sch.vectorize(d)
        sch.decompose_reduction(out, s)
