"""Prefill (large M) CUDA schedule of the fused gate/up + ReLU^2 GLU on INT8 tensor cores.

The operator (:mod:`bitnet_tvm.schedules.operators.gate_up`) reduces the gate row, then the up
row under a ``g > 0`` condition, a form no tensor intrinsic matches.  ``prepare`` rewrites it
(:func:`gate_up_pairs`) as one matmul over the pair axis ``t`` (0: gate rows, 1: up rows of the
packed ``[2I, K]`` weight) and an epilogue in the reference's order::

    acc[t, m, i] = sum_k int32(x_q[m, k]) * int32(w[t * I + i, k])
    s = float32(acc[t, m, i]) * x_scale[m] * alpha[t * I + i]         # g (t = 0), u (t = 1)
    pair[t, m, i] = max(s, 0) * max(s, 0) if t == 0 else s            # relu(g)^2, u
    h[m, i] = pair[0, m, i] * pair[1, m, i]                           # (relu(g)^2) * u

which is :func:`bitnet_tvm.reference.ternary_gate_up` bit for bit (the up sum is always
computed: no skipped rows, so not even the sign of a zero differs).  The schedule is
:class:`~bitnet_tvm.schedules.cuda.gemm.TernaryGemm`'s with ``t`` inside each warp: a warp holds
the gate and the up fragments of the same ``16 frag_m x 16 frag_n`` outputs, both weight halves
of a block's ``BN`` columns are decoded into shared memory, and the warps scale their int32
tiles to ``pair`` on the way out of shared memory.  The product ``h = pair[0] * pair[1]`` is a
second, elementwise kernel (``pair`` is a global workspace of ``2 M I`` floats): the gate and up
values of one output sit in one warp, but TVM 0.27's ``reverse_compute_at`` cannot place a block
that reads ``pair[0, ...]`` and ``pair[1, ...]`` (constant indices), and a product over ``t``
as a reduction block fails the affine-binding check under the symbolic-M tile predicate.
Default knobs are unmeasured: no GPU has run this.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.script import tirx as T
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cuda.common import GATE_UP
from bitnet_tvm.schedules.cuda.gemm import GemmKnobs, TernaryGemm, _schedule
from bitnet_tvm.schedules.layouts import WeightLayout
from bitnet_tvm.schedules.operators.common import ternary_code, weight_shape

__all__ = ["TernaryGateUpGemm", "gate_up_pairs", "schedule_gate_up_gemm"]


def gate_up_pairs(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """The gate/up operator ``func`` written as a matmul over the (gate, up) pair axis.

    Same parameters, attributes and results; see the module docstring for the blocks.
    """
    i, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
    layout = WeightLayout(str(func.attrs[attrs.LAYOUT]))
    I_, I2, K_ = T.int64(i), T.int64(2 * i), T.int64(k)
    W0, W1 = weight_shape(2 * i, k, layout)
    Z = T.int64(0)

    def scaled(acc, x_scale, alpha, vt, vm, vn):
        return T.Cast("float32", acc[vt, vm, vn]) * x_scale[vm, Z] * alpha[vt * I_ + vn]

    @T.prim_func(s_tir=True)
    def gate_up(
        var_x_q: T.handle,
        var_x_scale: T.handle,
        w: T.Buffer((W0, W1), "uint8"),
        alpha: T.Buffer((I2,), "float32"),
        var_h: T.handle,
    ):
        M = T.int64()
        x_q = T.match_buffer(var_x_q, (M, K_), "int8")
        x_scale = T.match_buffer(var_x_scale, (M, T.int64(1)), "float32")
        h = T.match_buffer(var_h, (M, I_), "float32")
        w_tern = T.sblock_alloc_buffer((T.int64(2), I_, K_), "int8")
        acc = T.sblock_alloc_buffer((T.int64(2), M, I_), "int32")
        pair = T.sblock_alloc_buffer((T.int64(2), M, I_), "float32")
        for t_, vn_, vk_ in T.grid(T.int64(2), I_, K_):
            with T.sblock("decode"):
                vt, vn, vk = T.axis.remap("SSS", [t_, vn_, vk_])
                w_tern[vt, vn, vk] = T.Cast("int8", ternary_code(w, layout, vt * I_ + vn, vk) - 1)
        for t_, m, nn, kk in T.grid(T.int64(2), M, I_, K_):
            with T.sblock("matmul"):
                vt, vm, vn, vk = T.axis.remap("SSSR", [t_, m, nn, kk])
                with T.init():
                    acc[vt, vm, vn] = 0
                acc[vt, vm, vn] = acc[vt, vm, vn] + T.Cast("int32", x_q[vm, vk]) * T.Cast(
                    "int32", w_tern[vt, vn, vk]
                )
        for t_, m, nn in T.grid(T.int64(2), M, I_):
            with T.sblock("pair_scale"):
                vt, vm, vn = T.axis.remap("SSS", [t_, m, nn])
                pair[vt, vm, vn] = T.if_then_else(
                    vt == Z,
                    T.max(scaled(acc, x_scale, alpha, vt, vm, vn), T.float32(0))
                    * T.max(scaled(acc, x_scale, alpha, vt, vm, vn), T.float32(0)),
                    scaled(acc, x_scale, alpha, vt, vm, vn),
                )
        for m, nn in T.grid(M, I_):
            with T.sblock("epilogue"):
                vm, vn = T.axis.remap("SS", [m, nn])
                h[vm, vn] = pair[Z, vm, vn] * pair[T.int64(1), vm, vn]

    return gate_up.with_attrs(dict(func.attrs))


class TernaryGateUpGemm(TernaryGemm):
    """Prefill GEMM of ``ternary_int{4,8}_gate_up`` (2-bit layout) on INT8 tensor cores."""

    ops = GATE_UP
    Knobs = GemmKnobs

    def prepare(self, func: tirx.PrimFunc, knobs: GemmKnobs) -> tirx.PrimFunc:
        """``func`` as a matmul over the gate/up pair axis (:func:`gate_up_pairs`)."""
        return gate_up_pairs(func)

    def schedule(self, sch: s_tir.Schedule, knobs: GemmKnobs) -> None:
        """Tile, stage and tensorize ``sch`` (see the module docstring)."""
        _schedule(sch, knobs, bind_threads=True, pairs=True)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """:class:`TernaryGemm`'s space with at most 2 x 2 fragments per warp and half the
        tile width: a warp holds twice the accumulators (gate and up) and the block's int32
        accumulator (``2 x BM x (BN + 4) x 4`` bytes) stays in shared memory."""
        space = super().knob_space(func, target)
        return {**space, "frag_n": (1, 2), "warps_n": (1, 2)}


def schedule_gate_up_gemm(
    func: tirx.PrimFunc, knobs: GemmKnobs, *, bind_threads: bool = True
) -> s_tir.Schedule:
    """The GEMM schedule of a gate/up PrimFunc; ``bind_threads=False`` as in
    :func:`~bitnet_tvm.schedules.cuda.gemm.schedule_gemm` (serial, no WMMA: runs on a CPU)."""
    sch = s_tir.Schedule(gate_up_pairs(func))
    _schedule(sch, knobs, bind_threads=bind_threads, pairs=True)
    return sch
