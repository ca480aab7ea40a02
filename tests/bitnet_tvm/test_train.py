"""bitnet_tvm.train: corpus split, windows and losses, a few training steps, a4.8's two stages."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from bitnet_tvm.model import BitNetForCausalLM, get_config
from bitnet_tvm.schemes import QuantScheme, get_scheme
from bitnet_tvm.train import (
    Corpus,
    TrainConfig,
    evaluate_nll,
    load_corpus,
    nll_sum,
    save_checkpoint,
    torch_forward,
    train,
    window_batches,
)

TINY = TrainConfig(
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    num_kv_heads=2,
    seq_len=16,
    batch_size=4,
    steps=6,
    warmup_steps=2,
    a48_switch=0.5,
    eval_every=3,
    eval_windows=2,
)

_TEXT = "The cat sat on the mat. A dog barked at the moon, and the moon said nothing.\n"


def _corpus() -> Corpus:
    data = np.frombuffer((_TEXT * 40).encode(), dtype=np.uint8)
    return Corpus(data, data[:400].copy(), {})


def test_load_corpus_splits_documents_deterministically(tmp_path):
    fortunes = "".join(f"Quote number {i}.\n\t\t-- Someone\n%\n" for i in range(30))
    (tmp_path / "quotes").write_text(fortunes)
    (tmp_path / "quotes.dat").write_bytes(b"\x00\x01binary index")
    (tmp_path / "ascii-art").write_text("%\n  /\\_/\\\n%\n")
    (tmp_path / "prose.txt").write_text("First para_\bgraph.\n\nSecond one.\n\n\nThird.\n")
    corpus = load_corpus(tmp_path, heldout_every=4)
    train_text, heldout_text = corpus.train.tobytes(), corpus.heldout.tobytes()
    assert corpus.info["documents"] == {"train": 25, "heldout": 8}
    assert corpus.info["files"] == ["prose.txt", "quotes"]
    # documents 2, 6, 10, ... are held out: prose's 3rd paragraph, then quotes 3, 7, 11, ...
    assert heldout_text.startswith(b"Third.\n\nQuote number 3.\n\t\t-- Someone\n%\n")
    assert b"Quote number 7.\n" in heldout_text and b"Quote number 7.\n" not in train_text
    assert train_text.startswith(b"First paragraph.\n\nSecond one.\n\nQuote number 0.")
    assert b"/\\_/\\" not in train_text + heldout_text  # ascii-art skipped
    again = load_corpus(tmp_path, heldout_every=4)
    assert np.array_equal(again.train, corpus.train) and np.array_equal(
        again.heldout, corpus.heldout
    )


def test_load_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get"):
        load_corpus(tmp_path / "missing")
    (tmp_path / "one.txt").write_text("only one document\n")
    with pytest.raises(ValueError, match="too few"):
        load_corpus(tmp_path / "one.txt")
    with pytest.raises(ValueError, match="heldout_every"):
        load_corpus(tmp_path, heldout_every=1)


def test_windows_and_losses():
    data = np.arange(50, dtype=np.uint8)
    batches = window_batches(data, seq_len=8, batch_size=4)
    windows = np.concatenate(batches)
    assert [b.shape for b in batches] == [(4, 9), (2, 9)]
    assert np.array_equal(windows[:, 0], np.arange(0, 48, 8))  # stride 8: each byte once
    assert np.array_equal(windows[-1], np.arange(40, 49))
    logits = np.random.default_rng(0).normal(size=(3, 5, 256)).astype(np.float32)
    targets = np.random.default_rng(1).integers(0, 256, size=(3, 5))
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits).flatten(0, 1), torch.from_numpy(targets).flatten(), reduction="sum"
    )
    assert nll_sum(logits, targets) == pytest.approx(float(want), rel=1e-6)
    uniform = evaluate_nll(lambda ids: np.zeros((*ids.shape, 256), np.float32), data, 8)
    assert uniform["ppl"] == pytest.approx(256.0) and uniform["bpb"] == pytest.approx(8.0)
    assert uniform["bytes"] == 48


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a48_trains_in_two_stages_and_resumes_from_b158(tmp_path, one_thread):
    corpus = _corpus()
    model, history = train(corpus, "a4.8", TINY, log_every=100)
    assert [h["scheme"] for h in history] == ["b1.58"] * 3 + ["a4.8"] * 3
    assert all(math.isfinite(h["loss"]) for h in history)
    assert [h["step"] for h in history if "eval_nll" in h] == [3, 6]
    assert model.config.scheme == "a4.8"
    assert model.layers[0].self_attn.o_proj.act_quant.act == get_scheme("a4.8").o
    assert history[-1]["loss"] < history[0]["loss"]

    # stage 1 is exactly the b1.58 run: resuming from its snapshot gives the same a4.8 model
    snapshots = []
    train(corpus, "b1.58", TINY, snapshot_at=TINY.switch_step, on_snapshot=snapshots.append)
    path = save_checkpoint(tmp_path / "stage1.pt", snapshots[0])
    assert [f.name for f in tmp_path.iterdir()] == ["stage1.pt"]  # no temporary left over
    resumed, resumed_history = train(
        corpus, "a4.8", TINY, resume=torch.load(path, weights_only=False)
    )
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in history]

    with pytest.raises(ValueError, match=r"scheme 'b1\.58'"):
        train(corpus, "fp", TINY, resume=snapshots[0])
    with pytest.raises(ValueError, match="another TrainConfig"):
        train(corpus, "a4.8", dataclasses.replace(TINY, lr=1e-4), resume=snapshots[0])


def test_set_scheme_switches_quantizers_in_place():
    model = BitNetForCausalLM(get_config("tiny", scheme="b1.58"), seed=0).eval()
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    want = BitNetForCausalLM(get_config("tiny", scheme="a4.8-kv4"), seed=0).eval()
    assert model.set_scheme("a4.8-kv4") is model and model.config.scheme == "a4.8-kv4"
    with torch.no_grad():
        assert torch.equal(model(ids)[0], want(ids)[0])
    with pytest.raises(ValueError, match="weight format"):
        model.set_scheme("fp")
    with pytest.raises(ValueError, match="not the registered scheme"):
        model.set_scheme(QuantScheme("a4.8"))
    assert model.config.scheme == "a4.8-kv4"  # failed switches change nothing


def test_train_config_validation():
    with pytest.raises(ValueError, match="a48_switch"):
        TrainConfig(a48_switch=1.0)
    with pytest.raises(ValueError, match="seq_len"):
        TrainConfig(seq_len=1)
    with pytest.raises(ValueError, match="scheme must be one of"):
        TINY.stages("a4.8-kv4")
    assert TINY.lr_at(0) == pytest.approx(TINY.lr / 2)
    assert TINY.lr_at(TINY.steps) == pytest.approx(TINY.lr * TINY.min_lr_ratio)
    model = BitNetForCausalLM(get_config("tiny"), seed=0)
    forward = torch_forward(model)
    ids = np.zeros((1, 4), np.int64)
    assert forward(ids).shape == (1, 4, 256)
