"""Sparse INT8 ternary matmul: the BitLinear of the ``down`` projection (and TopK ``o_proj``).

Same signature and value as :func:`~bitnet_tvm.schedules.operators.ternary_matmul.ternary_matmul`
with ``act_bits=8``; the weight is stored K-major by default so that one activation ``x_q[m, k]``
selects one contiguous packed row.  The product is written
``if_then_else(x_q[m, k] != 0, x * w, 0)`` (equal to ``x * w``): once a schedule iterates K
outside N, the condition is a scalar branch around the vectorized row update and the rows of zero
activations (>80% of the ``down`` input under ReLU^2) are never read.  Block names as the dense
operator (``decode``, ``matmul``, ``epilogue``).
"""

from __future__ import annotations

from tvm import tirx

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.layouts import WeightLayout
from bitnet_tvm.schedules.operators.common import check_dim, matmul_attrs
from bitnet_tvm.schedules.operators.ternary_matmul import ternary_matmul_func

__all__ = ["sparse_int8_matmul"]


def sparse_int8_matmul(
    n: int, k: int, *, layout: WeightLayout | str = WeightLayout.TWO_BIT_KMAJOR
) -> tirx.PrimFunc:
    """Build the sparse INT8 ternary matmul PrimFunc for a ``[n, k]`` weight.

    Returns
    -------
    PrimFunc
        ``(x_q: int8[M, K], x_scale: float32[M, 1], w: uint8[packed_shape(n, k, layout)],
        alpha: float32[N], y: float32[M, N])``, M symbolic, ``bitnet.op = sparse_int8_matmul``.
    """
    n, k = check_dim(n, "n"), check_dim(k, "k")
    layout = WeightLayout(layout)
    func_attrs = matmul_attrs(attrs.OpName.SPARSE_INT8_MATMUL, n, k, layout, 8)
    return ternary_matmul_func(n, k, layout, func_attrs, True)
