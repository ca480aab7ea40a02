"""Shaped-random BitNet models for compile benchmarks, built without float master weights.

A 2B-parameter model in float32 master form costs ~10 GB before any freezing.  For benchmarks
that only need a faithful graph of the right shape, :func:`random_int8_model` builds the model on
the ``meta`` device (no storage), turns every ternary BitLinear's weight into an int8 parameter,
allocates real storage only then, and fills it from a seeded generator: each BitLinear holds
uniform random codes in {-1, 0, 1} and alpha ``1 / sqrt(in_features)`` (so that activations keep
their scale through the layers), the embeddings (and an untied LM head) ``N(0, 0.02)``, the norms
1.  The result is what :meth:`~bitnet_tvm.model.BitNetForCausalLM.freeze_int8` would give for
some master weights, and exports with ``export_onnx(..., weights="int8")``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bitnet_tvm.model.config import BitNetConfig
from bitnet_tvm.model.layers import BitLinear, RMSNorm
from bitnet_tvm.model.modeling import _INIT_STD, BitNetForCausalLM, RotaryEmbedding
from bitnet_tvm.schemes import WeightFormat, get_scheme

__all__ = ["random_int8_model"]


@torch.no_grad()
def random_int8_model(config: BitNetConfig, seed: int = 0) -> BitNetForCausalLM:
    """An inference-only model with random int8 ternary codes (see the module docstring).

    Peak memory is the int8 codes plus the float32 embeddings (~3.4 GB for ``2b4t``).

    Parameters
    ----------
    config : BitNetConfig
        Sizes; its scheme must have ternary weights.
    seed : int
        Seed of the codes and embeddings (same seed, same model).

    Raises
    ------
    ValueError
        If the scheme's weights are not ternary.
    """
    if not isinstance(config, BitNetConfig):
        raise TypeError(f"config must be a BitNetConfig, got {type(config).__name__}")
    scheme = get_scheme(config.scheme)
    if scheme.weight is not WeightFormat.TERNARY:
        raise ValueError(
            f"random_int8_model needs a scheme with ternary weights; scheme {scheme.name!r} "
            f"stores {scheme.weight.value} weights"
        )
    with torch.device("meta"):
        model = BitNetForCausalLM(config, seed=None)
        for module in model.modules():
            if isinstance(module, BitLinear):
                shape = module.weight.shape
                module.weight = nn.Parameter(torch.empty(shape, dtype=torch.int8), False)
                module.register_buffer("weight_scale", torch.empty((), dtype=torch.float32))
                module.frozen = True
    model.to_empty(device="cpu")
    model.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)  # buffers were on meta
    gen = torch.Generator().manual_seed(int(seed))
    for module in model.modules():
        if isinstance(module, BitLinear):
            module.weight.random_(-1, 2, generator=gen)
            module.weight_scale.fill_(1.0 / math.sqrt(module.in_features))
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, nn.Linear | nn.Embedding):
            module.weight.normal_(0.0, _INIT_STD, generator=gen)
    return model.eval()
