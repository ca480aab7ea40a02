"""Accuracy cost and bytes saved of the INT8 LM head on the built-in model, not a test.

Compiles the built-in a4.8 model twice (``lm_head="fp32"`` and ``"int8"``) and reports, on the
held-out sample the model's perplexity was measured on (:func:`bitnet_tvm.train.evaluate_nll`,
windows of ``max_position_embeddings`` bytes): perplexity of both, the logits' SQNR
(``10 log10(sum fp^2 / sum (fp - int8)^2)``) and the argmax agreement; and the head's bytes at
the built-in size and at BitNet-2B4T's (128256 x 2560).

    python benchmarks/int8_lm_head.py [--out benchmarks/results/int8_lm_head]

Writes JSON (machine, TVM version, command, numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import tvm

from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.compiler import compile_model
from bitnet_tvm.export import export_onnx
from bitnet_tvm.machine import cpu_model
from bitnet_tvm.model.builtin import load_builtin_model, load_heldout_sample
from bitnet_tvm.train import evaluate_nll


def head_bytes(vocab: int, hidden: int) -> dict[str, int]:
    """Bytes of the LM head weight: float32, and int8 codes + float32 row scales."""
    return {"fp32": 4 * vocab * hidden, "int8": vocab * hidden + 4 * vocab}


def accuracy() -> dict:
    """Perplexity, logits SQNR and argmax agreement of the int8 vs the fp32 head."""
    model = load_builtin_model(form="int8")
    seq = model.config.max_position_embeddings
    sample = np.frombuffer(load_heldout_sample(), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "builtin.onnx", weights="int8", verify=False)
        heads = {head: compile_model(path, lm_head=head) for head in ("fp32", "int8")}
        return _compare(model, heads, sample, seq)


def _compare(model, heads: dict, sample: np.ndarray, seq: int) -> dict:
    logits: dict[str, list[np.ndarray]] = {head: [] for head in heads}

    def forward(head: str):
        def run(ids: np.ndarray) -> np.ndarray:
            out = heads[head].run(["logits"], {"input_ids": ids})[0]
            logits[head].append(out)
            return out

        return run

    ppl = {head: evaluate_nll(forward(head), sample, seq) for head in heads}
    fp, q = (np.concatenate(logits[h]).astype(np.float64) for h in ("fp32", "int8"))
    return {
        "ppl_fp32_head": ppl["fp32"]["ppl"],
        "ppl_int8_head": ppl["int8"]["ppl"],
        "bytes_evaluated": ppl["fp32"]["bytes"],
        "logits_sqnr_db": float(10 * np.log10(np.sum(fp**2) / np.sum((fp - q) ** 2))),
        "argmax_agreement": float(np.mean(fp.argmax(-1) == q.argmax(-1))),
        "head_bytes_builtin": head_bytes(model.config.vocab_size, model.config.hidden_size),
        "head_bytes_2b4t": head_bytes(128256, 2560),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/int8_lm_head")
    args = parser.parse_args()
    result = {
        "machine": cpu_model(),
        "tvm_version": tvm.__version__,
        "command": " ".join(sys.argv),
        **accuracy(),
    }
    print(json.dumps(result, indent=2))
    with atomic_open(Path(args.out).with_suffix(".json"), "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
