"""The main job on the built-in model: export, check with onnxruntime, compile with TVM, compare.

``bitnet-tvm demo`` runs :func:`run_demo`.  The built-in model is the ``tiny`` config with
seeded random weights in the a4.8 scheme (a trained model replaces it in a later release).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["builtin_model", "run_demo"]

log = logging.getLogger(__name__)


def builtin_model(scheme: str = "a4.8", seed: int = 0) -> Any:
    """The built-in model: config ``tiny`` with seeded random weights."""
    from bitnet_tvm.model import BitNetForCausalLM, get_config

    return BitNetForCausalLM(get_config("tiny", scheme=scheme), seed=seed).eval()


def _max_rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


def run_demo(workdir: Path, scheme: str = "a4.8", seed: int = 0) -> dict[str, Any]:
    """Export the built-in model, verify it with onnxruntime, compile it for the CPU and compare.

    Parameters
    ----------
    workdir : Path
        Where ``model.onnx`` and the compiled artifact are written.
    scheme : str
        Quantization scheme preset of the built-in model.
    seed : int
        Seed of its random weights.

    Returns
    -------
    dict
        What was done and measured (paths, errors, timings, the compile report).
    """
    import onnxruntime as ort

    from bitnet_tvm.compiler import compile_model
    from bitnet_tvm.export import export_onnx
    from bitnet_tvm.runtime import load

    workdir.mkdir(parents=True, exist_ok=True)
    model = builtin_model(scheme, seed)
    log.info("[demo 1/4] exporting the built-in %s model to ONNX", scheme)
    onnx_path = export_onnx(model, workdir / "model.onnx", verify=True)

    log.info("[demo 2/4] compiling for the CPU with TVM")
    start = time.perf_counter()
    compiled = compile_model(onnx_path, target="llvm")
    compile_s = time.perf_counter() - start

    log.info("[demo 3/4] comparing TVM with onnxruntime")
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model.config.vocab_size, size=(2, 7), dtype=np.int64)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = session.run(["logits"], {"input_ids": ids})[0]
    got = compiled.run(["logits"], {"input_ids": ids})[0]
    rel = _max_rel_err(got, want)

    log.info("[demo 4/4] saving and reloading the artifact")
    artifact = compiled.save(workdir / "model.bitnet")
    reloaded = load(artifact).run(["logits"], {"input_ids": ids})[0]
    log.info("compile report:\n%s", compiled.report)
    return {
        "onnx": str(onnx_path),
        "artifact": str(artifact),
        "scheme": scheme,
        "compile_seconds": round(compile_s, 2),
        "logits_max_rel_err_vs_onnxruntime": rel,
        "argmax_agreement": float(np.mean(got.argmax(-1) == want.argmax(-1))),
        "reloaded_equal": bool(np.array_equal(reloaded, got)),
        "fused_operators": len(compiled.report.layers),
        "unfused_matmuls": compiled.report.unfused_matmuls,
    }
