"""The main job on the built-in model: export, check with onnxruntime, compile with TVM, compare,
then generate text with a with-past export.

``bitnet-tvm demo`` runs :func:`run_demo`.  The built-in model is a small byte-level a4.8 BitNet
trained on English quotations (:mod:`bitnet_tvm.train`, :mod:`bitnet_tvm.model.builtin`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEMO_PROMPT", "builtin_model", "run_demo"]

#: Prompt of the demo's generation step (byte-level tokenizer).
DEMO_PROMPT = "Love is"

log = logging.getLogger(__name__)


def builtin_model(scheme: str = "a4.8", seed: int = 0) -> Any:
    """The built-in model: the trained byte-level a4.8 BitNet shipped in ``bitnet_tvm/assets``.

    Its ternary weights come as frozen float codes (:func:`~bitnet_tvm.model.builtin.
    load_builtin_model` with ``form="ternary"``), which export with any ``weights`` form.  A
    ``scheme`` other than ``a4.8`` that also has ternary weights switches its activation
    quantizers (:meth:`~bitnet_tvm.model.BitNetForCausalLM.set_scheme`; the weights were trained
    for a4.8).  When the asset is missing, or ``scheme`` has float weights, the model is the
    ``tiny`` config with random weights drawn from ``seed`` (which the trained model ignores).
    """
    from bitnet_tvm.model import BitNetForCausalLM, get_config
    from bitnet_tvm.model.builtin import builtin_asset_available, load_builtin_model
    from bitnet_tvm.schemes import WeightFormat, get_scheme

    if builtin_asset_available() and get_scheme(scheme).weight is WeightFormat.TERNARY:
        model = load_builtin_model(form="ternary")
        return model.set_scheme(scheme) if scheme != model.config.scheme else model
    log.warning("using a random tiny %s model (no trained built-in model for it)", scheme)
    return BitNetForCausalLM(get_config("tiny", scheme=scheme), seed=seed).eval()


def _max_rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


def run_demo(
    workdir: Path, scheme: str = "a4.8", seed: int = 0, max_new_tokens: int = 32
) -> dict[str, Any]:
    """Export the built-in model, verify it with onnxruntime, compile it for the CPU and compare;
    then export it with past key/values, compile that and generate greedily from a prompt.

    Parameters
    ----------
    workdir : Path
        Where ``model.onnx`` and the compiled artifact are written.
    scheme : str
        Quantization scheme preset of the built-in model.
    seed : int
        Seed of its random weights.
    max_new_tokens : int
        Tokens generated from :data:`DEMO_PROMPT`.

    Returns
    -------
    dict
        What was done and measured (paths, errors, timings, the compile report, the generated
        text and decode tokens/s).
    """
    import onnxruntime as ort

    from bitnet_tvm.compiler import compile_model
    from bitnet_tvm.export import export_onnx
    from bitnet_tvm.runtime import load

    workdir.mkdir(parents=True, exist_ok=True)
    model = builtin_model(scheme, seed)
    log.info("[demo 1/6] exporting the built-in %s model to ONNX", scheme)
    onnx_path = export_onnx(model, workdir / "model.onnx", verify=True)

    log.info("[demo 2/6] compiling for the CPU with TVM")
    start = time.perf_counter()
    compiled = compile_model(onnx_path, target="llvm")
    compile_s = time.perf_counter() - start

    log.info("[demo 3/6] comparing TVM with onnxruntime")
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model.config.vocab_size, size=(2, 7), dtype=np.int64)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = session.run(["logits"], {"input_ids": ids})[0]
    got = compiled.run(["logits"], {"input_ids": ids})[0]
    rel = _max_rel_err(got, want)

    log.info("[demo 4/6] saving and reloading the artifact")
    artifact = compiled.save(workdir / "model.bitnet")
    reloaded = load(artifact).run(["logits"], {"input_ids": ids})[0]
    log.info("compile report:\n%s", compiled.report)
    generation = _generate(model, workdir, max_new_tokens)
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
        **generation,
    }


def _generate(model: Any, workdir: Path, max_new_tokens: int) -> dict[str, Any]:
    """Export ``model`` with past key/values, compile it and generate from the demo prompt."""
    from bitnet_tvm.compiler import compile_model
    from bitnet_tvm.export import export_onnx
    from bitnet_tvm.generate import Generator
    from bitnet_tvm.tokenizer import ByteTokenizer

    log.info("[demo 5/6] exporting and compiling the model with past key/values")
    onnx_path = export_onnx(model, workdir / "model_past.onnx", with_past=True, verify=True)
    compiled = compile_model(onnx_path, target="llvm", model_info=model.config.to_dict())
    artifact = compiled.save(workdir / "model_past.bitnet")

    log.info("[demo 6/6] generating %d tokens greedily", max_new_tokens)
    generator = Generator(compiled)
    tokenizer = ByteTokenizer(generator.vocab_size)
    result = generator.generate(tokenizer.encode(DEMO_PROMPT), max_new_tokens=max_new_tokens)
    tokens = result.tokens[0, : result.lengths[0]].tolist()
    return {
        "generation_artifact": str(artifact),
        "prompt": DEMO_PROMPT,
        "generated_tokens": len(tokens),
        "generated_text": tokenizer.decode(tokens),
        "prefill_ms": round(1e3 * result.prefill_seconds, 2),
        "decode_tokens_per_second": round(result.decode_tokens_per_second, 1),
    }
