"""Install our converters into the TVM ONNX frontend for the duration of one import.

The frontend has no public hook for custom converters. Both
``ONNXGraphImporter._convert_operator`` and ``_check_for_unsupported_ops`` call
the module-level function ``onnx_frontend._get_convert_map()`` each time they
need it. :func:`patched_frontend` swaps that function for one that returns
the frontend's map, with :data:`~bitnet_tvm.frontend.converters.CONVERTER_OVERRIDES`
merged in. Every converter is wrapped so that

* a failure is re-raised as :class:`~bitnet_tvm.frontend.errors.ConversionError`
  that names the ONNX node, its op type and the types of its inputs, and
* a result whose shape was lost gets the shape the graph declares, via
  :class:`~bitnet_tvm.frontend.shape_recovery.DeclaredShapes`.

The swap is process-global, so a lock serialises imports, and the original
function is restored on exit, even on error. No file in site-packages is
modified.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as _fe

from .converters import CONVERTER_OVERRIDES
from .errors import ConversionError, OnnxImportError
from .shape_recovery import DeclaredShapes

__all__ = ["convert_map", "patched_frontend"]

_LOCK = threading.RLock()


def convert_map() -> dict[str, type[_fe.OnnxOpConverter]]:
    """Return the frontend's convert map with our overrides merged in.

    Returns
    -------
    dict of str to type
        ONNX op type -> converter class.
    """
    return {**_fe._get_convert_map(), **CONVERTER_OVERRIDES}


def _describe(value: Any) -> str:
    """Describe one converter input for error messages."""
    if value is None:
        return "<absent>"
    if isinstance(value, relax.ShapeExpr):
        return f"shape value {list(value.values)}"
    if isinstance(value, relax.Expr) and tvm.ir.is_prim_expr(value):
        return f"symbolic scalar {value}"
    ty = getattr(value, "ty", None)
    return str(ty) if ty is not None else type(value).__name__


class _ImportSession:
    """Per-import state shared by the wrapped converters."""

    def __init__(self, graph: onnx.GraphProto, recover_shapes: bool) -> None:
        self.nodes = {node.name: node for node in graph.node}
        self.shapes = DeclaredShapes(graph) if recover_shapes else None


class _WrappedConverter:
    """Stand-in for a converter class: same ``get_converter`` protocol, plus our checks."""

    def __init__(self, op_type: str, cls: type[_fe.OnnxOpConverter], session: _ImportSession):
        self._op_type = op_type
        self._cls = cls
        self._session = session

    def get_converter(self, opset: int) -> Callable[..., Any]:
        impl = self._cls.get_converter(opset)
        op_type, session = self._op_type, self._session

        def convert(bb: relax.BlockBuilder, inputs: list, attr: dict, params: list) -> Any:
            name = attr["tvm_custom"]["name"]
            try:
                out = impl(bb, inputs, attr, params)
                if isinstance(out, relax.Expr):
                    out = bb.normalize(out)
            except OnnxImportError:
                raise
            except Exception as err:  # re-raised with the node's name and op type
                described = ", ".join(_describe(x) for x in inputs)
                raise ConversionError(
                    f"ONNX node {name!r} (op {op_type}, opset {opset}) could not be converted: "
                    f"{type(err).__name__}: {err}. Inputs: [{described}]"
                ) from err
            node = session.nodes.get(name)
            if session.shapes is not None and node is not None and len(node.output) == 1:
                out = session.shapes.recover(bb, out, node.output[0], params[0])
            return out

        return convert


@contextlib.contextmanager
def patched_frontend(graph: onnx.GraphProto, *, recover_shapes: bool = True) -> Iterator[None]:
    """Route the TVM ONNX frontend through our converters while the context is open.

    Parameters
    ----------
    graph : onnx.GraphProto
        The graph about to be imported. Node names must be unique (see
        :func:`bitnet_tvm.frontend.graph_cleanup.clean_graph`).
    recover_shapes : bool, optional
        Restore lost shapes from the graph's value info (default ``True``).

    Yields
    ------
    None
    """
    session = _ImportSession(graph, recover_shapes)
    with _LOCK:
        original = _fe._get_convert_map
        merged = {**original(), **CONVERTER_OVERRIDES}
        wrapped = {op: _WrappedConverter(op, cls, session) for op, cls in merged.items()}
        _fe._get_convert_map = lambda: wrapped
        try:
            yield
        finally:
            _fe._get_convert_map = original
