"""Generation with a compiled with-past model, against greedy decoding of the PyTorch model.

One with-past export of the tiny model (b1.58 master weights, seed 0), compiled twice: as is
(b1.58) and re-quantized to a4.8 (the same master weights, so it is the a4.8 model of seed 0;
see test_compile.test_requantize_b158_export_with_a48_scheme).

Why token-for-token equality is a sound check here.  Without a flipped activation/KV code, the
compiled logits differ from PyTorch's by float rounding order only: measured <= 6e-7 along these
trajectories (logit scale ~0.5).  A random tiny model has nearly flat logits, so the top-2
margin can be tiny; the prompts (seed 2) were chosen so that PyTorch's top-2 margin stays above
``MIN_MARGIN`` = 1e-3 at every step, more than 1000x that deviation, and the test asserts this
before comparing tokens, so a mismatch means a real error, not a near tie.  (A code flip at a
rounding tie moves logits by ~3e-3; none changes a token on these prompts.)
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import bitnet_tvm
from bitnet_tvm.errors import BitnetError
from bitnet_tvm.export import export_onnx
from bitnet_tvm.generate import (
    GenerationConfig,
    Generator,
    TextStream,
    _last_logits,
    sample_next,
)
from bitnet_tvm.model import BitNetForCausalLM, get_config

SCHEMES = ("a4.8", "b1.58")
MIN_MARGIN = 1e-3
STEPS = 12


def _torch_model(scheme: str) -> BitNetForCausalLM:
    return BitNetForCausalLM(get_config("tiny", scheme=scheme), seed=0).eval()


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    return export_onnx(_torch_model("b1.58"), root / "past.onnx", with_past=True, verify=False)


@pytest.fixture(scope="module")
def compiled(onnx_path) -> dict[str, bitnet_tvm.CompiledModel]:
    return {
        scheme: bitnet_tvm.compile(
            onnx_path,
            scheme=None if scheme == "b1.58" else scheme,
            model_info=get_config("tiny", scheme=scheme).to_dict(),
        )
        for scheme in SCHEMES
    }


@pytest.fixture(scope="module")
def generator(compiled) -> Generator:
    return Generator(compiled["a4.8"])


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("batch", [1, 2])
def test_greedy_matches_pytorch_token_for_token(compiled, scheme, batch, prompts, torch_greedy):
    ids = prompts(batch)
    want, margin = torch_greedy(_torch_model(scheme), ids, STEPS)
    assert margin > MIN_MARGIN, f"near tie (top-2 margin {margin:.2g}): pick other prompts"
    result = Generator(compiled[scheme]).generate(ids, max_new_tokens=STEPS)
    np.testing.assert_array_equal(result.tokens, want)
    np.testing.assert_array_equal(result.prompt_ids, ids)
    assert not result.finished.any()
    np.testing.assert_array_equal(result.lengths, [STEPS] * batch)
    assert result.decode_steps == STEPS - 1
    assert result.decode_tokens_per_second > 0


def test_batch_rows_are_independent(generator, prompts):
    both = generator.generate(prompts(2), max_new_tokens=8, temperature=0.0).tokens
    for row in range(2):
        alone = generator.generate(prompts(2)[row], max_new_tokens=8).tokens
        np.testing.assert_array_equal(alone[0], both[row])


def test_last_logits_copies_the_last_position(generator, prompts):
    ids = prompts(2, seq=7)
    out = generator._forward(ids, generator._empty_cache(2))
    np.testing.assert_array_equal(_last_logits(out[0]), out[0].numpy()[:, -1])


@pytest.mark.parametrize("top_p", [0.0, 1e-9])
def test_top_p_to_zero_is_greedy(generator, top_p, prompts):
    ids = prompts(2)
    greedy = generator.generate(ids, max_new_tokens=STEPS).tokens
    sampled = generator.generate(ids, max_new_tokens=STEPS, temperature=1.0, top_p=top_p, seed=5)
    np.testing.assert_array_equal(sampled.tokens, greedy)


def test_sampling_is_reproducible_with_a_seed(generator, prompts):
    ids = prompts(2)
    settings = {"max_new_tokens": STEPS, "temperature": 0.9, "top_p": 0.95}
    first = generator.generate(ids, seed=7, **settings).tokens
    np.testing.assert_array_equal(generator.generate(ids, seed=7, **settings).tokens, first)
    # near-flat logits: another seed or greedy decoding gives other tokens
    assert not np.array_equal(generator.generate(ids, seed=8, **settings).tokens, first)
    assert not np.array_equal(generator.generate(ids, max_new_tokens=STEPS).tokens, first)


def test_sample_next_keeps_the_nucleus_and_its_proportions():
    probs = np.array([0.1, 0.5, 0.25, 0.15])
    logits = np.tile(np.log(probs), (40000, 1))
    rng = np.random.default_rng(0)
    # smallest set of most likely tokens with mass >= 0.7: ids 1 and 2, renormalized
    got = sample_next(logits, GenerationConfig(temperature=1.0, top_p=0.7), rng)
    assert set(np.unique(got)) == {1, 2}
    share = np.mean(got == 1)
    want = 0.5 / 0.75
    assert abs(share - want) < 4 * np.sqrt(want * (1 - want) / len(got))
    # exactly reaching top_p with the first token keeps it alone
    only = sample_next(logits, GenerationConfig(temperature=1.0, top_p=0.5), rng)
    assert set(np.unique(only)) == {1}
    # top_p = 1 samples the whole distribution; temperature sharpens it
    every = sample_next(logits, GenerationConfig(temperature=1.0), rng)
    np.testing.assert_allclose(np.bincount(every, minlength=4) / len(every), probs, atol=0.01)
    cold = sample_next(logits, GenerationConfig(temperature=0.25), rng)
    assert np.mean(cold == 1) > 0.9


def test_stop_tokens_finish_rows(generator, prompts):
    ids = prompts(2)
    free = generator.generate(ids, max_new_tokens=STEPS).tokens
    stop = int(free[0, 3])
    first = int(np.argmax(free[0] == stop))  # where row 0 first produces it
    result = generator.generate(ids, max_new_tokens=STEPS, stop_tokens=[stop], pad_token_id=9)
    assert result.finished[0] and result.lengths[0] == first + 1
    np.testing.assert_array_equal(result.tokens[0, : first + 1], free[0, : first + 1])
    assert (result.tokens[0, first + 1 :] == 9).all()  # padding after the stop token
    if stop not in free[1]:  # row 1 is unaffected by row 0 stopping
        assert not result.finished[1]
        np.testing.assert_array_equal(result.tokens[1], free[1])
    # once every row has stopped, generation ends early
    both = generator.generate(ids, max_new_tokens=STEPS, stop_tokens=[free[0, 1], free[1, 1]])
    assert both.finished.all() and both.tokens.shape[1] == max(both.lengths) <= 2


def test_streaming_yields_the_same_tokens(generator, prompts):
    ids = prompts(2)
    settings = {"max_new_tokens": 6, "temperature": 0.8, "top_p": 0.9, "seed": 3}
    steps = list(generator.stream(ids, **settings))
    assert [s.index for s in steps] == list(range(6))
    result = generator.generate(ids, **settings)
    np.testing.assert_array_equal(np.stack([s.tokens for s in steps], axis=1), result.tokens)
    seen = []
    generator.generate(ids, on_step=lambda s: seen.append(s.tokens), **settings)
    np.testing.assert_array_equal(np.stack(seen, axis=1), result.tokens)


def test_text_stream_holds_back_incomplete_utf8():
    decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731
    text = TextStream(decode)
    pieces = [text.push(b) for b in "a€b".encode()]
    assert pieces == ["a", "", "", "€", "b"]
    assert text.push(0xE2) == "" and text.flush() == "\ufffd"


def test_bad_inputs_give_clear_errors(generator):
    with pytest.raises(ValueError, match="prompt is empty"):
        generator.generate([])
    with pytest.raises(ValueError, match="prompt is empty"):
        generator.stream([[]])  # raised when called, not at the first step
    with pytest.raises(ValueError, match="same length"):
        generator.generate([[1, 2], [3]])
    with pytest.raises(ValueError, match=r"id 256, outside the vocabulary \[0, 256\)"):
        generator.generate([1, 256])
    with pytest.raises(ValueError, match="stop_tokens holds id -1"):
        generator.generate([1, 2], stop_tokens=[-1])
    with pytest.raises(TypeError, match="integer token ids"):
        generator.generate([1.0, 2.0])
    with pytest.raises(ValueError, match=r"prompt has 513 tokens, more than .* length 512"):
        generator.generate(np.zeros(513, np.int64))
    with pytest.raises(ValueError, match=r"lower max_new_tokens to 12"):
        generator.generate(np.zeros(500, np.int64), max_new_tokens=20)
    with pytest.raises(ValueError, match="top_p must lie in"):
        generator.generate([1], top_p=1.5)
    with pytest.raises(ValueError, match="temperature must be"):
        generator.generate([1], temperature=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        generator.generate([1], max_new_tokens=0)
    with pytest.raises(TypeError, match="compiled must be a CompiledModel"):
        Generator("model.bitnet")


def test_artifacts_with_and_without_model_info(compiled, tmp_path):
    path = compiled["a4.8"].save(tmp_path / "artifact")
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["model"]["max_position_embeddings"] == 512
    # without model info the export's own metadata gives the length (`compile` without --config)
    assert meta["max_positions"] == 512
    (path / "metadata.json").write_text(json.dumps({**meta, "model": None}))
    assert Generator(bitnet_tvm.load(path)).max_length == 512
    # with neither: no length limit, the vocabulary comes from one probe step
    (path / "metadata.json").write_text(json.dumps({**meta, "model": None, "max_positions": None}))
    bare = Generator(bitnet_tvm.load(path))
    assert bare.max_length is None and bare.vocab_size == 256
    assert Generator(bitnet_tvm.load(path), max_length=4).max_length == 4
    # an artifact without past inputs (the metadata is what Generator reads) is refused
    no_past = tmp_path / "no_past"
    shutil.copytree(path, no_past)
    inputs = [spec for spec in meta["inputs"] if spec["name"] == "input_ids"]
    outputs = [{"name": "logits"}, *meta["outputs"][1:]]
    (no_past / "metadata.json").write_text(
        json.dumps({**meta, "inputs": inputs, "outputs": outputs})
    )
    with pytest.raises(BitnetError, match="needs an artifact compiled from an export with past"):
        Generator(bitnet_tvm.load(no_past))
