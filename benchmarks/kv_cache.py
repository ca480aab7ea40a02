"""Packed 3/4-bit KV cache: accuracy against the fp cache and PyTorch, and bytes per token.

On the built-in trained a4.8 model (4 layers, MHA, head_dim 64) exported once with past
key/values, compiled three times: fp32 cache (``a4.8``), ``a4.8-kv4`` and ``a4.8-kv3`` (BOS at 4
bits).  The held-out text is run token by token through the decode loop (prefill of the first
token, then one step per token with the cache on the device), so every logit reads the cache.
Reported per scheme:

* ``vs_torch``: max |compiled - PyTorch fake-quant model| / max |PyTorch|, over all steps;
* ``vs_fp_cache``: the same against the compiled fp-cache model (the cost of quantizing K/V);
* perplexity of the held-out text, and the share of greedy next tokens equal to the fp cache's;
* KV bytes per token (all layers, K and V, float32 scales counted) vs fp16, for this model and
  for the BitNet 2B4T shape (30 layers, 5 KV heads, head_dim 128).

    python benchmarks/kv_cache.py [--tokens 128] [--mcpu x86-64-v3] [--out benchmarks/results]

Writes ``kv_cache.json`` (machine, TVM version, command).  Timing is not measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import tvm

import bitnet_tvm
from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.export import export_onnx
from bitnet_tvm.generate import Generator
from bitnet_tvm.machine import cpu_model
from bitnet_tvm.model.builtin import load_builtin_model, load_heldout_sample
from bitnet_tvm.relay_passes.quantize_kv_cache import KVCacheInfo

SCHEMES = ("a4.8", "a4.8-kv4", "a4.8-kv3")


def compiled_logits(compiled: bitnet_tvm.CompiledModel, ids: np.ndarray) -> np.ndarray:
    """``[T, vocab]`` logits of ``ids`` fed one token per step through the device cache."""
    gen = Generator(compiled)
    outputs = gen._forward(ids[None, :1], gen._empty_cache(1))
    rows = [outputs[0].numpy()[0, -1]]
    for token in ids[1:]:
        outputs = gen._forward(np.array([[token]], np.int64), gen._next_cache(outputs))
        rows.append(outputs[0].numpy()[0, -1])
    return np.stack(rows)


@torch.no_grad()
def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    """The PyTorch model's logits, token by token with its own (fake-quantized) cache."""
    past, rows = None, []
    for token in ids:
        logits, past = model(torch.tensor([[int(token)]]), past)
        rows.append(logits[0, -1].numpy())
    return np.stack(rows)


def perplexity(logits: np.ndarray, ids: np.ndarray) -> float:
    z = logits[:-1].astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(np.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean()))


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--mcpu", default=None, help="LLVM CPU to compile for (default: host)")
    args = parser.parse_args()
    ids = np.frombuffer(load_heldout_sample(), np.uint8)[: args.tokens].astype(np.int64)
    model = load_builtin_model(form="ternary")
    target = "llvm" if args.mcpu is None else {"kind": "llvm", "mcpu": args.mcpu}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "builtin.onnx", with_past=True, verify=False)
        logits = {}
        for scheme in SCHEMES:
            start = time.perf_counter()
            print(f"compiling {scheme} ...", file=sys.stderr)
            compiled = bitnet_tvm.compile(path, target=target, scheme=scheme)
            logits[scheme] = compiled_logits(compiled, ids)
            want = torch_logits(model.set_scheme(scheme), ids)
            results[scheme] = {
                "vs_torch": rel(logits[scheme], want),
                "kv_cache": compiled.metadata.get("kv_cache"),
                "perplexity": perplexity(logits[scheme], ids),
                "torch_perplexity": perplexity(want, ids),
                "seconds": time.perf_counter() - start,
            }
    fp = logits["a4.8"]
    for scheme in SCHEMES:
        results[scheme]["vs_fp_cache"] = rel(logits[scheme], fp)
        agree = np.argmax(logits[scheme], -1) == np.argmax(fp, -1)
        results[scheme]["greedy_agreement_with_fp_cache"] = float(agree.mean())
    shape_2b4t = {
        f"kv{bits}": KVCacheInfo(bits, 4 if bits == 3 else None, 5, 128, 30).bytes_per_token()
        for bits in (4, 3)
    }
    report = {
        "machine": cpu_model(),
        "tvm_version": tvm.__version__,
        "command": " ".join(sys.argv),
        "tokens": len(ids),
        "schemes": results,
        "bytes_per_token_2b4t": shape_2b4t,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_open(args.out / "kv_cache.json") as f:
        f.write(json.dumps(report, indent=1))
    for scheme, r in results.items():
        per = (r["kv_cache"] or {}).get("bytes_per_token", {})
        print(
            f"{scheme:<10} vs torch {r['vs_torch']:.2e}  vs fp cache {r['vs_fp_cache']:.2e}  "
            f"ppl {r['perplexity']:.4f} (torch {r['torch_perplexity']:.4f})  "
            f"greedy agree {r['greedy_agreement_with_fp_cache']:.3f}  "
            f"x fp16 {per.get('vs_fp16', 1.0):.2f}"
        )
    for name, per in shape_2b4t.items():
        print(
            f"2B4T {name}: {per['packed']} B/token vs fp16 {per['fp16']} -> {per['vs_fp16']:.2f}x "
            f"({per['vs_fp16_without_scales']:.2f}x without scales; scales "
            f"{100 * per['scale_share']:.1f}% of the bytes)"
        )
    print(f"wrote {args.out / 'kv_cache.json'}")


if __name__ == "__main__":
    main()
