"""ONNX graph clean-up applied before conversion.

The converter wrappers in :mod:`bitnet_tvm.frontend.hooks` identify the node
being converted by ``node.name``, which is the only node information the
frontend passes to a converter. ONNX does not require node names, and
hand-written or merged graphs often leave them empty or duplicated. This
module gives every node a unique name. It renames nothing that is already
unique and does not touch value names, so the graph's semantics are
unchanged.
"""

from __future__ import annotations

from collections import Counter

import onnx

__all__ = ["ensure_unique_node_names"]


def ensure_unique_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` with every main-graph node carrying a unique, non-empty name.

    Parameters
    ----------
    model : onnx.ModelProto
        The model to check. It is returned unchanged (same object) when its
        node names are already unique; otherwise a renamed copy is returned and
        the argument is left as it was.

    Returns
    -------
    onnx.ModelProto
        A model whose nodes have unique names.
    """
    names = [node.name for node in model.graph.node]
    if all(names) and len(set(names)) == len(names):
        return model
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    counts = Counter(names)
    taken = {name for name in names if name and counts[name] == 1}
    for index, node in enumerate(renamed.graph.node):
        if node.name and node.name in taken:
            continue
        base = f"{node.name or node.op_type}_{index}"
        candidate, suffix = base, 0
        while candidate in taken:
            suffix += 1
            candidate = f"{base}_{suffix}"
        node.name = candidate
        taken.add(candidate)
    return renamed
