"""bitnet-tvm: a TVM compiler plugin that runs BitNet 1-bit LLMs fast.

The public API is imported lazily so that ``import bitnet_tvm`` stays cheap (TVM and torch are
imported only by the parts that need them).
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

# TVM sizes its CPU thread pool once, at the first parallel call, to half the CPUs unless
# TVM_NUM_THREADS is set (1 worker on a 2-core VM); compiled models should use every core
# this process may run on.  A value the user set is kept.
os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))

__version__ = "0.1.0"

# public name -> (module that defines it, its name there)
_LAZY = {
    "compile": ("bitnet_tvm.compiler", "compile_model"),
    "load": ("bitnet_tvm.runtime", "load"),
    "CompiledModel": ("bitnet_tvm.runtime", "CompiledModel"),
    "Generator": ("bitnet_tvm.generate", "Generator"),
    "GenerationConfig": ("bitnet_tvm.generate", "GenerationConfig"),
    "QuantScheme": ("bitnet_tvm.schemes", "QuantScheme"),
    "get_scheme": ("bitnet_tvm.schemes", "get_scheme"),
    "list_schemes": ("bitnet_tvm.schemes", "list_schemes"),
    "export_onnx": ("bitnet_tvm.export", "export_onnx"),
    "BitNetConfig": ("bitnet_tvm.model", "BitNetConfig"),
    "BitNetForCausalLM": ("bitnet_tvm.model", "BitNetForCausalLM"),
    "tune": ("bitnet_tvm.tuning.tuner", "tune"),
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'bitnet_tvm' has no attribute {name!r}")
