"""BitNetConfig: presets, validation, dict round trips, HF import."""

import pytest

from bitnet_tvm.model import BitNetConfig, get_config, list_configs


def test_presets():
    assert set(list_configs()) >= {"tiny", "700m", "1.3b", "3b", "7b", "2b4t"}
    c = get_config("2b4t")
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (2560, 6912, 30)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (20, 5, 128)
    assert (c.vocab_size, c.rope_theta, c.tie_word_embeddings) == (128256, 500000.0, True)
    assert get_config("3b").head_dim == 100
    tiny = get_config("tiny")
    assert tiny.num_key_value_groups == 2 and tiny.scheme == "a4.8"
    assert get_config("tiny", scheme="b1.58").scheme == "b1.58"


def test_round_trip_and_replace():
    c = get_config("tiny")
    assert BitNetConfig.from_dict(c.to_dict()) == c
    wider = c.replace(hidden_size=128)
    assert wider.head_dim == 32  # re-derived
    assert c.replace(head_dim=8).head_dim == 8


def test_from_hf_config():
    hf = {
        "architectures": ["BitNetForCausalLM"],
        "hidden_act": "relu2",
        "hidden_size": 2560,
        "intermediate_size": 6912,
        "num_hidden_layers": 30,
        "num_attention_heads": 20,
        "num_key_value_heads": 5,
        "vocab_size": 128256,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    assert BitNetConfig.from_hf_config(hf) == get_config("2b4t")
    with pytest.raises(ValueError, match="relu2"):
        BitNetConfig.from_hf_config({**hf, "hidden_act": "silu"})
    with pytest.raises(ValueError, match="num_attention_heads"):
        BitNetConfig.from_hf_config({k: v for k, v in hf.items() if k != "num_attention_heads"})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
        ({"head_dim": 15}, "even"),
        ({"rms_norm_eps": -1.0}, "rms_norm_eps"),
        ({"scheme": "int2"}, "unknown scheme"),
        ({"tie_word_embeddings": 1}, "bool"),
        ({"hidden_size": 66}, "not divisible"),
    ],
)
def test_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        get_config("tiny").replace(**changes)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown config 'huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown config key"):
        BitNetConfig.from_dict({**get_config("tiny").to_dict(), "dropout": 0.1})
