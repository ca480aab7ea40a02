"""bitnet-tvm: a TVM compiler plugin that runs BitNet 1-bit LLMs fast.

The public API is imported lazily so that ``import bitnet_tvm`` stays cheap (TVM and torch are
imported only by the parts that need them).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "QuantScheme": "bitnet_tvm.schemes",
    "get_scheme": "bitnet_tvm.schemes",
    "list_schemes": "bitnet_tvm.schemes",
    "export_onnx": "bitnet_tvm.export",
    "BitNetConfig": "bitnet_tvm.model",
    "BitNetForCausalLM": "bitnet_tvm.model",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bitnet_tvm' has no attribute {name!r}")
