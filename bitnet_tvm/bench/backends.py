"""The benchmarked backends, each running one with-past ONNX export with greedy decoding.

* ``bitnet-tvm a4.8`` / ``bitnet-tvm b1.58`` -- :func:`bitnet_tvm.compile` of the export (the
  b1.58 one re-quantizes the same graph with the b1.58 scheme), run by
  :class:`~bitnet_tvm.generate.Generator` (the KV cache stays in TVM tensors);
* ``tvm fp32`` -- ``compile_model(..., rewrite=False)``: the same import, no BitNet graph
  passes, TVM's default Relax pipeline; run by the same Generator;
* ``onnxruntime`` -- an ``InferenceSession`` of the file (CPU; the CUDA execution provider when
  onnxruntime has it); the cache goes back in as numpy arrays;
* ``pytorch`` -- the exported :class:`~bitnet_tvm.model.BitNetForCausalLM`, eager, no grad.

Compiled artifacts are built in a child process (:func:`build_artifact`) and loaded from disk,
so this process's memory measures what running a backend costs, not what compiling it did.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from bitnet_tvm.bench.child import run_in_child
from bitnet_tvm.bench.measure import Timing
from bitnet_tvm.bench.workload import Workload

__all__ = [
    "Backend",
    "CompiledBackend",
    "OrtBackend",
    "TorchBackend",
    "build_artifact",
    "fp32_kv_bytes_per_token",
    "onnx_fp32_weight_bytes",
]

log = logging.getLogger(__name__)


def fp32_kv_bytes_per_token(config: Any) -> int:
    """Bytes a float32 KV cache holds per token of one sequence (K and V, every layer)."""
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4


class Backend(ABC):
    """A model that can be timed: prefill logits and a greedy prefill + decode run.

    Attributes
    ----------
    name : str
        Label in the results.
    weight_bytes : int
        Bytes of the weights as the backend holds them.
    kv_bytes_per_token : int
        Bytes of KV cache per token of one sequence.
    """

    name: str
    weight_bytes: int
    kv_bytes_per_token: int

    @abstractmethod
    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Last-position logits ``[batch, vocab]`` of a prefill of ``ids`` (empty cache)."""

    @abstractmethod
    def generate(self, ids: np.ndarray, steps: int) -> Timing:
        """Prefill ``ids``, then ``steps`` greedy single-token steps with the KV cache."""


class _StepBackend(Backend):
    """A backend with one forward step ``(ids, cache) -> (last logits, cache)``."""

    @abstractmethod
    def _empty_cache(self, batch: int) -> Any: ...

    @abstractmethod
    def _step(self, ids: np.ndarray, cache: Any) -> tuple[np.ndarray, Any]: ...

    def logits(self, ids: np.ndarray) -> np.ndarray:
        return self._step(ids, self._empty_cache(ids.shape[0]))[0]

    def generate(self, ids: np.ndarray, steps: int) -> Timing:
        import time

        start = time.perf_counter()
        logits, cache = self._step(ids, self._empty_cache(ids.shape[0]))
        token = np.argmax(logits, axis=-1).astype(np.int64)
        prefill = time.perf_counter() - start
        tokens = [token]
        start = time.perf_counter()
        for _ in range(steps):
            logits, cache = self._step(token[:, None], cache)
            token = np.argmax(logits, axis=-1).astype(np.int64)
            tokens.append(token)
        return Timing(prefill, time.perf_counter() - start, np.stack(tokens, axis=1))


def _cache_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]


class OrtBackend(_StepBackend):
    """onnxruntime on the export (CUDA execution provider first when available)."""

    def __init__(self, workload: Workload, name: str = "onnxruntime") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(workload.onnx), options, providers=providers)
        self.providers = self.session.get_providers()
        self.name = name
        self.config = workload.config
        self._past = _cache_names(self.config.num_hidden_layers, "past")
        self.weight_bytes = onnx_fp32_weight_bytes(workload.onnx)
        self.kv_bytes_per_token = fp32_kv_bytes_per_token(self.config)

    def _empty_cache(self, batch: int) -> list[np.ndarray]:
        c = self.config
        empty = np.zeros((batch, c.num_key_value_heads, 0, c.head_dim), np.float32)
        return [empty] * len(self._past)

    def _step(self, ids: np.ndarray, cache: list[np.ndarray]) -> tuple[np.ndarray, Any]:
        out = self.session.run(
            None, {"input_ids": ids, **dict(zip(self._past, cache, strict=True))}
        )
        return out[0][:, -1], out[1:]


def onnx_fp32_weight_bytes(path: Path) -> int:
    """Initializer bytes with int8 codes counted as float32 (onnxruntime folds their ``Cast``
    into float32 initializers when it creates the session)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    total = 0
    for tensor in proto.graph.initializer:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        count = int(np.prod(tensor.dims, dtype=np.int64))
        total += count * (4 if dtype == np.int8 else dtype.itemsize)
    return total


class TorchBackend(_StepBackend):
    """The exported PyTorch model, eager, on the CPU (int8 codes, fake-quantized activations)."""

    def __init__(self, workload: Workload, name: str = "pytorch") -> None:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        self._torch = torch
        self.model = workload.model().eval()
        self.name = name
        self.config = workload.config
        self.weight_bytes = sum(
            t.numel() * t.element_size() for t in (*self.model.parameters(), *self.model.buffers())
        )
        self.kv_bytes_per_token = fp32_kv_bytes_per_token(self.config)

    def _empty_cache(self, batch: int) -> None:
        return None

    def _step(self, ids: np.ndarray, cache: Any) -> tuple[np.ndarray, Any]:
        with self._torch.no_grad():
            logits, presents = self.model(self._torch.from_numpy(ids), cache)
        return logits[:, -1].numpy(), presents


class CompiledBackend(Backend):
    """An artifact directory, loaded with :func:`bitnet_tvm.load`, run by a Generator."""

    def __init__(self, artifact: Path, name: str) -> None:
        from bitnet_tvm.cli import artifact_info
        from bitnet_tvm.generate import Generator
        from bitnet_tvm.runtime import load

        info = artifact_info(artifact)
        self.compiled = load(artifact)
        self.generator = Generator(self.compiled)
        self.name = name
        self.weight_bytes = int(info["param_bytes"])
        self.kv_bytes_per_token = int(info["kv_cache_bytes_per_token"])
        self.info = info
        self._past = {
            spec["name"]: spec for spec in self.compiled.get_inputs() if spec["name"] != "input_ids"
        }

    def logits(self, ids: np.ndarray) -> np.ndarray:
        # an empty cache: batch rows on axis 0, the symbolic past length 0, fixed axes kept
        feed: dict[str, np.ndarray] = {"input_ids": ids}
        for name, spec in self._past.items():
            dims = [d if isinstance(d, int) else 0 for d in spec["shape"][1:]]
            feed[name] = np.zeros((ids.shape[0], *dims), spec["dtype"])
        return self.compiled.run(["logits"], feed)[0][:, -1]

    def generate(self, ids: np.ndarray, steps: int) -> Timing:
        result = self.generator.generate(ids, max_new_tokens=steps + 1)
        if result.tokens.shape[1] != steps + 1:  # no stop tokens are set: cannot happen
            raise RuntimeError(f"{self.name}: generation stopped after {result.tokens.shape[1]}")
        return Timing(result.prefill_seconds, result.decode_seconds, result.tokens)


# ----------------------------------------------------------------------------- building


def _build(
    onnx_path: str,
    out: str,
    scheme: str | None,
    rewrite: bool,
    info: dict,
    target: str,
    weights: str = "2bit",
    lm_head: str = "fp32",
) -> None:
    from bitnet_tvm.compiler import compile_model

    compiled = compile_model(
        onnx_path,
        target,
        scheme=scheme,
        model_info=info,
        rewrite=rewrite,
        weights=weights,
        lm_head=lm_head,
    )
    compiled.save(out)


def build_artifact(
    workload: Workload,
    out: Path,
    *,
    scheme: str | None = None,
    rewrite: bool = True,
    target: str = "llvm",
    isolate: bool = True,
    weights: str = "2bit",
    lm_head: str = "fp32",
) -> Path:
    """Compile ``workload.onnx`` to the artifact directory ``out`` in a child process.

    ``scheme`` re-quantizes (None keeps the export's); ``rewrite=False`` is the unrewritten
    TVM build; ``weights="1.6bit"`` stores the ternary weights 5 per byte; ``lm_head="int8"``
    quantizes the LM head; ``isolate=False`` compiles in this process.  The artifact is written
    atomically (:meth:`CompiledModel.save`).

    Raises
    ------
    RuntimeError
        If the child fails (its log and traceback are on stderr).
    """
    info = workload.config.to_dict()
    if scheme is not None:
        info["scheme"] = scheme
    args = (str(workload.onnx), str(out), scheme, rewrite, info, target, weights, lm_head)
    run_in_child(
        _build, *args, what=f"building {out.name} from {workload.onnx.name}", isolate=isolate
    )
    return out
