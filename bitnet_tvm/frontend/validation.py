"""Load ONNX models and reject the ones the importer cannot handle, with clear messages.

The TVM frontend reports these problems badly: a corrupt file is a protobuf
``DecodeError`` (or, for an empty file, no error at all and an empty graph); a
missing ``.onnx.data`` file is an ``onnx`` checker message that hides which
file was expected where; an unsupported op is listed without the node that
uses it; and an old opset fails somewhere inside a converter. Each check here
raises a subclass of :class:`~bitnet_tvm.frontend.errors.OnnxImportError`
(a ``ValueError``) that names the file, node or op concerned.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from .errors import (
    MalformedModelError,
    MissingExternalDataError,
    UnsupportedOperatorError,
    UnsupportedOpsetError,
)

__all__ = [
    "MIN_OPSET",
    "check_external_data",
    "check_operators",
    "check_opset",
    "default_opset",
    "load_model",
]

MIN_OPSET = 13
"""Oldest default-domain opset accepted.

From opset 13 on, ``Squeeze``, ``Unsqueeze``, ``ReduceSum`` and ``Split`` take
their axes as inputs, which is the form our converters and tests cover.
torch exports are opset 17-20.
"""

_DEFAULT_DOMAINS = ("", "ai.onnx")
_BUILTIN_OPS = {"Constant", "If"}


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX file, check it and load its external data.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file. External tensors are resolved relative to its folder.

    Returns
    -------
    onnx.ModelProto
        The model with all initializer data in memory.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    MalformedModelError
        If the file is not a parsable ONNX model with a graph.
    MissingExternalDataError
        If an external-data file referenced by an initializer is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model file not found: {str(path)!r}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise MalformedModelError(
            f"{str(path)!r} is not a valid ONNX model (protobuf parse failed: {err})"
        ) from err
    if model.ir_version < 3 or not model.HasField("graph"):
        raise MalformedModelError(
            f"{str(path)!r} is not a valid ONNX model: it has IR version "
            f"{model.ir_version} and {'a' if model.HasField('graph') else 'no'} graph "
            "(expected IR version >= 3 and a graph)."
        )
    check_external_data(model, path.parent, source=str(path))
    if _uses_external_data(model):
        onnx.load_external_data_for_model(model, str(path.parent))
    return model


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def check_external_data(
    model: onnx.ModelProto, base_dir: str | os.PathLike[str], *, source: str = "<model>"
) -> None:
    """Check that every external-data file the model's initializers reference exists.

    Parameters
    ----------
    model : onnx.ModelProto
        The model, loaded without its external data.
    base_dir : str or os.PathLike
        The folder that external ``location`` entries are relative to.
    source : str, optional
        How to name the model in messages.

    Raises
    ------
    MissingExternalDataError
        Naming the first missing file, the tensor that needs it and where it was looked for.
    """
    base = Path(base_dir)
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location")
        if not location:
            raise MalformedModelError(
                f"{source}: initializer {tensor.name!r} is marked external but has no location."
            )
        full = base / location
        if not full.is_file():
            raise MissingExternalDataError(
                f"{source}: external data file {location!r} for initializer {tensor.name!r} "
                f"is missing (looked for {str(full)!r}). Keep the .onnx file and its data "
                "file in the same folder."
            )


def default_opset(model: onnx.ModelProto) -> int | None:
    """Return the model's ``ai.onnx`` opset version, or ``None`` when it declares none.

    Parameters
    ----------
    model : onnx.ModelProto
        The model.

    Returns
    -------
    int or None
        The default-domain opset version.
    """
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    return None


def check_opset(model: onnx.ModelProto, *, source: str = "<model>") -> int:
    """Check that the model's default-domain opset is at least :data:`MIN_OPSET`.

    Parameters
    ----------
    model : onnx.ModelProto
        The model.
    source : str, optional
        How to name the model in messages.

    Returns
    -------
    int
        The opset version.

    Raises
    ------
    UnsupportedOpsetError
        If the opset is missing or too old.
    """
    version = default_opset(model)
    if version is None:
        raise UnsupportedOpsetError(
            f"{source}: the model declares no ai.onnx opset; expected opset >= {MIN_OPSET}."
        )
    if version < MIN_OPSET:
        raise UnsupportedOpsetError(
            f"{source}: ai.onnx opset {version} is too old; opset >= {MIN_OPSET} is required. "
            "Re-export it (torch.onnx.export(..., opset_version=18)) or upgrade it with "
            "onnx.version_converter.convert_version(model, 18)."
        )
    return version


def check_operators(
    model: onnx.ModelProto, supported: set[str] | dict, *, source: str = "<model>"
) -> None:
    """Check that every node's op type has a converter.

    Parameters
    ----------
    model : onnx.ModelProto
        The model.
    supported : set of str or dict
        Op types that can be converted (the keys of the convert map).
    source : str, optional
        How to name the model in messages.

    Raises
    ------
    UnsupportedOperatorError
        Naming the first offending node, its op type and domain, and how many
        nodes are affected in all.
    """
    bad = [
        node
        for node in model.graph.node
        if node.op_type not in supported and node.op_type not in _BUILTIN_OPS
    ]
    if not bad:
        return
    first = bad[0]
    domain = first.domain or "ai.onnx"
    kinds = sorted({f"{(n.domain or 'ai.onnx')}::{n.op_type}" for n in bad})
    raise UnsupportedOperatorError(
        f"{source}: node {first.name!r} uses op type {first.op_type!r} (domain {domain!r}), "
        f"which has no Relax converter; {len(bad)} node(s) affected, op types: {kinds}."
    )
