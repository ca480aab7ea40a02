"""Import ONNX exports of LLaMA-style BitNet models into a Relax ``IRModule``.

:func:`import_onnx` wraps ``tvm.relax.frontend.onnx.from_onnx`` so that dynamo
exports (``torch.onnx.export(..., dynamo=True)``) with symbolic batch,
sequence and KV-cache lengths import with those lengths kept symbolic. One
compiled module then serves every batch size, prompt length and decode step.

The pipeline is:

1. load and validate (:mod:`.validation`): a clear error for a corrupt file,
   a missing external-data file, an opset older than 13 or an op without a
   converter;
2. clean up (:mod:`.graph_cleanup`): give every node a unique name and
   rewrite ``Constant`` attribute forms the frontend cannot parse;
3. convert with the frontend while :func:`.hooks.patched_frontend` is active:
   our ``Range``/``Reshape``/``Expand`` converters (:mod:`.converters`
   explains which frontend converter loses the shape and why), errors that
   name the node, and recovery of lost shapes from the graph's value info
   (:mod:`.shape_recovery`).

Nothing in site-packages is edited; the frontend is restored after each call.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import tvm
from tvm.relax.frontend.onnx import from_onnx

from .graph_cleanup import clean_graph
from .hooks import convert_map, patched_frontend
from .validation import (
    check_external_data,
    check_operators,
    check_opset,
    load_model,
)

__all__ = ["import_onnx", "symbolic_input_shapes"]


def _resolve_model(
    model_or_path: str | os.PathLike[str] | onnx.ModelProto,
    external_data_dir: str | os.PathLike[str] | None,
) -> tuple[onnx.ModelProto, str]:
    if isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
        source = f"<ModelProto {model.graph.name or 'unnamed'}>"
        external = any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
        )
        if external:
            if external_data_dir is None:
                raise ValueError(
                    f"{source}: initializers are stored as external data that is not loaded; "
                    "pass external_data_dir=<folder of the .onnx file> or the file path."
                )
            check_external_data(model, external_data_dir, source=source)
            loaded = onnx.ModelProto()
            loaded.CopyFrom(model)
            onnx.load_external_data_for_model(loaded, str(external_data_dir))
            model = loaded
        return model, source
    if isinstance(model_or_path, str | os.PathLike):
        return load_model(model_or_path), str(Path(model_or_path))
    raise TypeError(
        "import_onnx expects a path (str or os.PathLike) or an onnx.ModelProto, got "
        f"{type(model_or_path).__name__}."
    )


def import_onnx(
    model_or_path: str | os.PathLike[str] | onnx.ModelProto,
    *,
    keep_params_in_input: bool = False,
    shape_dict: dict[str, list] | None = None,
    dtype_dict: str | dict[str, str] | None = None,
    recover_shapes: bool = True,
    external_data_dir: str | os.PathLike[str] | None = None,
    quiet: bool = True,
) -> tvm.IRModule:
    """Convert an ONNX model to a Relax ``IRModule`` whose dynamic dimensions stay symbolic.

    Parameters
    ----------
    model_or_path : str, os.PathLike or onnx.ModelProto
        An ``.onnx`` file (its ``.onnx.data`` next to it) or a loaded model.
    keep_params_in_input : bool, optional
        If ``True``, initializers become trailing parameters of ``main`` and their
        values are kept in ``mod["main"].attrs["params"]``; if ``False`` (default)
        they are folded in as constants.
    shape_dict : dict of str to list, optional
        Overrides for graph-input shapes (ints or ``tvm.tirx.Var``). By default the
        model's own shapes are used, named dimensions becoming shape variables.
    dtype_dict : str or dict of str to str, optional
        Overrides for graph-input dtypes. By default the model's dtypes are used.
    recover_shapes : bool, optional
        Restore shapes a converter lost from the model's ``value_info`` with
        run-time-checked match-casts (default ``True``).
    external_data_dir : str or os.PathLike, optional
        Folder of the external-data files when ``model_or_path`` is a
        ``ModelProto`` loaded without its data.
    quiet : bool, optional
        Silence the frontend's warnings (input renaming, onnx checker) (default ``True``).

    Returns
    -------
    tvm.IRModule
        Module with a ``main`` function that takes the graph inputs in order.

    Raises
    ------
    FileNotFoundError
        If the model file does not exist.
    bitnet_tvm.frontend.errors.OnnxImportError
        A ``ValueError`` subclass for a malformed file, a missing external-data
        file, an opset older than 13, an unsupported op (naming the node) or a
        converter failure (naming the node and op type).
    TypeError
        If ``model_or_path`` has the wrong type.
    """
    model, source = _resolve_model(model_or_path, external_data_dir)
    check_opset(model, source=source)
    check_operators(model, set(convert_map()), source=source)
    model = clean_graph(model)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        with patched_frontend(model.graph, recover_shapes=recover_shapes):
            return from_onnx(
                model,
                shape_dict=shape_dict,
                dtype_dict=dtype_dict,
                keep_params_in_input=keep_params_in_input,
            )


def symbolic_input_shapes(mod: tvm.IRModule, func_name: str = "main") -> dict[str, list]:
    """List the shapes of a function's parameters, symbolic dimensions as names.

    Parameters
    ----------
    mod : tvm.IRModule
        A module returned by :func:`import_onnx`.
    func_name : str, optional
        The function to inspect (default ``"main"``).

    Returns
    -------
    dict of str to list
        Parameter name -> list of ints (static dims) and strings (symbolic dims).
    """
    shapes: dict[str, list] = {}
    for param in mod[func_name].params:
        shape = getattr(param.ty, "shape", None)
        if shape is None:
            shapes[param.name] = None
            continue
        shapes[param.name] = [
            int(d) if isinstance(d, tvm.tirx.IntImm) else str(d) for d in shape.values
        ]
    return shapes
