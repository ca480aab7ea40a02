"""Exception types raised by the ONNX importer.

All of them derive from :class:`ValueError` so that callers can catch one
type for "this ONNX model cannot be imported", while the subclasses let tests
and tools tell the causes apart.
"""

from __future__ import annotations


class OnnxImportError(ValueError):
    """An ONNX model could not be read, validated or converted to Relax."""


class MalformedModelError(OnnxImportError):
    """The file is not a parsable ONNX ``ModelProto``."""


class UnsupportedOpsetError(OnnxImportError):
    """The model's default-domain opset is older than the importer supports."""


class UnsupportedOperatorError(OnnxImportError):
    """A node uses an operator that has no Relax converter."""


class MissingExternalDataError(OnnxImportError, FileNotFoundError):
    """An initializer stored as external data points at a file that does not exist."""


class ConversionError(OnnxImportError):
    """A converter failed on one node; the message names the node and its op type."""
