"""A trainable BitNet causal LM in PyTorch (LLaMA layout, ReLU² GLU, sub-norms, fake quantization).

Layer (bitnet-a48.md "Model layout", as BitNet b1.58 2B4T)::

    h = x + o_proj(attn_sub_norm(attention(rope(q, k, v of input_layernorm(x)))))
    y = h + down(ffn_sub_norm(relu(gate(n))**2 * up(n))),  n = post_attention_layernorm(h)

Every q/k/v/o/gate/up/down is a :class:`~bitnet_tvm.model.layers.BitLinear` quantized per the
config's scheme; the embedding, the norms, attention itself and the LM head stay float32.
When the scheme quantizes the KV cache, K (after RoPE) and V are fake-quantized per (token, head)
before they enter attention and the cache, the token at absolute position 0 (BOS) with
``bos_bits``.  The cache (``past_key_values`` / presents) therefore holds the dequantized values a
real quantized cache would decode to, and prefill + decode reproduces a full forward.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bitnet_tvm.model.config import BitNetConfig
from bitnet_tvm.model.layers import BitLinear, ReLU2, RMSNorm
from bitnet_tvm.model.quant import fake_quantize_kv
from bitnet_tvm.schemes import KVQuant, QuantScheme, get_scheme

__all__ = ["BitNetForCausalLM", "KVCache"]

#: One ``(key, value)`` pair per layer, each ``[batch, kv_heads, length, head_dim]`` float32.
KVCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]

_INIT_STD = 0.02


def _tracing() -> bool:
    """True while torch.export / dynamo trace: data-dependent checks must be skipped then."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    """cos/sin tables of RoPE (rotate-half convention) for given absolute positions."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
        self.register_buffer("inv_freq", 1.0 / (theta**exponents), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


def _kv_fake_quant(x: torch.Tensor, kv: KVQuant, positions: torch.Tensor) -> torch.Tensor:
    """Fake-quantize new keys or values ``[B, kv_heads, T, head_dim]`` per ``kv``."""
    if kv.bits is None:
        return x
    out = fake_quantize_kv(x, kv.bits)
    if kv.bos_bits is not None and kv.bos_bits != kv.bits:
        is_bos = (positions == 0)[None, None, :, None]
        out = torch.where(is_bos, fake_quantize_kv(x, kv.bos_bits), out)
    return out


class BitNetAttention(nn.Module):
    """Grouped-query causal self-attention with BitLinear projections and a sub-norm."""

    def __init__(self, config: BitNetConfig) -> None:
        super().__init__()
        scheme = get_scheme(config.scheme)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.kv = scheme.kv
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = BitLinear(config.hidden_size, q_dim, scheme, "qkv")
        self.k_proj = BitLinear(config.hidden_size, kv_dim, scheme, "qkv")
        self.v_proj = BitLinear(config.hidden_size, kv_dim, scheme, "qkv")
        self.attn_sub_norm = RMSNorm(q_dim, config.rms_norm_eps)
        self.o_proj = BitLinear(q_dim, config.hidden_size, scheme, "o")

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, _ = x.shape
        cos, sin = rope
        q = self._heads(self.q_proj(x), self.num_heads)
        k = self._heads(self.k_proj(x), self.num_kv_heads)
        v = self._heads(self.v_proj(x), self.num_kv_heads)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k = _kv_fake_quant(k, self.kv, positions)
        v = _kv_fake_quant(v, self.kv, positions)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        groups = self.num_heads // self.num_kv_heads
        k_all = k[:, :, None].expand(-1, -1, groups, -1, -1).flatten(1, 2)
        v_all = v[:, :, None].expand(-1, -1, groups, -1, -1).flatten(1, 2)
        scores = torch.matmul(q, k_all.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        key_pos = torch.arange(k.shape[2], device=x.device)
        causal = key_pos[None, :] <= positions[:, None]  # [T, S]
        scores = scores.masked_fill(~causal, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        out = torch.matmul(probs, v_all).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(self.attn_sub_norm(out)), (k, v)


class BitNetMLP(nn.Module):
    """``down(ffn_sub_norm(relu(gate(x))**2 * up(x)))``."""

    def __init__(self, config: BitNetConfig) -> None:
        super().__init__()
        scheme = get_scheme(config.scheme)
        hidden, inter = config.hidden_size, config.intermediate_size
        self.gate_proj = BitLinear(hidden, inter, scheme, "gate_up")
        self.up_proj = BitLinear(hidden, inter, scheme, "gate_up")
        self.act_fn = ReLU2()
        self.ffn_sub_norm = RMSNorm(inter, config.rms_norm_eps)
        self.down_proj = BitLinear(inter, hidden, scheme, "down")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act_fn(self.gate_proj(x)) * self.up_proj(x)
        return self.down_proj(self.ffn_sub_norm(h))


class BitNetDecoderLayer(nn.Module):
    """Pre-norm attention block then pre-norm ReLU² MLP block, each with a residual."""

    def __init__(self, config: BitNetConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = BitNetAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = BitNetMLP(config)

    def forward(self, x, positions, rope, past):
        attn, present = self.self_attn(self.input_layernorm(x), positions, rope, past)
        h = x + attn
        return h + self.mlp(self.post_attention_layernorm(h)), present


class BitNetForCausalLM(nn.Module):
    """BitNet causal LM with fake-quantized BitLinear layers (trainable with STE).

    Parameters
    ----------
    config : BitNetConfig
        Sizes and quantization scheme.
    seed : int or None
        Seed of the deterministic initialization (normal, std 0.02, for embeddings and linears;
        norm weights 1).  None draws from torch's global RNG.
    """

    def __init__(self, config: BitNetConfig, seed: int | None = None) -> None:
        super().__init__()
        if not isinstance(config, BitNetConfig):
            raise TypeError(f"config must be a BitNetConfig, got {type(config).__name__}")
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            BitNetDecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Re-initialize every parameter, deterministically when ``seed`` is given."""
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        for module in self.modules():
            if isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
            elif isinstance(module, nn.Linear | nn.Embedding):
                module.weight.normal_(0.0, _INIT_STD, generator=gen)

    def freeze_ternary(self) -> BitNetForCausalLM:
        """Turn every ternary BitLinear's master weight into constant codes and a scalar alpha
        (in place; the model is inference-only afterwards).  Outputs are unchanged bit for bit.
        """
        for module in self.modules():
            if isinstance(module, BitLinear):
                module.freeze_ternary()
        return self

    def freeze_int8(self) -> BitNetForCausalLM:
        """As :meth:`freeze_ternary`, with the codes stored as int8 weights (see
        :meth:`BitLinear.freeze_int8 <bitnet_tvm.model.layers.BitLinear.freeze_int8>`)."""
        for module in self.modules():
            if isinstance(module, BitLinear):
                module.freeze_int8()
        return self

    def set_scheme(self, scheme: str | QuantScheme) -> BitNetForCausalLM:
        """Switch the activation and KV-cache quantizers of this live model to ``scheme``.

        In place, keeping every weight (and the optimizer state of a training run): this is
        a4.8's second training stage, which continues a model trained with b1.58's 8-bit
        activations under the hybrid INT4 / TopK-INT8 quantizers (arXiv 2411.04965, Sec. 2.3).
        ``config.scheme`` becomes ``scheme``'s name.

        Parameters
        ----------
        scheme : str or QuantScheme
            A registered scheme (name or the registered object) with this model's weight format.

        Raises
        ------
        ValueError
            Unknown scheme, an unregistered QuantScheme, or another weight format.
        """
        new = get_scheme(scheme)
        if get_scheme(new.name) != new:
            raise ValueError(
                f"scheme {new.name!r} is not the registered scheme of that name; register it "
                "first (bitnet_tvm.schemes.register_scheme)"
            )
        current = get_scheme(self.config.scheme)
        if new.weight is not current.weight:
            raise ValueError(
                f"scheme {new.name!r} has {new.weight.value} weights, this model's scheme "
                f"{current.name!r} has {current.weight.value} weights; a weight format cannot "
                "be switched in place"
            )
        for module in self.modules():
            if isinstance(module, BitLinear):
                module.set_scheme(new)
            elif isinstance(module, BitNetAttention):
                module.kv = new.kv
        self.config = self.config.replace(scheme=new.name)
        return self

    def _check_inputs(self, input_ids: torch.Tensor, past: KVCache | None) -> int:
        cfg = self.config
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.dtype != torch.int64:
            raise TypeError(f"input_ids must be int64 token ids, got dtype {input_ids.dtype}")
        if input_ids.ndim != 2:
            raise ValueError(
                f"input_ids must have shape [batch, seq], got {tuple(input_ids.shape)}"
            )
        past_len = 0
        if past is not None:
            if not isinstance(past, tuple | list) or len(past) != cfg.num_hidden_layers:
                raise ValueError(
                    f"past_key_values must hold {cfg.num_hidden_layers} (key, value) pairs, "
                    f"got {type(past).__name__} of length {len(past)}"
                )
            want = (cfg.num_key_value_heads, cfg.head_dim)
            for i, pair in enumerate(past):
                if len(pair) != 2:
                    raise ValueError(f"past_key_values[{i}] must be a (key, value) pair")
                for name, t in zip(("key", "value"), pair, strict=True):
                    if t.dtype != torch.float32 or t.ndim != 4 or tuple(t.shape[1::2]) != want:
                        raise ValueError(
                            f"past_key_values[{i}] {name} must be float32 [batch, {want[0]}, "
                            f"past, {want[1]}], got {t.dtype} {tuple(t.shape)}"
                        )
            past_len = past[0][0].shape[2]
        if not _tracing():
            if input_ids.shape[1] == 0:
                raise ValueError("input_ids must hold at least one token per row")
            if past is not None:
                for i, (k, v) in enumerate(past):
                    if (
                        k.shape != v.shape
                        or k.shape[0] != input_ids.shape[0]
                        or (k.shape[2] != past_len)
                    ):
                        raise ValueError(
                            f"past_key_values[{i}] shapes {tuple(k.shape)}/{tuple(v.shape)} do not "
                            f"match batch {input_ids.shape[0]} and past length {past_len}"
                        )
            total = past_len + input_ids.shape[1]
            if total > cfg.max_position_embeddings:
                raise ValueError(
                    f"sequence length {total} (past {past_len}) exceeds "
                    f"max_position_embeddings {cfg.max_position_embeddings}"
                )
            if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= cfg.vocab_size):
                raise ValueError(
                    f"input_ids must lie in [0, {cfg.vocab_size}), got "
                    f"[{int(input_ids.min())}, {int(input_ids.max())}]"
                )
        return past_len

    def forward(
        self, input_ids: torch.Tensor, past_key_values: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits of every position and the updated cache.

        Parameters
        ----------
        input_ids : Tensor of int64, shape ``[batch, seq]``
            Token ids; all rows have the same length (no padding mask).
        past_key_values : KVCache or None
            Per layer ``(key, value)``, each ``[batch, kv_heads, past, head_dim]``; the new
            tokens sit at positions ``past .. past + seq - 1``.

        Returns
        -------
        logits : Tensor of float32, shape ``[batch, seq, vocab]``
        present_key_values : KVCache
            Per layer ``(key, value)`` of length ``past + seq``.
        """
        past_len = self._check_inputs(input_ids, past_key_values)
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device) + past_len
        rope = self.rotary(positions)
        h = self.embed_tokens(input_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            past = None if past_key_values is None else past_key_values[i]
            h, present = layer(h, positions, rope, past)
            presents.append(present)
        h = self.norm(h)
        head = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return nn.functional.linear(h, head), tuple(presents)
