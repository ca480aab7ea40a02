"""Helpers shared by the generation and CLI tests (fixtures: the tests import no test modules)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import bitnet_tvm.compiler
from bitnet_tvm.model import BitNetForCausalLM


def _prompts(batch: int, seq: int = 6, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (2, seq))[:batch].astype(np.int64)


@torch.no_grad()
def _torch_greedy(model: BitNetForCausalLM, ids: np.ndarray, steps: int):
    """Greedy tokens of the PyTorch model (past_key_values), and the smallest top-2 margin."""
    x, past, tokens, margin = torch.from_numpy(ids), None, [], np.inf
    for _ in range(steps):
        logits, past = model(x, past)
        last = logits[:, -1].numpy()
        top2 = np.sort(last, axis=-1)[:, -2:]
        margin = min(margin, float((top2[:, 1] - top2[:, 0]).min()))
        tokens.append(np.argmax(last, axis=-1))
        x = torch.from_numpy(tokens[-1][:, None])
    return np.stack(tokens, axis=1), margin


@pytest.fixture
def prompts() -> Callable[..., np.ndarray]:
    """``prompts(batch, seq=6, seed=2)``: byte-id prompts (rows of one fixed 2-row draw)."""
    return _prompts


@pytest.fixture
def torch_greedy() -> Callable:
    """``torch_greedy(model, ids, steps)`` -> (tokens, smallest top-2 logit margin)."""
    return _torch_greedy


@pytest.fixture
def compile_calls(monkeypatch) -> dict:
    """Replace ``compile_model`` with a stub for CLI tests; returns the keyword arguments of the
    latest call (updated in place)."""
    seen: dict = {}

    def fake_compile(model, **kwargs):
        seen.update(kwargs)
        report = SimpleNamespace(unfused_matmuls=0)
        return SimpleNamespace(save=lambda path: path, report=report)

    monkeypatch.setattr(bitnet_tvm.compiler, "compile_model", fake_compile)
    return seen
