"""The maximum sequence length an ONNX model supports, read from the model itself.

An artifact compiled without ``model_info`` (``bitnet-tvm compile`` without ``--config``) has
no ``max_position_embeddings``; :func:`max_positions` recovers it from the ONNX file so that
generation can still refuse an over-long prompt with a clear error.  Two sources, in order:

1. the model's ``metadata_props`` entry ``max_position_embeddings`` (an integer string);
2. the RoPE cos/sin tables: rank-2 float initializers or ``Constant`` outputs whose name holds
   ``cos`` or ``sin`` (``cos_cached [P, head_dim]`` in Hugging Face exports); the length ``P``
   is the number of positions.  Tables of different lengths are ambiguous and give None.

Only shapes are read, so a proto loaded without its external data works.  A model that
computes cos/sin from the positions at run time (our own export) has no table: None.
"""

from __future__ import annotations

import re

import onnx

__all__ = ["METADATA_KEY", "max_positions"]

#: The ``metadata_props`` key holding the maximum length.
METADATA_KEY = "max_position_embeddings"

_TABLE_NAME = re.compile(r"(^|[^a-z])(cos|sin)", re.IGNORECASE)
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def _tables(graph: onnx.GraphProto) -> list[tuple[str, onnx.TensorProto]]:
    tables = [(t.name, t) for t in graph.initializer]
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    tables.append((node.output[0], attr.t))
    return tables


def max_positions(proto: onnx.ModelProto) -> int | None:
    """The maximum number of positions of ``proto``, or None when it does not say.

    Parameters
    ----------
    proto : onnx.ModelProto
        The model (external data need not be loaded).

    Returns
    -------
    int or None
        From ``metadata_props["max_position_embeddings"]``, else the common length of the
        RoPE cos/sin tables (see the module docstring), else None.

    Raises
    ------
    ValueError
        If ``metadata_props["max_position_embeddings"]`` is not a positive integer.
    """
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            value = prop.value.strip()
            if not value.isdigit() or int(value) < 1:
                raise ValueError(
                    f"ONNX metadata_props[{METADATA_KEY!r}] must be a positive integer, "
                    f"got {prop.value!r}"
                )
            return int(value)
    lengths = {
        int(t.dims[0])
        for name, t in _tables(proto.graph)
        if len(t.dims) == 2 and t.data_type in _FLOATS and _TABLE_NAME.search(name)
    }
    if len(lengths) != 1:
        return None
    (length,) = lengths
    return length if length > 0 else None
