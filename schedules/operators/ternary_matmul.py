"""Ternary BitLinear: ``y = float32(sum_k x_q * W) * x_scale * alpha`` (int32 accumulation).

Exactly :func:`bitnet_tvm.reference.ternary_matmul`.  Blocks (schedules find them by name):

``decode``
    ``w_tern[n, k] = int8(code(n, k) - 1)`` from the packed weight (inlined by GEMV schedules,
    computed per tile by GEMM schedules).
``matmul``
    ``acc[m, n] += int32(x_q[m, k]) * int32(w_tern[n, k])``, int32.
``epilogue``
    ``y[m, n] = float32(acc[m, n]) * x_scale[m, 0] * alpha[n]`` (left to right, as the reference).

M (tokens) is a symbolic int64 taken from the buffer shapes, so one compiled function serves any
number of tokens; N and K are static.
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

__all__ = ["ternary_matmul", "ternary_matmul_func"]


def ternary_matmul_func(
    n: int, k: int, layout: WeightLayout, func_attrs: dict, skip_zero_act: bool
) -> tirx.PrimFunc:
    """The shared definition of the dense and the sparse ternary matmul.

    With ``skip_zero_act`` the product is written ``if_then_else(x_q != 0, x * w, 0)``: the same
    value, but a schedule that puts K outside N turns it into a branch that skips the weight row
    of every zero activation (TIR keeps a scalar condition as a branch when it vectorizes N).
    """
    N_, K_ = T.int64(n), T.int64(k)
    W0, W1 = weight_shape(n, k, layout)

    def code(w, vn, vk):
        return ternary_code(w, layout, vn, vk)

    def product(x, wt):
        prod = T.Cast("int32", x) * T.Cast("int32", wt)
        if skip_zero_act:
            return T.if_then_else(x != T.int8(0), prod, 0)
        return prod

    @T.prim_func(s_tir=True)
    def ternary_matmul(
        var_x_q: T.handle,
        var_x_scale: T.handle,
        w: T.Buffer((W0, W1), "uint8"),
        alpha: T.Buffer((N_,), "float32"),
        var_y: T.handle,
    ):
        M = T.int64()
        x_q = T.match_buffer(var_x_q, (M, K_), "int8")
        x_scale = T.match_buffer(var_x_scale, (M, T.int64(1)), "float32")
        y = T.match_buffer(var_y, (M, N_), "float32")
        w_tern = T.sblock_alloc_buffer((N_, K_), "int8")
        acc = T.sblock_alloc_buffer((M, N_), "int32")
        for vn_, vk_ in T.grid(N_, K_):
            with T.sblock("decode"):
                vn, vk = T.axis.remap("SS", [vn_, vk_])
                w_tern[vn, vk] = T.Cast("int8", code(w, vn, vk) - 1)
        for m, nn, kk in T.grid(M, N_, K_):
            with T.sblock("matmul"):
                vm, vn, vk = T.axis.remap("SSR", [m, nn, kk])
                with T.init():
                    acc[vm, vn] = 0
                acc[vm, vn] = acc[vm, vn] + product(x_q[vm, vk], w_tern[vn, vk])
        for m, nn in T.grid(M, N_):
            with T.sblock("epilogue"):
                vm, vn = T.axis.remap("SS", [m, nn])
                y[vm, vn] = T.Cast("float32", acc[vm, vn]) * x_scale[vm, T.int64(0)] * alpha[vn]

    name = f"{func_attrs[attrs.OP]}_{layout.value}_n{n}_k{k}"
    return ternary_matmul.with_attrs({**func_attrs, "global_symbol": name})


def ternary_matmul(
    n: int, k: int, *, act_bits: int, layout: WeightLayout | str = WeightLayout.TWO_BIT
) -> tirx.PrimFunc:
    """Build the fused ternary matmul PrimFunc for a ``[n, k]`` weight.

    Parameters
    ----------
    n, k : int
        Output features and reduction length.
    act_bits : {4, 8}
        Activation width; names the operator (``ternary_int4_matmul`` / ``ternary_int8_matmul``)
        for the schedules, the computation is the same.
    layout : WeightLayout
        Packed weight layout of ``w``.

    Returns
    -------
    PrimFunc
        ``(x_q: int8[M, K], x_scale: float32[M, 1], w: uint8[packed_shape(n, k, layout)],
        alpha: float32[N], y: float32[M, N])``, M symbolic.
    """
    n, k = check_dim(n, "n"), check_dim(k, "k")
    act_bits = check_act_bits(act_bits)
    layout = WeightLayout(layout)
    op = attrs.OpName.TERNARY_INT4_MATMUL if act_bits == 4 else attrs.OpName.TERNARY_INT8_MATMUL
    return ternary_matmul_func(n, k, layout, matmul_attrs(op, n, k, layout, act_bits), False)
