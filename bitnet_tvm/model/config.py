"""Model hyper-parameters of a BitNet (LLaMA-like, ReLU² GLU) causal LM, as a frozen dataclass.

Presets (:func:`get_config`):

=======  ======  ============  ======  =====  ========  ========  ======  ==========
name     hidden  intermediate  layers  heads  kv heads  head_dim  vocab   rope theta
=======  ======  ============  ======  =====  ========  ========  ======  ==========
tiny     64      172           2       4      2         16        256     10000
700m     1536    4096          24      24     24        64        32000   10000
1.3b     2048    5460          24      32     32        64        32000   10000
3b       3200    8640          26      32     32        100       32000   10000
7b       4096    11008         32      32     32        128       32000   10000
2b4t     2560    6912          30      20     5         128       128256  500000
=======  ======  ============  ======  =====  ========  ========  ======  ==========

The paper sizes (700m .. 7b, arXiv 2411.04965 / 2402.17764) give hidden, intermediate, heads and
layers only; the rest is our choice: multi-head attention (kv heads = heads), the LLaMA-2
vocabulary of 32000, rope theta 10000, 2048 positions, untied embeddings.  ``2b4t`` is the
published BitNet b1.58 2B4T configuration (arXiv 2504.12285, tied embeddings).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bitnet_tvm.schemes import get_scheme

__all__ = ["BitNetConfig", "get_config", "list_configs"]

_INT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
)


@dataclass(frozen=True)
class BitNetConfig:
    """Hyper-parameters of :class:`~bitnet_tvm.model.BitNetForCausalLM`.

    Parameters
    ----------
    vocab_size, hidden_size, intermediate_size, num_hidden_layers : int
        Model sizes.
    num_attention_heads, num_key_value_heads : int
        Query heads and key/value heads (grouped-query attention when fewer KV heads);
        ``num_attention_heads`` must be a multiple of ``num_key_value_heads``.
    head_dim : int or None
        Per-head width, even (RoPE rotates pairs); ``hidden_size // num_attention_heads`` when
        None (then ``hidden_size`` must divide evenly).
    max_position_embeddings : int
        Longest sequence (past + current) the model accepts.
    rms_norm_eps : float
        RMSNorm epsilon.
    rope_theta : float
        RoPE base.
    tie_word_embeddings : bool
        Whether the LM head reuses the embedding matrix.
    scheme : str
        Name of a quantization scheme registered in :mod:`bitnet_tvm.schemes`.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    scheme: str = "a4.8"

    def __post_init__(self) -> None:
        if self.head_dim is None:
            heads = self.num_attention_heads
            if isinstance(heads, int) and heads > 0 and isinstance(self.hidden_size, int):
                if self.hidden_size % heads:
                    raise ValueError(
                        f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                        f"{heads}; give head_dim explicitly"
                    )
                object.__setattr__(self, "head_dim", self.hidden_size // heads)
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"BitNetConfig.{name} must be a positive int, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"BitNetConfig.head_dim must be even for RoPE, got {self.head_dim}")
        for name in ("rms_norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"BitNetConfig.{name} must be a positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(
                f"BitNetConfig.tie_word_embeddings must be a bool, got {self.tie_word_embeddings!r}"
            )
        if not isinstance(self.scheme, str):
            raise TypeError(f"BitNetConfig.scheme must be a scheme name, got {self.scheme!r}")
        get_scheme(self.scheme)  # ValueError naming the known schemes

    @property
    def num_key_value_groups(self) -> int:
        """Query heads per KV head."""
        return self.num_attention_heads // self.num_key_value_heads

    def replace(self, **changes: Any) -> BitNetConfig:
        """A copy with ``changes`` applied (``head_dim`` re-derived unless given)."""
        data = self.to_dict()
        if "head_dim" not in changes and {"hidden_size", "num_attention_heads"} & set(changes):
            data["head_dim"] = None
        data.update(changes)
        return BitNetConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BitNetConfig:
        """Build from :meth:`to_dict` output, rejecting unknown keys."""
        if not isinstance(data, dict):
            raise TypeError(f"config must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], scheme: str = "a4.8") -> BitNetConfig:
        """Build from a Hugging Face ``BitNetConfig`` / ``LlamaConfig`` dict (``config.json``).

        Unrelated keys are ignored.  Features this model does not implement are rejected:
        an activation other than ``relu2``, biases, and RoPE scaling.

        Parameters
        ----------
        hf : dict
            The HF config as a dict (``config.to_dict()`` or the parsed ``config.json``).
        scheme : str
            Quantization scheme name for the result.
        """
        if not isinstance(hf, dict):
            raise TypeError(f"hf config must be a dict, got {type(hf).__name__}")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")
        missing = [k for k in (*required, "num_attention_heads") if k not in hf]
        if missing:
            raise ValueError(f"hf config lacks required key(s) {missing}")
        act = hf.get("hidden_act", "relu2")
        if act != "relu2":
            raise ValueError(f"hf config hidden_act is {act!r}; this BitNet model uses 'relu2'")
        for key in ("attention_bias", "mlp_bias"):
            if hf.get(key):
                raise ValueError(f"hf config sets {key}=True; BitNet linears have no bias")
        if hf.get("rope_scaling"):
            raise ValueError(f"hf config rope_scaling {hf['rope_scaling']!r} is not supported")
        heads = hf["num_attention_heads"]
        return cls(
            **{k: hf[k] for k in required},
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim"),
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-5),
            rope_theta=hf.get("rope_theta", 10000.0),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            scheme=scheme,
        )


def _paper(hidden: int, inter: int, heads: int, layers: int) -> BitNetConfig:
    return BitNetConfig(32000, hidden, inter, layers, heads, heads)


_PRESETS: dict[str, BitNetConfig] = {
    "tiny": BitNetConfig(256, 64, 172, 2, 4, 2, max_position_embeddings=512),
    "700m": _paper(1536, 4096, 24, 24),
    "1.3b": _paper(2048, 5460, 32, 24),
    "3b": _paper(3200, 8640, 32, 26),
    "7b": _paper(4096, 11008, 32, 32),
    "2b4t": BitNetConfig(
        vocab_size=128256,
        hidden_size=2560,
        intermediate_size=6912,
        num_hidden_layers=30,
        num_attention_heads=20,
        num_key_value_heads=5,
        head_dim=128,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
}


def get_config(name: str, **overrides: Any) -> BitNetConfig:
    """The preset ``name``, with optional field ``overrides`` (e.g. ``scheme="b1.58"``).

    Raises
    ------
    ValueError
        If no preset has that name.
    """
    if not isinstance(name, str):
        raise TypeError(f"config name must be a str, got {type(name).__name__}")
    try:
        config = _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; known: {list_configs()}") from None
    return config.replace(**overrides) if overrides else config


def list_configs() -> list[str]:
    """Names of the presets."""
    return list(_PRESETS)
