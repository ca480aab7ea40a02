"""The shipped built-in a4.8 model: size, exact trained numerics, and compiled == trained."""

import numpy as np
import pytest
import torch

from bitnet_tvm.model import BitLinear, BitNetForCausalLM, get_config
from bitnet_tvm.model.builtin import (
    ASSET_DIR,
    load_builtin_check,
    load_builtin_info,
    load_builtin_model,
    load_heldout_sample,
    save_builtin_model,
)
from bitnet_tvm.train import compiled_forward, evaluate_nll, torch_forward

MAX_ASSET_BYTES = 5 * 1024 * 1024
#: compiled vs PyTorch perplexity: they differ only where a float reduction order flips a code
PPL_RTOL = 5e-3


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.from_numpy(ids))[0].numpy()


def test_asset_is_small_and_complete():
    files = {f.name: f.stat().st_size for f in ASSET_DIR.iterdir() if f.is_file()}
    assert {"builtin_a48.json", "builtin_a48.npz", "heldout_sample.txt"} <= set(files)
    assert sum(files.values()) <= MAX_ASSET_BYTES
    info = load_builtin_info()
    assert info["config"]["scheme"] == "a4.8" and info["config"]["vocab_size"] == 256
    assert 2048 <= len(load_heldout_sample()) <= 16384


@pytest.mark.parametrize("form", ["int8", "ternary"])
def test_loads_with_the_trained_numerics(form):
    model = load_builtin_model(form=form)
    assert not model.training and model.config.scheme == "a4.8"
    linears = [m for m in model.modules() if isinstance(m, BitLinear)]
    assert len(linears) == 7 * model.config.num_hidden_layers
    for m in linears:
        assert m.frozen and m.int8_codes == (form == "int8")
        assert set(torch.unique(m.weight.to(torch.float32)).tolist()) <= {-1.0, 0.0, 1.0}
    ids, want = load_builtin_check()
    got = _logits(model, ids)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # the stored held-out score of the trained model is reproduced exactly
    stored = load_builtin_info()["training"]["heldout_sample"]
    sample = np.frombuffer(load_heldout_sample(), dtype=np.uint8)
    seq = model.config.max_position_embeddings
    assert evaluate_nll(torch_forward(model), sample, seq)["nll"] == pytest.approx(
        stored["nll"], rel=1e-9
    )


def test_compiled_perplexity_equals_torch(tmp_path):
    model = load_builtin_model(form="int8")
    sample = np.frombuffer(load_heldout_sample(), dtype=np.uint8)
    seq = model.config.max_position_embeddings
    want = evaluate_nll(torch_forward(model), sample, seq)
    got = evaluate_nll(compiled_forward(model, tmp_path), sample, seq)
    assert got["bytes"] == want["bytes"] >= 2048
    assert abs(got["ppl"] / want["ppl"] - 1) <= PPL_RTOL, (got, want)
    # the trained model is far better than chance (256) on held-out English
    assert want["ppl"] < 8.0


def test_save_load_roundtrip_and_errors(tmp_path):
    model = BitNetForCausalLM(get_config("tiny", scheme="a4.8"), seed=3).eval()
    save_builtin_model(model, tmp_path / "asset", info={"note": "random"}, heldout_sample="x\n")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["asset"]  # no temporary left
    loaded = load_builtin_model(tmp_path / "asset")
    ids, want = load_builtin_check(tmp_path / "asset")
    assert np.array_equal(_logits(loaded, ids), _logits(model, ids))
    assert np.array_equal(want, _logits(model, ids))
    assert load_builtin_info(tmp_path / "asset")["training"] == {"note": "random"}
    with pytest.raises(FileNotFoundError, match=r"python -m bitnet_tvm\.train"):
        load_builtin_model(tmp_path / "missing")
    with pytest.raises(ValueError, match="form"):
        load_builtin_model(tmp_path / "asset", form="float")
    with pytest.raises(ValueError, match="no ternary weights"):
        save_builtin_model(BitNetForCausalLM(get_config("tiny", scheme="fp")), tmp_path / "fp")
