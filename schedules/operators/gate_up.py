"""Fused gate/up projection with the ReLU^2 GLU epilogue.

``W_gu = concat([W_gate, W_up])`` is one packed ``[2I, K]`` weight, ``alpha`` is ``[2I]`` (gate
scales then up scales) and the output is ``h[m, i] = (r * r) * u`` with
``r = max(g, 0)``, ``g = ternary_matmul(x, W_gate)[m, i]``, ``u = ternary_matmul(x, W_up)[m, i]``,
each product rounded like :func:`bitnet_tvm.reference.ternary_matmul`.

Gate first (BitNet a4.8): the up reduction is written
``acc_u[m, i] += if_then_else(g[m, i] > 0, x * W_up[i, k], 0)``, so a schedule that computes the
gate row first turns it into a branch that skips the whole up row where ``relu(g) == 0``
(``g <= 0``).  Then ``acc_u`` is 0, ``u`` is 0 and ``h`` is +0.0, where the reference gives
``0 * u`` (+0.0 or -0.0): equal under ``np.array_equal``; every other element is bit-identical.

Blocks: ``decode_gate`` / ``decode_up`` (``w_gate`` / ``w_up``, int8 ``[I, K]``), ``gate``
(int32 reduction), ``gate_scale`` (``g = float32(acc_g) * x_scale * alpha[i]``), ``up``
(conditional int32 reduction), ``glu``.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.layouts import WeightLayout
from bitnet_tvm.schedules.operators.common import (
    check_act_bits,
    check_dim,
    matmul_attrs,
    ternary_code,
    weight_shape,
)

__all__ = ["ternary_gate_up"]


def ternary_gate_up(
    i: int, k: int, *, act_bits: int, layout: WeightLayout | str = WeightLayout.TWO_BIT
) -> tirx.PrimFunc:
    """Build the fused gate/up + ReLU^2 GLU PrimFunc.

    Parameters
    ----------
    i : int
        Intermediate size I (the weight has 2I rows: gate rows then up rows).
    k : int
        Hidden size K.
    act_bits : {4, 8}
        Activation width (names the operator ``ternary_int4_gate_up`` / ``ternary_int8_gate_up``).
    layout : WeightLayout
        Packed layout of ``W_gu``.

    Returns
    -------
    PrimFunc
        ``(x_q: int8[M, K], x_scale: float32[M, 1], w: uint8[packed_shape(2I, K, layout)],
        alpha: float32[2I], h: float32[M, I])``, M symbolic; ``bitnet.n`` is I.
    """
    i, k = check_dim(i, "i"), check_dim(k, "k")
    act_bits = check_act_bits(act_bits)
    layout = WeightLayout(layout)
    I_, I2, K_ = T.int64(i), T.int64(2 * i), T.int64(k)
    W0, W1 = weight_shape(2 * i, k, layout)

    def code(w, vn, vk):
        return ternary_code(w, layout, vn, vk)

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
        w_gate = T.sblock_alloc_buffer((I_, K_), "int8")
        w_up = T.sblock_alloc_buffer((I_, K_), "int8")
        acc_g = T.sblock_alloc_buffer((M, I_), "int32")
        g = T.sblock_alloc_buffer((M, I_), "float32")
        acc_u = T.sblock_alloc_buffer((M, I_), "int32")
        for vn_, vk_ in T.grid(I_, K_):
            with T.sblock("decode_gate"):
                vn, vk = T.axis.remap("SS", [vn_, vk_])
                w_gate[vn, vk] = T.Cast("int8", code(w, vn, vk) - 1)
        for vn_, vk_ in T.grid(I_, K_):
            with T.sblock("decode_up"):
                vn, vk = T.axis.remap("SS", [vn_, vk_])
                w_up[vn, vk] = T.Cast("int8", code(w, vn + I_, vk) - 1)
        for m, ii, kk in T.grid(M, I_, K_):
            with T.sblock("gate"):
                vm, vi, vk = T.axis.remap("SSR", [m, ii, kk])
                with T.init():
                    acc_g[vm, vi] = 0
                acc_g[vm, vi] = acc_g[vm, vi] + T.Cast("int32", x_q[vm, vk]) * T.Cast(
                    "int32", w_gate[vi, vk]
                )
        for m, ii in T.grid(M, I_):
            with T.sblock("gate_scale"):
                vm, vi = T.axis.remap("SS", [m, ii])
                g[vm, vi] = T.Cast("float32", acc_g[vm, vi]) * x_scale[vm, T.int64(0)] * alpha[vi]
        for m, ii, kk in T.grid(M, I_, K_):
            with T.sblock("up"):
                vm, vi, vk = T.axis.remap("SSR", [m, ii, kk])
                with T.init():
                    acc_u[vm, vi] = 0
                acc_u[vm, vi] = acc_u[vm, vi] + T.if_then_else(
                    g[vm, vi] > T.float32(0),
                    T.Cast("int32", x_q[vm, vk]) * T.Cast("int32", w_up[vi, vk]),
                    0,
                )
        for m, ii in T.grid(M, I_):
            with T.sblock("glu"):
                vm, vi = T.axis.remap("SS", [m, ii])
                h[vm, vi] = (T.max(g[vm, vi], T.float32(0)) * T.max(g[vm, vi], T.float32(0))) * (
                    T.Cast("float32", acc_u[vm, vi]) * x_scale[vm, T.int64(0)] * alpha[vi + I_]
                )

    op = attrs.OpName.TERNARY_INT4_GATE_UP if act_bits == 4 else attrs.OpName.TERNARY_INT8_GATE_UP
    func_attrs = matmul_attrs(op, i, k, layout, act_bits)
    name = f"{op.value}_{layout.value}_i{i}_k{k}"
    return gate_up.with_attrs({**func_attrs, "global_symbol": name})
