"""BitNetForCausalLM: init, STE training step, GQA, KV cache, freezing, input checks."""

import pytest
import torch

from bitnet_tvm.model import BitLinear, BitNetForCausalLM, get_config

#: prefill + decode vs full forward: attention matmuls of different shapes may sum in another
#: order, so logits agree to float rounding (observed ~1e-7 of their scale), not bit for bit.
CACHE_RTOL = 1e-5


def _ids(batch, seq, vocab=256, seed=0):
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_deterministic_init():
    cfg = get_config("tiny")
    a, b, c = (BitNetForCausalLM(cfg, seed=s) for s in (7, 7, 8))
    for (name, pa), pb, pc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if "norm" not in name:
            assert not torch.equal(pa, pc), name
    logits, presents = a(_ids(2, 5))
    assert logits.shape == (2, 5, cfg.vocab_size) and logits.dtype == torch.float32
    assert len(presents) == cfg.num_hidden_layers
    assert presents[0][0].shape == (2, cfg.num_key_value_heads, 5, cfg.head_dim)


def test_tied_and_untied_heads():
    tied = BitNetForCausalLM(get_config("tiny", tie_word_embeddings=True), seed=0)
    untied = BitNetForCausalLM(get_config("tiny"), seed=0)
    assert tied.lm_head is None and untied.lm_head is not None
    assert tied(_ids(1, 3))[0].shape == untied(_ids(1, 3))[0].shape


@pytest.mark.parametrize("scheme", ["a4.8", "b1.58", "fp"])
def test_ste_training_step_changes_weights(scheme):
    model = BitNetForCausalLM(get_config("tiny", scheme=scheme), seed=0)
    ids = _ids(2, 6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    logits, _ = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    opt.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_forward_values_do_not_depend_on_grad_mode():
    """The STE term is exactly zero: recording autograd does not change a single bit."""
    model = BitNetForCausalLM(get_config("tiny"), seed=0)
    ids = _ids(2, 7)
    with_grad, _ = model(ids)
    with torch.no_grad():
        without, _ = model(ids)
    assert torch.equal(with_grad.detach(), without)


@pytest.mark.parametrize("scheme", ["a4.8", "a4.8-kv3", "a4.8-kv4", "b1.58", "fp"])
def test_prefill_then_decode_matches_full_forward(scheme):
    model = BitNetForCausalLM(get_config("tiny", scheme=scheme), seed=1)
    ids = _ids(3, 9, seed=2)
    with torch.no_grad():
        full, full_cache = model(ids)
        pre, cache = model(ids[:, :6])
        step1, cache = model(ids[:, 6:7], cache)
        step2, cache = model(ids[:, 7:], cache)
    got = torch.cat((pre, step1, step2), dim=1)
    scale = full.abs().max()
    assert (got - full).abs().max() <= CACHE_RTOL * scale
    for (k, v), (fk, fv) in zip(cache, full_cache, strict=True):
        torch.testing.assert_close(k, fk, rtol=0, atol=1e-6)
        torch.testing.assert_close(v, fv, rtol=0, atol=1e-6)


def test_bos_kept_at_4_bits_under_3_bit_kv():
    model = BitNetForCausalLM(get_config("tiny", scheme="a4.8-kv3"), seed=0)
    with torch.no_grad():
        _, cache = model(_ids(2, 5))
    v = cache[0][1]  # [B, kv_heads, T, head_dim]: codes * scale, levels +-7 at BOS, +-3 after
    levels = (v / v.abs().amax(-1, keepdim=True)).mul(7).round().abs()
    assert levels[:, :, 0].max() == 7 and (levels[:, :, 0] % 7 != 0).any()
    later = v[:, :, 1:] / v[:, :, 1:].abs().amax(-1, keepdim=True) * 3
    torch.testing.assert_close(later, later.round(), rtol=0, atol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa_cfg = get_config("tiny", scheme="a4.8-kv4")
    mha_cfg = gqa_cfg.replace(num_key_value_heads=gqa_cfg.num_attention_heads)
    gqa, mha = BitNetForCausalLM(gqa_cfg, seed=3), BitNetForCausalLM(mha_cfg, seed=4)
    groups, hd = gqa_cfg.num_key_value_groups, gqa_cfg.head_dim
    state = {}
    for name, t in gqa.state_dict().items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            t = t.view(-1, hd, t.shape[-1]).repeat_interleave(groups, dim=0).flatten(0, 1)
        state[name] = t
    mha.load_state_dict(state)  # repeating rows keeps mean|W|, so alpha and codes are equal
    ids = _ids(2, 6)
    with torch.no_grad():
        a, _ = gqa(ids)
        b, _ = mha(ids)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(a.abs().max()))


def test_freeze_ternary_is_bit_exact():
    model = BitNetForCausalLM(get_config("tiny"), seed=0)
    ids = _ids(2, 5)
    with torch.no_grad():
        before, _ = model(ids)
        model.freeze_ternary()
        after, _ = model(ids)
    assert torch.equal(before, after)
    lin = model.layers[0].self_attn.q_proj
    assert isinstance(lin, BitLinear) and lin.frozen
    assert set(lin.weight.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert lin.weight_scale.ndim == 0


def test_bad_inputs():
    model = BitNetForCausalLM(get_config("tiny"), seed=0)
    with pytest.raises(TypeError, match="int64"):
        model(_ids(1, 3).to(torch.int32))
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        model(_ids(1, 3)[0])
    with pytest.raises(ValueError, match="must lie in"):
        model(torch.tensor([[0, 256]]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(_ids(1, 513))
    _, cache = model(_ids(2, 3))
    with pytest.raises(ValueError, match="pairs"):
        model(_ids(2, 1), cache[:1])
    with pytest.raises(ValueError, match="batch"):
        model(_ids(1, 1), cache)
    with pytest.raises(TypeError, match="BitNetConfig"):
        BitNetForCausalLM({"hidden_size": 4})
