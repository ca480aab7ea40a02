"""Activation sparsity of a random a4.8 model against the paper's structural numbers."""

import pytest
import torch

from bitnet_tvm.model import BitNetForCausalLM, get_config, measure_sparsity
from bitnet_tvm.model.sparsity import SPARSITY_KEYS


@pytest.fixture(scope="module")
def sparsity():
    cfg = get_config("tiny").replace(
        hidden_size=256, intermediate_size=688, num_attention_heads=8, num_key_value_heads=2
    )
    model = BitNetForCausalLM(cfg, seed=0)
    ids = torch.randint(0, cfg.vocab_size, (4, 64), generator=torch.Generator().manual_seed(1))
    return measure_sparsity(model, ids)


def test_a48_sparsity(sparsity):
    assert tuple(sparsity) == SPARSITY_KEYS
    # INT4 absmean of a near-Gaussian input rounds ~12 % of entries to zero (paper: 12.1)
    assert 9.0 <= sparsity["qkv"] <= 15.0
    assert 9.0 <= sparsity["gate"] <= 15.0
    # TopK keeps ceil(d / 2) of an even d and no kept entry rounds to 0: exactly 50 % per token
    # (every token has >= 50 % zeros, so an exact 50.0 average means every token has 50 %)
    assert sparsity["o"] == 50.0
    # relu(gate)^2 is zero where gate <= 0: about half the up rows of a random model
    assert 40.0 <= sparsity["up"] <= 60.0
    assert sparsity["down"] >= sparsity["up"]
    assert 0.0 < sparsity["overall"] < 100.0


def test_overall_is_parameter_weighted(sparsity):
    cfg_h, cfg_i, q, kv = 256, 688, 256, 64  # q_dim = 8 * 32, kv_dim = 2 * 32
    params = {"qkv": cfg_h * (q + 2 * kv), "o": q * cfg_h, "gate": cfg_h * cfg_i}
    params |= {"up": cfg_h * cfg_i, "down": cfg_i * cfg_h}
    want = sum(params[k] * sparsity[k] for k in params) / sum(params.values())
    assert sparsity["overall"] == pytest.approx(want, rel=1e-12)


def test_rejects_non_model():
    with pytest.raises(TypeError, match="BitNetForCausalLM"):
        measure_sparsity(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.int64))
