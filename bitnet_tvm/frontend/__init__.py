"""ONNX -> Relax import for BitNet / LLaMA-style models with symbolic batch and sequence.

Public entry point: :func:`import_onnx`. See :mod:`bitnet_tvm.frontend.converters`
for the frontend converters that lose symbolic shapes on dynamo exports and how
they are replaced.
"""

from .errors import (
    ConversionError,
    MalformedModelError,
    MissingExternalDataError,
    OnnxImportError,
    UnsupportedOperatorError,
    UnsupportedOpsetError,
)
from .onnx_import import import_onnx, symbolic_input_shapes
from .validation import MIN_OPSET

__all__ = [
    "MIN_OPSET",
    "ConversionError",
    "MalformedModelError",
    "MissingExternalDataError",
    "OnnxImportError",
    "UnsupportedOperatorError",
    "UnsupportedOpsetError",
    "import_onnx",
    "symbolic_input_shapes",
]
