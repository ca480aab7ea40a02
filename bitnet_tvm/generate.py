"""Text generation with a compiled model: prefill, then one decode step per new token.

The artifact must come from an export with ``with_past=True`` (inputs ``input_ids`` and
``past_key.{i}`` / ``past_value.{i}``, outputs ``logits`` and ``present_key.{i}`` /
``present_value.{i}``; see :mod:`bitnet_tvm.export`).  The KV cache stays on the device as TVM
tensors from step to step: each step's presents are the next step's pasts.  A scheme with a 3/4-bit
KV cache compiles to a packed cache (``metadata["kv_cache"]``, see
:mod:`bitnet_tvm.relay_passes.quantize_kv_cache`): each ``past_key.{i}`` is then uint8 codes with
``past_key_scale.{i}`` (and ``past_key_bos.{i}``) beside it, every ``past_*`` input fed by the
``present_*`` output of the same name; the loop is the same.  Only the logits of
the last position come back to numpy, where the next token is chosen (greedy, or nucleus
sampling with a temperature and a seeded ``numpy.random.Generator``).

Batches hold prompts of equal length (there is no attention mask).  A row that produced a stop
token is finished: it keeps being fed ``pad_token_id`` so the batch stays rectangular, its
later tokens are reported as ``pad_token_id``, and generation ends once every row is finished.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitnet_tvm.errors import BitnetError
from bitnet_tvm.runtime import CompiledModel

__all__ = [
    "GenerationConfig",
    "GenerationResult",
    "Generator",
    "Step",
    "TextStream",
    "sample_next",
]


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate.

    Parameters
    ----------
    max_new_tokens : int
        Tokens to generate per row (fewer when every row stops early).
    temperature : float
        0 is greedy (argmax); above 0 samples from ``softmax(logits / temperature)``.
    top_p : float
        Nucleus sampling: sample among the most likely tokens whose probabilities sum to at
        least ``top_p`` (the top token always stays, so ``top_p -> 0`` is greedy).
        1 keeps the whole vocabulary.  Ignored when greedy.
    seed : int or None
        Seed of the sampler's ``numpy.random.default_rng``; None draws a fresh one.
    stop_tokens : tuple of int
        Ids that finish a row (the stop token itself is part of the output).
    pad_token_id : int
        What a finished row is fed and reports from then on.
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop_tokens: tuple[int, ...] = ()
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if _not_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not _is_number(self.temperature) or not 0 <= self.temperature < float("inf"):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must lie in [0, 1], got {self.top_p!r}")
        if self.seed is not None and _not_int(self.seed):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")
        stop = self.stop_tokens
        if isinstance(stop, int | np.integer):
            stop = (stop,)
        stop = tuple(stop)
        if any(_not_int(t) for t in stop):
            raise ValueError(f"stop_tokens must be token ids (ints), got {self.stop_tokens!r}")
        object.__setattr__(self, "stop_tokens", tuple(int(t) for t in stop))
        if _not_int(self.pad_token_id):
            raise ValueError(f"pad_token_id must be an int, got {self.pad_token_id!r}")

    @property
    def greedy(self) -> bool:
        """True when tokens are chosen by argmax."""
        return self.temperature == 0


def _not_int(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int | np.integer)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | np.number)


@dataclass(frozen=True)
class Step:
    """One generated position: a token per row, and which rows are finished after it."""

    index: int
    tokens: np.ndarray  # int64 [batch]
    finished: np.ndarray  # bool [batch]


@dataclass(frozen=True)
class GenerationResult:
    """What :meth:`Generator.generate` produced and how long it took.

    ``tokens`` is ``[batch, steps]``: a finished row holds its stop token, then
    ``pad_token_id``.  ``lengths`` counts each row's tokens up to and including its stop token.
    ``prefill_seconds`` covers the prompt's forward pass and the first token;
    ``decode_seconds`` the ``steps - 1`` single-token steps after it (sampling included).
    """

    prompt_ids: np.ndarray
    tokens: np.ndarray
    finished: np.ndarray
    lengths: np.ndarray
    prefill_seconds: float
    decode_seconds: float

    @property
    def decode_steps(self) -> int:
        """Single-token forward passes run after the prefill."""
        return max(self.tokens.shape[1] - 1, 0)

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens produced by the decode steps per second, all rows together."""
        if self.decode_steps == 0 or self.decode_seconds <= 0:
            return float("nan")
        return self.decode_steps * self.tokens.shape[0] / self.decode_seconds


def sample_next(
    logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator
) -> np.ndarray:
    """Next token per row from last-position ``logits`` ``[batch, vocab]``.

    Greedy takes the first maximum (``numpy.argmax``).  Sampling divides by the temperature,
    takes the softmax in float64, keeps the smallest set of most likely tokens (stable order)
    whose mass reaches ``top_p``, renormalizes and draws one uniform number per row.
    """
    if config.greedy:
        return np.argmax(logits, axis=-1).astype(np.int64)
    z = logits.astype(np.float64) / config.temperature
    z -= z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    cum = np.cumsum(sorted_probs, axis=-1)
    # keep a token while the mass before it is below top_p: the top token always stays
    keep = (cum - sorted_probs) < config.top_p
    keep[:, 0] = True
    sorted_probs = np.where(keep, sorted_probs, 0.0)
    cum = np.cumsum(sorted_probs, axis=-1)
    u = rng.random(logits.shape[0]) * cum[:, -1]
    picked = np.minimum((cum <= u[:, None]).sum(axis=-1), keep.sum(axis=-1) - 1)
    return np.take_along_axis(order, picked[:, None], axis=-1)[:, 0].astype(np.int64)


def _cache_spec(compiled: CompiledModel) -> tuple[int, list[dict]]:
    """(layers, past input specs in run order) of a with-past artifact, or a clear error.

    The cache is whatever the artifact's ``past_*`` inputs are: fp32 ``past_key.{i}`` /
    ``past_value.{i}``, or a packed cache (``metadata["kv_cache"]``) where each of them is
    uint8 codes with ``past_key_scale.{i}`` (and ``past_key_bos.{i}``) beside it.  Each
    ``present_<x>`` output is the next step's ``past_<x>``, in the same order.
    """
    specs = compiled.get_inputs()
    outputs = [spec["name"] for spec in compiled.get_outputs()]
    past = [spec for spec in specs if spec["name"] != "input_ids"]
    layers = 0
    while any(spec["name"] == f"past_key.{layers}" for spec in past):
        layers += 1
    present = ["present_" + spec["name"][len("past_") :] for spec in past]
    ok = layers and len(past) + 1 == len(specs) and outputs == ["logits", *present]
    if not ok or not all(spec["name"].startswith("past_") for spec in past):
        raise BitnetError(
            "generation needs an artifact compiled from an export with past key/values "
            "(export_onnx(..., with_past=True) or `bitnet-tvm export --with-past`): inputs "
            "input_ids, past_key.{i}, past_value.{i} and outputs logits, present_key.{i}, "
            f"present_value.{{i}}; this artifact has inputs {[s['name'] for s in specs]} and "
            f"outputs {outputs}"
        )
    past_dim = next(spec for spec in past if spec["name"] == "past_key.0")["shape"][2:3]
    for spec in past:
        # axis 0 is the batch; any other symbolic axis must be the past length (0 when empty)
        if any(not isinstance(d, int) and [d] != past_dim for d in spec["shape"][1:]):
            raise BitnetError(
                f"{spec['name']} has shape {spec['shape']}; only the batch and past length may "
                "be symbolic"
            )
    return layers, past


def _last_logits(logits: Any) -> np.ndarray:
    """``logits[:, -1]`` of a ``[batch, seq, vocab]`` TVM tensor, copying only those rows.

    The prefill's logits cover every prompt position; a view per row (``_create_view``, a
    low-level TVM API) copies ``batch * vocab`` values instead of ``batch * seq * vocab``.
    """
    batch, seq, vocab = (int(d) for d in logits.shape)
    if seq == 1 or not hasattr(logits, "_create_view"):
        return logits.numpy()[:, -1]
    itemsize = np.dtype(str(logits.dtype)).itemsize
    rows = [
        logits._create_view((vocab,), relative_byte_offset=(r * seq + seq - 1) * vocab * itemsize)
        for r in range(batch)
    ]
    return np.stack([row.numpy() for row in rows])


class Generator:
    """Prefill + decode loop over a compiled with-past model.

    Parameters
    ----------
    compiled : CompiledModel
        An artifact compiled from a ``with_past=True`` export.
    max_length : int or None
        Most positions (prompt + new tokens) a sequence may take; None takes
        ``metadata["model"]["max_position_embeddings"]`` when the artifact records it, else
        ``metadata["max_positions"]`` (derived from the ONNX model by
        :func:`bitnet_tvm.frontend.max_positions.max_positions`), and no limit otherwise.

    Raises
    ------
    BitnetError
        If the artifact has no past key/value inputs.
    """

    def __init__(self, compiled: CompiledModel, *, max_length: int | None = None) -> None:
        if not isinstance(compiled, CompiledModel):
            raise TypeError(f"compiled must be a CompiledModel, got {type(compiled).__name__}")
        self.compiled = compiled
        self._layers, self._past = _cache_spec(compiled)
        info = compiled.metadata.get("model") or {}
        if max_length is None:
            max_length = info.get("max_position_embeddings")
        if max_length is None:  # derived from the ONNX graph at compile time, if it could be
            max_length = compiled.metadata.get("max_positions")
        if max_length is not None and (_not_int(max_length) or max_length < 1):
            raise ValueError(f"max_length must be an int >= 1 or None, got {max_length!r}")
        self.max_length: int | None = max_length
        self._vocab_size: int | None = info.get("vocab_size")

    @property
    def num_layers(self) -> int:
        """Decoder layers (past key/value pairs)."""
        return self._layers

    @property
    def vocab_size(self) -> int:
        """Vocabulary size: from the artifact's model info, else from one probe step."""
        if self._vocab_size is None:
            logits = self._forward(np.zeros((1, 1), np.int64), self._empty_cache(1))[0]
            self._vocab_size = int(logits.shape[-1])
        return self._vocab_size

    def _empty_cache(self, batch: int) -> dict[str, Any]:
        def shape(spec: dict) -> tuple[int, ...]:
            dims = spec["shape"]
            return (batch, *(d if isinstance(d, int) else 0 for d in dims[1:]))

        return {spec["name"]: np.zeros(shape(spec), spec["dtype"]) for spec in self._past}

    def _forward(self, ids: np.ndarray, cache: dict[str, Any]) -> list[Any]:
        return self.compiled.run_tvm({"input_ids": ids, **cache})

    def _next_cache(self, outputs: list[Any]) -> dict[str, Any]:
        names = (spec["name"] for spec in self._past)
        return dict(zip(names, outputs[1:], strict=True))

    def _check_prompt(self, prompt_ids: Any, config: GenerationConfig) -> np.ndarray:
        try:
            ids = np.asarray(prompt_ids)
        except ValueError:
            raise ValueError(
                "prompt_ids rows must all have the same length (batches are not padded)"
            ) from None
        if ids.dtype == object:
            raise ValueError(
                "prompt_ids rows must all have the same length (batches are not padded)"
            )
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2:
            raise ValueError(f"prompt_ids must be [seq] or [batch, seq], got shape {ids.shape}")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"prompt is empty (shape {ids.shape}); give at least one token")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"prompt_ids must be integer token ids, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        vocab = self.vocab_size
        for name, values in (
            ("prompt_ids", ids),
            ("stop_tokens", np.array(config.stop_tokens, np.int64)),
            ("pad_token_id", np.array([config.pad_token_id], np.int64)),
        ):
            bad = values[(values < 0) | (values >= vocab)]
            if bad.size:
                raise ValueError(
                    f"{name} holds id {int(bad[0])}, outside the vocabulary [0, {vocab})"
                )
        if self.max_length is not None:
            prompt_len = ids.shape[1]
            if prompt_len > self.max_length:
                raise ValueError(
                    f"prompt has {prompt_len} tokens, more than the model's maximum length "
                    f"{self.max_length}"
                )
            if prompt_len + config.max_new_tokens > self.max_length:
                raise ValueError(
                    f"prompt ({prompt_len} tokens) + max_new_tokens ({config.max_new_tokens}) "
                    f"exceeds the model's maximum length {self.max_length}; lower max_new_tokens "
                    f"to {self.max_length - prompt_len} or shorten the prompt"
                )
        return ids

    def stream(
        self, prompt_ids: Any, config: GenerationConfig | None = None, **changes: Any
    ) -> Iterator[Step]:
        """Yield one :class:`Step` per generated position, as soon as it is chosen.

        Parameters
        ----------
        prompt_ids : array-like of int, ``[seq]`` or ``[batch, seq]``
            Prompts, all of the same length.
        config : GenerationConfig, optional
            Settings; ``changes`` (e.g. ``max_new_tokens=8``) are applied on top.

        Raises
        ------
        ValueError
            Empty prompt, ragged batch, ids outside the vocabulary, or a prompt that does not
            leave room for ``max_new_tokens`` within ``max_length`` (raised here, not when
            iteration starts).
        """
        config = dataclasses.replace(config or GenerationConfig(), **changes)
        ids = self._check_prompt(prompt_ids, config)
        return self._steps(ids, config)

    def _steps(self, ids: np.ndarray, config: GenerationConfig) -> Iterator[Step]:
        rng = np.random.default_rng(config.seed)
        stop = np.array(config.stop_tokens, np.int64)
        finished = np.zeros(ids.shape[0], bool)
        outputs = self._forward(ids, self._empty_cache(ids.shape[0]))
        for index in range(config.max_new_tokens):
            tokens = sample_next(_last_logits(outputs[0]), config, rng)
            tokens = np.where(finished, config.pad_token_id, tokens)
            finished = finished | np.isin(tokens, stop)
            yield Step(index, tokens, finished.copy())
            if finished.all() or index + 1 == config.max_new_tokens:
                return
            outputs = self._forward(tokens[:, None], self._next_cache(outputs))

    def generate(
        self,
        prompt_ids: Any,
        config: GenerationConfig | None = None,
        *,
        on_step: Callable[[Step], None] | None = None,
        **changes: Any,
    ) -> GenerationResult:
        """Generate for ``prompt_ids``; ``on_step`` (optional) sees each :class:`Step`.

        Takes the arguments of :meth:`stream`.  The time spent in ``on_step`` is not counted
        in the result's timings.
        """
        config = dataclasses.replace(config or GenerationConfig(), **changes)
        prompt = self._check_prompt(prompt_ids, config)
        steps = self._steps(prompt, config)
        collected: list[Step] = []
        elapsed: list[float] = []
        while True:
            start = time.perf_counter()
            step = next(steps, None)
            elapsed.append(time.perf_counter() - start)
            if step is None:
                break
            collected.append(step)
            if on_step is not None:
                on_step(step)
        tokens = np.stack([s.tokens for s in collected], axis=1)
        finished = collected[-1].finished
        lengths = np.full(tokens.shape[0], tokens.shape[1], np.int64)
        for s in reversed(collected):  # the first step at which each row was finished
            lengths[s.finished] = s.index + 1
        return GenerationResult(
            prompt_ids=prompt,
            tokens=tokens,
            finished=finished,
            lengths=lengths,
            prefill_seconds=elapsed[0],
            decode_seconds=float(sum(elapsed[1:])),
        )


class TextStream:
    """Turn token ids, pushed one at a time, into text pieces, for any tokenizer's ``decode``.

    :meth:`push` returns what the decoded text grew by.  A trailing U+FFFD (perhaps an
    incomplete UTF-8 sequence that later tokens complete) is held back until the text grows
    past it or :meth:`flush` is called.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._text = ""
        self._emitted = 0

    def push(self, token: int) -> str:
        """Add one token; return the text that is now final."""
        self._ids.append(int(token))
        self._text = self._decode(self._ids)
        return self._take(len(self._text.rstrip("\ufffd")))

    def flush(self) -> str:
        """Return whatever is held back."""
        return self._take(len(self._text))

    def _take(self, end: int) -> str:
        piece = self._text[self._emitted : end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        return piece
