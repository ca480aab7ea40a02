"""Generation with the packed 3/4-bit KV cache against the PyTorch fake-quant model.

One with-past export of the tiny a4.8-kv3 model (seed 0: K/V fake-quantized in the graph, BOS
at 4 bits), compiled twice: as is (3-bit cache + 4-bit BOS slot, widths read off the graph)
and with ``scheme="a4.8-kv4"`` (the same weights; the pass quantizes the cache at 4 bits from
the fake quantizer's input).  The PyTorch models of seed 0 in those schemes are the baselines.

Why token equality is sound: the compiled cache is bit-identical to PyTorch's fake-quantized
cache (asserted below, from the same codes and scales), so the logits differ by float rounding
order only (measured <= 2e-6 of their scale on these prompts), and the prompts (seed 2) keep
PyTorch's top-2 margin above ``MIN_MARGIN`` at every step (asserted before comparing).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bitnet_tvm
from bitnet_tvm import reference
from bitnet_tvm.export import export_onnx
from bitnet_tvm.generate import Generator
from bitnet_tvm.model import BitNetForCausalLM, get_config

MIN_MARGIN = 1e-3
STEPS = 10
LOGITS_RTOL = 1e-4  # of max|logits|; float order only (a flipped code would cost ~1e-2)
SCHEMES = ("a4.8-kv3", "a4.8-kv4")


def _torch_model(scheme: str) -> BitNetForCausalLM:
    return BitNetForCausalLM(get_config("tiny", scheme=scheme), seed=0).eval()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, bitnet_tvm.CompiledModel]:
    path = tmp_path_factory.mktemp("kv") / "kv3.onnx"
    export_onnx(_torch_model("a4.8-kv3"), path, with_past=True, verify=False)
    info = get_config("tiny", scheme="a4.8-kv3").to_dict()
    return {
        "a4.8-kv3": bitnet_tvm.compile(path, model_info=info),
        "a4.8-kv4": bitnet_tvm.compile(path, scheme="a4.8-kv4", model_info=info),
    }


def _cache(outputs: list, index: int, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and float32 values of cache tensor ``index`` (0 = key.0, 1 = value.0...)."""
    per = 3 if info["bos_bits"] else 2
    codes, scale, *bos = (t.numpy() for t in outputs[1 + per * index : 1 + per * (index + 1)])
    bits, bos_bits, dim = info["bits"], info["bos_bits"], info["head_dim"]
    q = reference.unpack_kv(codes, bits, dim)
    if bos:
        q[:, :, 0] = reference.unpack_kv(bos[0], bos_bits, dim)
    values = reference.dequantize_kv_cache(
        codes, scale, bos[0] if bos else None, bits, bos_bits, dim
    )
    return q, values, scale


@pytest.mark.parametrize("scheme", SCHEMES)
def test_artifact_describes_the_packed_cache(compiled, scheme):
    bits, bos = (3, 4) if scheme == "a4.8-kv3" else (4, None)
    meta = compiled[scheme].metadata
    width = reference.kv_packed_width(bits, 16)
    parts = [
        ("", ["batch", 2, "past", width], "uint8"),
        ("_scale", ["batch", 2, "past"], "float32"),
    ]
    if bos:
        parts.append(("_bos", ["batch", 2, 8], "uint8"))
    want = [("input_ids", ["batch", "seq"], "int64")]
    want += [
        (f"past_{kv}{p}.{i}", s, d)
        for i in range(2)
        for kv in ("key", "value")
        for p, s, d in parts
    ]
    assert [(s["name"], s["shape"], s["dtype"]) for s in meta["inputs"]] == want
    present = [n.replace("past_", "present_") for n, _, _ in want[1:]]
    assert [s["name"] for s in meta["outputs"]] == ["logits", *present]
    kv = meta["kv_cache"]
    assert (kv["bits"], kv["bos_bits"], kv["layers"], kv["kv_heads"]) == (bits, bos, 2, 2)
    # per token: 2 layers x (K, V) x 2 heads x (codes + float32 scale)
    assert kv["bytes_per_token"]["packed"] == 8 * (width + 4)
    assert kv["bytes_per_token"]["fp16"] == 8 * 32


@pytest.mark.parametrize("scheme", SCHEMES)
def test_greedy_matches_pytorch_token_for_token(compiled, scheme, prompts, torch_greedy):
    """Batch 2 (each row has its own cache rows, codes and scales)."""
    ids = prompts(2)
    want, margin = torch_greedy(_torch_model(scheme), ids, STEPS)
    assert margin > MIN_MARGIN, f"near tie (top-2 margin {margin:.2g}): pick other prompts"
    result = Generator(compiled[scheme]).generate(ids, max_new_tokens=STEPS)
    np.testing.assert_array_equal(result.tokens, want)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_cache_and_logits_equal_the_fake_quant_model(compiled, scheme, prompts):
    """Prefill then one decode step: the packed cache holds PyTorch's codes, exactly.

    The scales differ from PyTorch's by float rounding upstream (K after RoPE is computed in
    another order: up to 1 ulp, so values agree to ``1e-6`` relative), the integers do not:
    ``rint(torch_value / scale)`` equals the stored code everywhere.
    """
    cm, model = compiled[scheme], _torch_model(scheme)
    info = cm.metadata["kv_cache"]
    gen = Generator(cm)
    ids = prompts(2)
    outputs = gen._forward(ids, gen._empty_cache(2))
    nxt = np.array([[3], [7]], np.int64)
    outputs2 = gen._forward(nxt, gen._next_cache(outputs))
    with torch.no_grad():
        logits, past = model(torch.from_numpy(ids))
        logits2, past2 = model(torch.from_numpy(nxt), past)
    for step_out, torch_past in ((outputs, past), (outputs2, past2)):
        for index in range(4):
            want = torch_past[index // 2][index % 2].numpy()
            q, values, scale = _cache(step_out, index, info)
            np.testing.assert_array_equal(q, np.rint(want / scale[..., None]))
            np.testing.assert_allclose(values, want, rtol=1e-6, atol=1e-7)
    for got, want in ((outputs[0].numpy(), logits.numpy()), (outputs2[0].numpy(), logits2.numpy())):
        np.testing.assert_allclose(got, want, rtol=0, atol=LOGITS_RTOL * np.abs(want).max())


def test_info_reports_the_packed_cache(compiled, tmp_path):
    from bitnet_tvm.cli import _format_info, artifact_info

    info = artifact_info(compiled["a4.8-kv3"].save(tmp_path / "kv3"))
    assert info["kv_cache_bytes_per_token"] == 8 * (6 + 4)  # 3-bit codes of 16 + a scale
    assert "packed 3-bit, BOS 4-bit: 3.20x smaller than fp16" in _format_info(info)
