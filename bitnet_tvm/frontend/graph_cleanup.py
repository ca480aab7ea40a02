"""ONNX graph clean-up applied before conversion.

Two rewrites, both semantics-preserving:

* **Unique node names.** The converter wrappers in :mod:`bitnet_tvm.frontend.hooks`
  identify the node being converted by ``node.name``, which is the only node
  information the frontend passes to a converter. ONNX does not require node
  names; unnamed or duplicated ones get ``<op>_<index>``.
* **Constant attribute forms.** ``Constant`` may carry its value as
  ``value_int``, ``value_ints``, ``value_float`` or ``value_floats`` instead of
  a ``value`` tensor. The dynamo exporter emits these when its ONNX optimizer
  is off (``torch.onnx.export(..., dynamo=True, optimize=False)``). The TVM
  frontend reads only ``value``: it fails with "no value in Constant", or,
  for an empty list, already in its attribute parser ("Cannot parse
  attribute"), before any converter runs. We rewrite them into the equivalent
  ``value`` tensor (int64 or float32, scalar for the singular forms, 1-D for
  the list forms, as the ONNX spec defines).

The input model is never modified; a copy is made only when something changes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["clean_graph", "ensure_unique_node_names", "expand_constant_attributes"]

_CONSTANT_FORMS = {
    "value_int": (np.int64, False),
    "value_ints": (np.int64, True),
    "value_float": (np.float32, False),
    "value_floats": (np.float32, True),
}


def _needs_renaming(graph: onnx.GraphProto) -> bool:
    names = [node.name for node in graph.node]
    return not all(names) or len(set(names)) != len(names)


def _has_constant_forms(graph: onnx.GraphProto) -> bool:
    return any(
        node.op_type == "Constant"
        and node.domain in ("", "ai.onnx")
        and any(a.name in _CONSTANT_FORMS for a in node.attribute)
        for node in graph.node
    )


def ensure_unique_node_names(graph: onnx.GraphProto) -> None:
    """Give every node of ``graph`` a unique, non-empty name, in place.

    Parameters
    ----------
    graph : onnx.GraphProto
        The graph to edit. Names that are already unique are kept.
    """
    counts = Counter(node.name for node in graph.node)
    taken = {name for name, count in counts.items() if name and count == 1}
    for index, node in enumerate(graph.node):
        if node.name and counts[node.name] == 1:
            continue
        base = f"{node.name or node.op_type}_{index}"
        candidate, suffix = base, 0
        while candidate in taken:
            suffix += 1
            candidate = f"{base}_{suffix}"
        node.name = candidate
        taken.add(candidate)


def expand_constant_attributes(graph: onnx.GraphProto) -> None:
    """Rewrite ``Constant`` nodes using ``value_int(s)``/``value_float(s)`` to ``value``, in place.

    Parameters
    ----------
    graph : onnx.GraphProto
        The graph to edit.
    """
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for attr in node.attribute:
            if attr.name not in _CONSTANT_FORMS:
                continue
            dtype, is_list = _CONSTANT_FORMS[attr.name]
            value = onnx.helper.get_attribute_value(attr)
            array = np.asarray(list(value) if is_list else value, dtype=dtype)
            tensor = numpy_helper.from_array(array, name=node.output[0])
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("value", tensor))
            break


def clean_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Apply the clean-up rewrites to the main graph.

    Parameters
    ----------
    model : onnx.ModelProto
        The model to clean. It is returned unchanged (same object) when nothing
        needs rewriting; otherwise a cleaned copy is returned and the argument is
        left as it was.

    Returns
    -------
    onnx.ModelProto
        A model whose nodes have unique names and whose ``Constant`` nodes use ``value``.
    """
    rename = _needs_renaming(model.graph)
    constants = _has_constant_forms(model.graph)
    if not (rename or constants):
        return model
    cleaned = onnx.ModelProto()
    cleaned.CopyFrom(model)
    if rename:
        ensure_unique_node_names(cleaned.graph)
    if constants:
        expand_constant_attributes(cleaned.graph)
    return cleaned
