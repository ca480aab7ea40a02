"""The paper's claims as benchmark columns: memory vs FP16, speed vs full precision, a4.8 vs b1.58.

Memory (bytes, from shapes and the artifact; nothing here is timed):

* BitLinear weights: FP16 (2 bytes per weight) against the ternary codes packed at 2 bits
  (``2bit`` layout, 4 codes per byte) and at 1.6 bits (``base3``, 5 trits per byte), from
  :func:`bitnet_tvm.schedules.layouts.packed_shape` of every fused operator's ``N x K`` (codes only:
  the per-tensor scale is 4 bytes per matrix); ``measured`` is the packed weight bytes the
  compiled artifact actually holds.
* KV cache per token: FP16 K and V against 3-bit (and 4-bit) codes packed as
  :func:`bitnet_tvm.reference.pack_kv` does (``kv_packed_width`` bytes per token and head) plus a
  float32 scale per token and head; ``measured`` is the artifact's cache (its past inputs).
* Whole model: the FP16 size of every weight (half the float32 size of the ONNX initializers,
  int8 codes counted as float32) against the compiled artifact's parameter bytes.

Speed: ratios of decode tokens/s and of prefill latency between backends of the same run, for
the transformer layers (the ``layers`` variant) and the whole model (``full``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bitnet_tvm.reference import kv_packed_width
from bitnet_tvm.schedules.layouts import packed_shape

__all__ = ["TARGETS", "memory_claims", "speed_claims"]

#: The issue's targets (CPU): decode >= 6x onnxruntime fp32 on the layers; BitLinear weights
#: >= 9.5x smaller than FP16 at 1.6 bits; KV cache >= 4.9x smaller at 3 bits.
TARGETS = {
    "decode_layers_vs_onnxruntime": 6.0,
    "bitlinear_weights_base3_vs_fp16": 9.5,
    "kv_3bit_vs_fp16": 4.9,
}

_KV_SCALE_BYTES = 4  # float32 scale per (token, head)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return float(a) / float(b)


def memory_claims(
    config: Any, artifact_info: dict[str, Any], fp32_model_bytes: int
) -> dict[str, Any]:
    """Memory vs FP16 of the BitLinear weights, the KV cache and the whole model.

    Parameters
    ----------
    config : BitNetConfig
        The full model's config.
    artifact_info : dict
        :func:`bitnet_tvm.cli.artifact_info` of the compiled a4.8 artifact of the full model.
    fp32_model_bytes : int
        Float32 bytes of all the model's weights.
    """
    shapes = [(layer["n"], layer["k"]) for layer in artifact_info["layers"]]
    fp16 = sum(2 * n * k for n, k in shapes)
    two_bit = sum(int(np.prod(packed_shape(n, k, "2bit"))) for n, k in shapes)
    base3 = sum(int(np.prod(packed_shape(n, k, "base3"))) for n, k in shapes)
    packed = artifact_info["params"].get("packed ternary weights (uint8)", {}).get("bytes", 0)
    heads = 2 * config.num_hidden_layers * config.num_key_value_heads  # K and V rows per token
    dim = config.head_dim
    kv_fp16 = heads * dim * 2
    kv_bits = {bits: heads * (kv_packed_width(bits, dim) + _KV_SCALE_BYTES) for bits in (3, 4)}
    kv_measured = artifact_info["kv_cache_bytes_per_token"]
    model_fp16 = fp32_model_bytes // 2
    return {
        "bitlinear_weights": {
            "fp16_bytes": fp16,
            "packed_2bit_bytes": two_bit,
            "packed_base3_bytes": base3,
            "measured_artifact_bytes": packed,
            "vs_fp16_2bit": _ratio(fp16, two_bit),
            "vs_fp16_base3": _ratio(fp16, base3),
            "vs_fp16_measured": _ratio(fp16, packed),
        },
        "kv_cache_per_token": {
            "fp16_bytes": kv_fp16,
            "kv3_bytes": kv_bits[3],
            "kv4_bytes": kv_bits[4],
            "measured_artifact_bytes": kv_measured,
            "vs_fp16_kv3": _ratio(kv_fp16, kv_bits[3]),
            "vs_fp16_kv4": _ratio(kv_fp16, kv_bits[4]),
            "vs_fp16_measured": _ratio(kv_fp16, kv_measured),
        },
        "whole_model": {
            "fp16_bytes": model_fp16,
            "measured_artifact_bytes": artifact_info["param_bytes"],
            "vs_fp16_measured": _ratio(model_fp16, artifact_info["param_bytes"]),
        },
    }


def speed_claims(backends: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speed ratios from the per-backend results (``decode_tokens_per_second`` and
    ``prefill_seconds`` of each variant); None where a backend was not run."""

    def get(name: str, variant: str, key: str) -> float | None:
        return backends.get(name, {}).get(variant, {}).get(key)

    out: dict[str, Any] = {}
    pairs = {
        "vs_onnxruntime_fp32": ("bitnet_a4.8", "onnxruntime"),
        "vs_tvm_fp32": ("bitnet_a4.8", "tvm_fp32"),
        "vs_pytorch": ("bitnet_a4.8", "pytorch"),
        "a4.8_vs_b1.58": ("bitnet_a4.8", "bitnet_b1.58"),
    }
    for claim, (new, base) in pairs.items():
        for variant in ("layers", "full"):
            out[f"{claim}_decode_{variant}"] = _ratio(
                get(new, variant, "decode_tokens_per_second"),
                get(base, variant, "decode_tokens_per_second"),
            )
            out[f"{claim}_prefill_{variant}"] = _ratio(
                get(base, variant, "prefill_seconds"), get(new, variant, "prefill_seconds")
            )
    return out
