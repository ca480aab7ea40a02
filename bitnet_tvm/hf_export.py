"""Build HF transformers' ``BitNetForCausalLM`` in code (no download) and export it to ONNX.

Used to check that the compiler handles real third-party exports, not only ours: the float
model, HF's packed ``BitLinear`` (2-bit codes in uint8 along the output axis, a weight scale)
and its ``AutoBitLinear`` online form (ternarization inside the graph).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

__all__ = ["HFTinyConfig", "export_hf_bitnet", "tiny_hf_bitnet"]

Form = Literal["float", "packed", "online"]


@dataclass(frozen=True)
class HFTinyConfig:
    """Sizes of the tiny HF model (GQA: fewer KV heads than heads)."""

    vocab_size: int = 128
    hidden_size: int = 64
    intermediate_size: int = 160
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2


def tiny_hf_bitnet(form: Form, config: HFTinyConfig = HFTinyConfig(), seed: int = 0) -> nn.Module:
    """A random HF ``BitNetForCausalLM`` (eager attention) in one of three forms.

    ``float``: plain ``nn.Linear``.  ``packed``: ``BitLinear`` with ternary weights packed in
    uint8 and ``weight_scale = 1 / mean|W|``, as in HF BitNet checkpoints.  ``online``:
    ``AutoBitLinear`` that ternarizes its float weight in the graph.  The LM head stays float.
    """
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations import bitnet as hf_bitnet
    from transformers.utils.quantization_config import BitNetQuantConfig

    if form not in ("float", "packed", "online"):
        raise ValueError(f"form must be 'float', 'packed' or 'online', got {form!r}")
    torch.manual_seed(seed)
    hf_config = BitNetConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    hf_config._attn_implementation = "eager"
    model = BitNetForCausalLM(hf_config).eval()
    if form == "float":
        return model
    quant = BitNetQuantConfig(
        linear_class="autobitlinear" if form == "online" else "bitlinear",
        quantization_mode="online" if form == "online" else "offline",
    )
    saved = {k: v.detach().clone() for k, v in [*model.named_parameters(), *model.named_buffers()]}
    model = hf_bitnet.replace_with_bitnet_linear(
        model, modules_to_not_convert=["lm_head"], quantization_config=quant
    ).to_empty(device="cpu")
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            old = saved.get(name)
            if old is not None and old.shape == tensor.shape and old.dtype == tensor.dtype:
                tensor.copy_(old)
        for name, module in model.named_modules():
            if isinstance(module, hf_bitnet.BitLinear):
                weight = saved[name + ".weight"]
                scale = weight.abs().mean().clamp(min=1e-5)
                module.weight.copy_(hf_bitnet.pack_weights((weight / scale).round().clamp(-1, 1)))
                module.weight_scale.fill_(1.0 / scale)
    return model.eval()


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits


def export_hf_bitnet(
    form: Form, path: str | Path, config: HFTinyConfig = HFTinyConfig(), seed: int = 0
) -> Path:
    """Export :func:`tiny_hf_bitnet` with ``dynamo=True``: inputs ``input_ids`` and
    ``attention_mask`` with dynamic batch and sequence, output ``logits``."""
    path = Path(path)
    wrapper = _LogitsOnly(tiny_hf_bitnet(form, config, seed)).eval()
    ids = torch.randint(0, config.vocab_size, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.int64)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    dyn = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(path),
            dynamo=True,
            dynamic_shapes=dyn,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
        )
    return path
