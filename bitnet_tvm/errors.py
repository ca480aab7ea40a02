"""Exceptions of bitnet-tvm that carry a message meant for the user."""

from __future__ import annotations

__all__ = ["BitnetError", "ModelImportError", "UnsupportedGraphError"]


class BitnetError(Exception):
    """Base class: an error the user can act on (bad input, unsupported model, missing file)."""


class ModelImportError(BitnetError, ValueError):
    """An ONNX model could not be read or imported; the message names the file or node."""


class UnsupportedGraphError(BitnetError, ValueError):
    """A graph holds a construct the compiler cannot handle; the message names the node/layer."""
