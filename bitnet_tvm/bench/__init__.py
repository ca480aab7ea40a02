"""``bitnet-tvm bench``: the compiled model against onnxruntime, PyTorch eager and TVM's own
build of the unrewritten graph, on the same ONNX export and prompts.

One job per module: :mod:`.workload` (model variants, exports, prompts), :mod:`.backends` (the
runners), :mod:`.measure` (timings, peak memory), :mod:`.claims` (the paper's claims as
ratios), :mod:`.harness` (:func:`run_benchmark`), :mod:`.report` (JSON, table, PNG),
:mod:`.cli` (the sub-command).

    from bitnet_tvm.bench import BenchSpec, run_benchmark
    results = run_benchmark(BenchSpec(model="2b4t", layers=4, prompt_len=64, decode_steps=32))
"""

from __future__ import annotations

from typing import Any

__all__ = ["BACKENDS", "BenchSpec", "run_benchmark"]


def __getattr__(name: str) -> Any:  # lazy: `bitnet-tvm --help` must not import torch
    if name in __all__:
        from bitnet_tvm.bench import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'bitnet_tvm.bench' has no attribute {name!r}")
