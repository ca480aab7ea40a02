"""INT8 x INT8 matmul with per-row weight scales: the optional INT8 LM head.

``y[m, n] = float32(sum_k int32(x_q[m, k]) * int32(w[n, k])) * x_scale[m] * w_scale[n]``,
exactly :func:`bitnet_tvm.reference.int8_matmul`.  Blocks (schedules find them by name, as in
the ternary operators):

``matmul``
    ``acc[m, n] += int32(x_q[m, k]) * int32(w[n, k])``, int32.
``epilogue``
    ``y[m, n] = float32(acc[m, n]) * x_scale[m, 0] * w_scale[n]`` (left to right).

M (tokens) is symbolic; N and K are static.  The weight is int8 ``[N, K]`` (row-major: a row of
codes per vocabulary entry), one float32 scale per row.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.operators.common import check_dim

__all__ = ["int8_matmul"]


def int8_matmul(n: int, k: int) -> tirx.PrimFunc:
    """Build the INT8 matmul PrimFunc for an int8 ``[n, k]`` weight.

    Parameters
    ----------
    n, k : int
        Output features (vocabulary) and reduction length (hidden size).

    Returns
    -------
    PrimFunc
        ``(x_q: int8[M, K], x_scale: float32[M, 1], w: int8[N, K], w_scale: float32[N],
        y: float32[M, N])``, M symbolic, ``bitnet.op = int8_matmul``.
    """
    n, k = check_dim(n, "n"), check_dim(k, "k")
    N_, K_ = T.int64(n), T.int64(k)

    @T.prim_func(s_tir=True)
    def int8_matmul(
        var_x_q: T.handle,
        var_x_scale: T.handle,
        w: T.Buffer((N_, K_), "int8"),
        w_scale: T.Buffer((N_,), "float32"),
        var_y: T.handle,
    ):
        M = T.int64()
        x_q = T.match_buffer(var_x_q, (M, K_), "int8")
        x_scale = T.match_buffer(var_x_scale, (M, T.int64(1)), "float32")
        y = T.match_buffer(var_y, (M, N_), "float32")
        acc = T.sblock_alloc_buffer((M, N_), "int32")
        for m, nn, kk in T.grid(M, N_, K_):
            with T.sblock("matmul"):
                vm, vn, vk = T.axis.remap("SSR", [m, nn, kk])
                with T.init():
                    acc[vm, vn] = 0
                acc[vm, vn] = acc[vm, vn] + T.Cast("int32", x_q[vm, vk]) * T.Cast(
                    "int32", w[vn, vk]
                )
        for m, nn in T.grid(M, N_):
            with T.sblock("epilogue"):
                vm, vn = T.axis.remap("SS", [m, nn])
                y[vm, vn] = T.Cast("float32", acc[vm, vn]) * x_scale[vm, T.int64(0)] * w_scale[vn]

    func_attrs = {
        attrs.OP: attrs.OpName.INT8_MATMUL.value,
        attrs.ACT_BITS: 8,
        attrs.N: n,
        attrs.K: k,
        "tirx.noalias": True,
        "global_symbol": f"int8_matmul_n{n}_k{k}",
    }
    return int8_matmul.with_attrs(func_attrs)
