"""Replacement ONNX converters that keep symbolic shapes intact.

The TVM 0.27 Relax ONNX frontend (``tvm/relax/frontend/onnx/onnx_frontend.py``)
tracks integer shape values symbolically: ``Shape`` yields a ``relax.ShapeExpr``,
``Squeeze``/``Gather`` on it yield a scalar ``PrimExpr`` (``batch``, ``seq``) and
``Add``/``Sub`` on those fold to ``PrimExpr`` arithmetic (``seq + 1``). Dynamo
exports of LLaMA-style models (``torch.onnx.export(..., dynamo=True)``) build
their position ids, RoPE tables and causal mask from exactly such values, and
three converters mishandle them.

``Range`` (``Range._impl_v12``) -- the converter that loses the shape.
    With a symbolic ``limit`` (``Range(0, seq, 1)`` for the position ids) it
    computes the element count as a runtime tensor and match-casts it to a
    *fresh* symbolic variable ``range_len_0``. The output is typed
    ``(range_len_0,)`` instead of ``(seq,)``; every ``Range`` call makes a new,
    unrelated variable with the same name. Downstream the RoPE ``cos``/``sin``
    tables have shape ``(1, 1, range_len_0, 16)`` and the attention tensors
    ``(batch, 4, seq, 16)``. Relax cannot prove ``range_len_0 == seq`` when it
    infers the broadcast shape of ``Mul``, so the product gets type
    ``R.Tensor(ndim=4)`` with no shape. From there every Add, Unsqueeze,
    Transpose, MatMul and Softmax stays shapeless, until ``Reshape`` fails
    ("Reshape expects the input tensor to have known shape") or ``Expand``
    fails (``TypeError: 'NoneType' object is not iterable``). Our ``Range``
    builds ``relax.op.arange(start, limit, delta)`` directly from the symbolic
    scalars, so the length is the expression itself (``seq``,
    ``past + seq - past`` simplifies to ``seq``). This is exact: ONNX Range
    yields ``max(ceil((limit - start) / delta), 0)`` elements, which is what
    ``arange`` computes. The ``max(..., 0)`` clamp is applied only when the
    arithmetic analyzer cannot prove that the range is non-empty; shape
    variables are non-negative, so ``Range(0, seq)`` needs no clamp.

``Reshape`` (``Reshape._impl_v13``).
    It accepts a ``ShapeExpr`` but not a scalar ``PrimExpr``. Dynamo emits
    ``Reshape(seq + 1, [-1])`` to turn a symbolic scalar into the 1-element
    ``ends`` input of a ``Slice`` (HF causal-mask code), and the frontend
    passes the ``PrimExpr`` to ``relax.op.reshape``, which fails with
    "Reshape expects the input data to be a Tensor. However, the given input
    is ir.PrimType". Our ``Reshape`` maps a scalar to the one-element
    ``ShapeExpr([value])``. This is how the frontend represents a 1-D int64
    shape tensor, and it is what ``Unsqueeze`` produces for the same
    value. Any other target shape materialises the scalar as a 0-d tensor
    first.

``Expand`` (``Expand._impl_v13``).
    It reads ``list(data.ty.shape)`` without checking it, so a shapeless
    input crashes with a ``TypeError``. Our ``Expand`` handles a known shape as
    before. For an input whose shape is unknown but whose rank is known, it
    computes the ONNX broadcast (``out = target if in == 1 else in``) at run
    time. Its output then has only a known rank, and the importer's
    value-info shape recovery (:mod:`bitnet_tvm.frontend.shape_recovery`)
    restores the declared shape if the exporter gave one.

Each class subclasses the frontend's own converter and falls back to it for
every case it does not change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax, sym, tirx
from tvm.relax.frontend.onnx import onnx_frontend as _fe

__all__ = ["CONVERTER_OVERRIDES", "Expand", "Range", "Reshape"]


def _is_int_scalar(value: Any) -> bool:
    """Return whether ``value`` is an integer ``PrimExpr`` or a 1-element integer constant."""
    if tvm.ir.is_prim_expr(value):
        return str(value.ty).startswith(("int", "uint"))
    if isinstance(value, tvm.ir.GenericConst):
        array = value.value.numpy()
        return array.size == 1 and np.issubdtype(array.dtype, np.integer)
    return False


def _as_prim(value: Any, dtype: str) -> tirx.PrimExpr:
    """Convert an integer scalar (``PrimExpr`` or constant) to a ``PrimExpr`` of ``dtype``."""
    if tvm.ir.is_prim_expr(value):
        return value if str(value.ty) == dtype else tirx.Cast(dtype, value)
    return tirx.IntImm(dtype, int(value.value.numpy().reshape(())))


def _scalar_dtype(value: Any) -> str:
    """Return the dtype of a scalar ``PrimExpr`` or constant."""
    if tvm.ir.is_prim_expr(value):
        return str(value.ty)
    return str(value.ty.dtype)


def _shape_analyzer(*exprs: tirx.PrimExpr) -> sym.Analyzer:
    """Build an analyzer that knows every free variable of ``exprs`` is non-negative.

    In this frontend a symbolic scalar is always arithmetic over tensor
    dimensions, and a tensor dimension is never negative.
    """
    analyzer = sym.Analyzer()
    for expr in exprs:
        for var in tirx.analysis.undefined_vars(expr):
            analyzer.update(var, sym.ConstIntBound(0, sym.ConstIntBound.POS_INF), override=True)
    return analyzer


class Reshape(_fe.Reshape):
    """ONNX ``Reshape`` that also accepts a symbolic scalar as its data input."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        data = inputs[0]
        if not tvm.ir.is_prim_expr(data):
            return super()._impl_v13(bb, inputs, attr, params)
        new_shape = _fe.get_constant(inputs[1], params)
        if isinstance(new_shape, tvm.ir.GenericConst):
            target = [int(v) for v in new_shape.value.numpy().reshape(-1)]
            if target in ([-1], [1]):
                return relax.ShapeExpr([data])
            if not target:
                return data
        tensor = bb.normalize(relax.op.full((), data, dtype=str(data.ty)))
        return super()._impl_v13(bb, _fe.onnx_input([tensor, *inputs[1:]]), attr, params)


class Range(_fe.Range):
    """ONNX ``Range`` whose output length stays a symbolic expression of its inputs."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        args = [_fe.get_constant(x, params) for x in inputs[:3]]
        symbolic = any(tvm.ir.is_prim_expr(x) for x in args)
        if not symbolic or not all(_is_int_scalar(x) for x in args):
            return super()._impl_v12(bb, inputs, attr, params)
        delta_arg = args[2]
        if not isinstance(delta_arg, tvm.ir.GenericConst):
            # A symbolic step has an unknown sign; the frontend's runtime path handles it.
            return super()._impl_v12(bb, inputs, attr, params)
        dtype = _scalar_dtype(args[0])
        start, limit, delta = (_as_prim(x, dtype) for x in args)
        step = int(delta.value)
        if step == 0:
            name = attr["tvm_custom"]["name"]
            raise ValueError(f"Range node {name!r}: delta must be non-zero, got 0.")
        analyzer = _shape_analyzer(start, limit)
        non_empty = limit - start >= 0 if step > 0 else start - limit >= 0
        if not analyzer.can_prove(non_empty):
            limit = tirx.max(limit, start) if step > 0 else tirx.min(limit, start)
        return relax.op.arange(start, limit, delta, dtype)


class Expand(_fe.Expand):
    """ONNX ``Expand`` that tolerates an input whose shape is unknown but whose rank is known."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        data, shape = inputs[0], inputs[1]
        data_ty = data.ty
        if isinstance(shape, tvm.ir.GenericConst) and getattr(data_ty, "shape", None) is not None:
            return cls._constant_target(data, shape, attr["tvm_custom"]["name"])
        if not (isinstance(data_ty, relax.TensorType) and data_ty.shape is None):
            return super()._impl_v13(bb, inputs, attr, params)
        name = attr["tvm_custom"]["name"]
        if data_ty.ndim == -1:
            raise ValueError(
                f"Expand node {name!r}: the data input has unknown rank, so the ONNX "
                "broadcast cannot be formed; give the graph input a ranked shape."
            )
        target = _fe._as_int64_tensor(bb, _fe.get_constant(shape, params))
        target_len = _fe._get_known_tensor_length(target)
        if target_len is None:
            raise ValueError(
                f"Expand node {name!r}: the target shape must have a statically known "
                "length (a 1-D int64 tensor of known size)."
            )
        out_ndim = max(target_len, data_ty.ndim)
        for _ in range(out_ndim - data_ty.ndim):
            data = bb.normalize(relax.op.expand_dims(data, axis=0))
        if target_len < out_ndim:
            ones = relax.const(np.ones(out_ndim - target_len, dtype="int64"))
            target = bb.normalize(relax.op.concat([ones, target], axis=0))
        data_dims = bb.normalize(relax.op.shape_to_tensor(bb.normalize(relax.op.shape_of(data))))
        one = relax.const(1, "int64")
        out_dims = bb.normalize(relax.op.where(relax.op.equal(data_dims, one), target, data_dims))
        out_shape = bb.normalize(relax.op.tensor_to_shape(out_dims))
        return relax.op.broadcast_to(data, out_shape)

    @staticmethod
    def _constant_target(data: relax.Expr, shape: tvm.ir.GenericConst, name: str) -> relax.Expr:
        """Broadcast to a constant target shape; data dims may be symbolic.

        The frontend's own path reads ``dim.value`` of every data dim, which fails for
        symbolic ones (the GQA ``repeat_kv`` expand of ``[batch, kv, 1, seq, d]``).  ONNX rules,
        right-aligned: a target 1 or -1 keeps the data dim; a data dim 1 takes the target; a
        symbolic data dim against a target t > 1 is t (at run time it must be 1 or t).
        """
        target = [int(t) for t in shape.value.numpy().reshape(-1)]
        dims = list(data.ty.shape)
        rank = max(len(target), len(dims))
        target = [1] * (rank - len(target)) + target
        dims = [tirx.IntImm("int64", 1)] * (rank - len(dims)) + dims
        out = []
        for axis, (t, d) in enumerate(zip(target, dims, strict=True)):
            static = int(d.value) if isinstance(d, tirx.IntImm) else None
            if t in (1, -1):
                out.append(d)
            elif static == 1 or static is None:
                out.append(tirx.IntImm("int64", t))
            elif static == t:
                out.append(d)
            else:
                raise ValueError(
                    f"Expand node {name!r}: cannot broadcast data dim {static} to {t} at axis "
                    f"{axis} (data shape {list(data.ty.shape)}, target {target})"
                )
        if rank > len(data.ty.shape):
            data = relax.op.reshape(data, dims)
        return relax.op.broadcast_to(data, relax.ShapeExpr(out))


CONVERTER_OVERRIDES: dict[str, type[_fe.OnnxOpConverter]] = {
    "Reshape": Reshape,
    "Range": Range,
    "Expand": Expand,
}
"""Op type -> replacement converter class, merged over the frontend's convert map."""
