"""Import an ONNX model without extra copies of its large weights.

Two costs of the TVM ONNX frontend grow with the weights:

* it evaluates ops on constants in NumPy, so a ``Cast(float)`` of an int8 weight (``int8``
  exports) becomes a 4-byte float constant (~8 GB for a 2B model), and a ``Transpose`` of the
  tied embedding a second copy of it;
* the model proto with its data loaded, the checker's serialized copy, NumPy arrays and TVM
  tensors of each initializer are alive together (a 1.3 GB embedding peaked at ~7 GB).

:func:`import_compact` imports the large initializers (:func:`lifted_initializers`) as extra
inputs of ``main`` instead (the frontend then emits ``astype`` / ``permute_dims`` of a variable)
and binds them back as constants afterwards, each read straight from the file into one TVM
tensor.  The graph passes keep integer weights integer
(:class:`~bitnet_tvm.relay_passes.fold_weights.FoldWeights`) and read the codes through the cast
(:func:`~bitnet_tvm.relay_passes.quant_match.weight_codes`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import tvm
from google.protobuf.message import DecodeError
from tvm import relax

from bitnet_tvm.frontend import import_onnx
from bitnet_tvm.frontend.validation import check_external_data

__all__ = ["MIN_LIFT_BYTES", "import_compact", "lifted_initializers"]

#: Initializers of at least this many bytes are imported as inputs whatever their use.
MIN_LIFT_BYTES = 16 << 20

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}


def lifted_initializers(
    graph: onnx.GraphProto, min_bytes: int = MIN_LIFT_BYTES
) -> list[onnx.TensorProto]:
    """Initializers to import as inputs: integer ones of rank >= 2 that are only used by
    ``Cast`` nodes to a float type (weight codes, any size), and any of rank >= 2 with at
    least ``min_bytes`` bytes (shape-like operands, which converters need constant, are small).
    """
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    found = []
    for tensor in graph.initializer:
        if len(tensor.dims) < 2 or not users[tensor.name]:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        nbytes = int(np.prod(tensor.dims, dtype=np.int64)) * dtype.itemsize
        codes = dtype.kind in "iu" and all(_is_cast_to_float(n) for n in users[tensor.name])
        if codes or nbytes >= min_bytes:
            found.append(tensor)
    return found


def _is_cast_to_float(node: onnx.NodeProto) -> bool:
    if node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
        return False
    to = next((a.i for a in node.attribute if a.name == "to"), None)
    return to in _FLOAT_TYPES


def _read(tensor: onnx.TensorProto, base_dir: Path | None) -> np.ndarray:
    """The array of ``tensor``, reading only its own bytes of an external data file."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    shape = tuple(tensor.dims)
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return onnx.numpy_helper.to_array(tensor)
    info = {e.key: e.value for e in tensor.external_data}
    if base_dir is None:
        raise ValueError(f"initializer {tensor.name!r} is external data of an unknown folder")
    count = int(np.prod(shape, dtype=np.int64))
    arr = np.fromfile(
        base_dir / info["location"], dtype=dtype, count=count, offset=int(info.get("offset", 0))
    )
    if arr.size != count:
        raise ValueError(
            f"initializer {tensor.name!r}: {base_dir / info['location']} holds {arr.size} of its "
            f"{count} elements"
        )
    return arr.reshape(shape)


def import_compact(
    model: str | os.PathLike[str] | onnx.ModelProto,
) -> tuple[tvm.IRModule, onnx.ModelProto]:
    """Import ``model`` (see the module docstring); returns the module and the graph's proto
    (loaded without external data: for reading input/output specs).

    Models without widened integer initializers are imported as by
    :func:`bitnet_tvm.frontend.import_onnx`.  A ``ModelProto`` whose initializers are external
    data is imported by ``import_onnx`` as it is (which raises its own error).
    """
    if isinstance(model, onnx.ModelProto):
        proto, base_dir = model, None
        external = any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer
        )
        if external:
            return import_onnx(proto), proto
    else:
        path = Path(model)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except (OSError, DecodeError, ValueError, RuntimeError):
            return import_onnx(path), onnx.ModelProto()  # raises with import_onnx's message
        base_dir = path.parent
        check_external_data(proto, base_dir, source=str(path))
    lifted = lifted_initializers(proto.graph)
    if not lifted:
        return import_onnx(model), proto
    names = {t.name for t in lifted}
    light = onnx.ModelProto()
    light.CopyFrom(proto)  # external data is not loaded: cheap for large models
    kept = [t for t in light.graph.initializer if t.name not in names]
    del light.graph.initializer[:]
    light.graph.initializer.extend(kept)
    for t in lifted:
        light.graph.input.append(
            onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        )
    mod = import_onnx(light, external_data_dir=base_dir) if base_dir else import_onnx(light)
    del light
    params = list(mod["main"].params)[-len(lifted) :]
    values = {
        var: tvm.runtime.tensor(_read(t, base_dir)) for var, t in zip(params, lifted, strict=True)
    }
    return relax.transform.BindParams("main", values)(mod), proto
