"""Train small byte-level BitNet models (``fp``, ``b1.58``, ``a4.8``) on CPU and compare them.

This reproduces, at toy scale, the a4.8 paper's accuracy table (arXiv 2411.04965, Table 1:
FP16 LLaMA vs b1.58 vs a4.8 perplexity) and its sparsity table (Table 2), and produces the
built-in model (:mod:`bitnet_tvm.model.builtin`)::

    apt-get install fortunes    # the default corpus, /usr/share/games/fortunes (Debian/Ubuntu)
    python -m bitnet_tvm.train --steps 800 --out artifacts/accuracy \\
        --results benchmarks/results/accuracy.json --plot benchmarks/results/accuracy.png \\
        --export-builtin bitnet_tvm/assets

Corpus.  The default is the ``fortunes`` package's quotations (~2.6 MB of English quotes,
jokes, poems, literature excerpts and definitions; the ``ascii-art`` and ``translate-me``
files are left out): it is the most natural English text installable offline here (the
Python docs of ``python3.11-doc`` are larger but technical reStructuredText, files under
``/usr/share/doc`` are mostly changelogs and licenses).  Any text file or directory of text
files works with ``--corpus PATH``.  Files are cut into documents (fortunes at ``%`` lines,
other text at blank lines); every ``heldout_every``-th document (``i % n == n // 2``) is held
out, the rest is training text, so both splits cover every file.

Model and recipe.  One architecture for all schemes (default: hidden 256, 4 layers, 4 heads of
64, ReLU² GLU of 688, byte vocabulary 256 of :class:`~bitnet_tvm.tokenizer.ByteTokenizer`
without BOS, untied LM head).  AdamW (betas 0.9/0.95, weight decay 0.05 on the linear weights
only), linear warm-up then cosine decay to 10 % of the peak rate, gradient clipping at 1,
random windows of ``seq_len + 1`` bytes drawn from a generator seeded by ``(seed, step)``: with
``torch.set_num_threads(1)`` a run is deterministic.  ``a4.8`` follows the paper's two stages:
the model trains with b1.58's 8-bit activations first, then switches, optimizer state and all,
to the hybrid INT4 / TopK-INT8 quantizers (:meth:`BitNetForCausalLM.set_scheme
<bitnet_tvm.model.BitNetForCausalLM.set_scheme>`) for the last ``1 - a48_switch`` of the steps.
The paper spends 5 % of its tokens in stage 2; a run of a few hundred steps needs more to adapt,
so the default switch is at 80 %.  Stage 1 is exactly the ``b1.58`` run (same seed, data order
and schedule), so when both are trained the ``b1.58`` run saves its state at the switch step and
``a4.8`` resumes from it instead of repeating it.

Perplexity is per byte, on the held-out split in non-overlapping windows of ``seq_len + 1``
bytes (each window predicts its last ``seq_len`` bytes; a partial last window is dropped).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.machine import cpu_model
from bitnet_tvm.model import BitNetConfig, BitNetForCausalLM, measure_sparsity
from bitnet_tvm.schemes import get_scheme

__all__ = [
    "FORTUNES_DIR",
    "SCHEMES",
    "Corpus",
    "TrainConfig",
    "compiled_forward",
    "evaluate_nll",
    "load_corpus",
    "main",
    "model_config",
    "nll_sum",
    "plot",
    "save_checkpoint",
    "summarize",
    "torch_forward",
    "train",
    "window_batches",
]

log = logging.getLogger(__name__)

#: Default corpus: the Debian/Ubuntu ``fortunes`` package (``apt-get install fortunes``).
FORTUNES_DIR = Path("/usr/share/games/fortunes")
#: Schemes this script trains, in table order.
SCHEMES: tuple[str, ...] = ("fp", "b1.58", "a4.8")

_INSTALL_HINT = "apt-get update && apt-get install fortunes"
_SKIP_SUFFIXES = (".dat", ".u8", ".pdat")
_SKIP_NAMES = frozenset({"ascii-art", "translate-me"})  # pictures; not English
_FORTUNE_SEP = re.compile(r"^%[ \t]*$", re.MULTILINE)
_OVERSTRIKE = re.compile(r".\x08")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# corpus


@dataclass(frozen=True)
class Corpus:
    """Training and held-out bytes of a text corpus.

    Attributes
    ----------
    train, heldout : ndarray of uint8
        UTF-8 bytes of the two splits (documents joined by their separator).
    info : dict
        Source path, files, document counts and byte sizes (JSON-able).
    """

    train: np.ndarray
    heldout: np.ndarray
    info: dict[str, Any]


def _corpus_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(
            f"corpus {str(path)!r} does not exist; the default corpus is the fortunes package "
            f"({_INSTALL_HINT}), or pass a text file or directory with --corpus"
        )
    files = [
        f
        for f in sorted(path.iterdir())
        if f.is_file()
        and not f.is_symlink()
        and not f.name.startswith(".")
        and not f.name.endswith(_SKIP_SUFFIXES)
        and f.name not in _SKIP_NAMES
    ]
    if not files:
        raise ValueError(f"corpus directory {str(path)!r} holds no text files")
    return files


def _documents(text: str) -> tuple[list[str], str]:
    """Documents of one file and the separator that joins them back."""
    text = _CONTROL.sub("", _OVERSTRIKE.sub("", text.replace("\r\n", "\n")))
    if _FORTUNE_SEP.search(text):
        parts, sep = _FORTUNE_SEP.split(text), "%\n"
    else:
        parts, sep = re.split(r"\n[ \t]*\n", text), "\n"
    docs = [p.strip("\n") + "\n" for p in parts if p.strip()]
    return docs, sep


def load_corpus(path: str | os.PathLike[str] | None = None, heldout_every: int = 20) -> Corpus:
    """Read a corpus and split it into training and held-out documents.

    Parameters
    ----------
    path : path-like or None
        A text file, or a directory whose regular files are read in name order (``*.dat``,
        ``*.u8``, symbolic links, hidden files, ``ascii-art`` and ``translate-me`` skipped).
        None is :data:`FORTUNES_DIR`.
    heldout_every : int
        Every ``heldout_every``-th document (index ``i % n == n // 2``, counted over all files)
        is held out.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (the message gives the install command of the default).
    ValueError
        If ``heldout_every < 2`` or a split comes out empty.
    """
    if isinstance(heldout_every, bool) or not isinstance(heldout_every, int) or heldout_every < 2:
        raise ValueError(f"heldout_every must be an int >= 2, got {heldout_every!r}")
    root = Path(path) if path is not None else FORTUNES_DIR
    train: list[str] = []
    heldout: list[str] = []
    index = 0
    files = _corpus_files(root)
    for f in files:
        docs, sep = _documents(f.read_bytes().decode("utf-8", errors="replace"))
        for doc in docs:
            split = heldout if index % heldout_every == heldout_every // 2 else train
            split.append(doc + sep)
            index += 1
    if not train or not heldout:
        raise ValueError(
            f"corpus {str(root)!r} has {index} document(s): too few for a held-out split "
            f"of 1 in {heldout_every}"
        )
    train_b = np.frombuffer("".join(train).encode("utf-8"), dtype=np.uint8)
    heldout_b = np.frombuffer("".join(heldout).encode("utf-8"), dtype=np.uint8)
    info = {
        "path": str(root),
        "files": [f.name for f in files],
        "documents": {"train": len(train), "heldout": len(heldout)},
        "bytes": {"train": int(train_b.size), "heldout": int(heldout_b.size)},
        "heldout_rule": f"document i is held out when i % {heldout_every} == {heldout_every // 2}",
    }
    return Corpus(train_b, heldout_b, info)


# --------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class TrainConfig:
    """Architecture and optimization settings shared by every scheme of a comparison.

    Parameters
    ----------
    hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads : int
        Model sizes (vocabulary: 256 bytes).
    seq_len, batch_size : int
        Training window (predicted bytes per row) and rows per step.
    steps, warmup_steps : int
        Optimizer steps in all, and of linear warm-up.
    lr, min_lr_ratio, weight_decay, grad_clip : float
        Peak learning rate, final rate as a share of it (cosine decay), AdamW weight decay
        (linear weights only) and gradient-norm clip.
    a48_switch : float
        Share of the steps ``a4.8`` trains with 8-bit activations before switching.
    seed : int
        Seed of the initialization and of the data order.
    eval_every, eval_windows : int
        Held-out loss every ``eval_every`` steps on the first ``eval_windows`` windows.
    """

    hidden_size: int = 256
    intermediate_size: int = 688
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    seq_len: int = 256
    batch_size: int = 8
    steps: int = 800
    warmup_steps: int = 30
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    a48_switch: float = 0.8
    seed: int = 0
    eval_every: int = 50
    eval_windows: int = 32

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"TrainConfig.{f.name} must be an int >= 0, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"TrainConfig.{f.name} must be a number >= 0, got {value!r}")
        if self.steps < 1 or self.seq_len < 2 or self.batch_size < 1:
            raise ValueError("TrainConfig steps, batch_size must be >= 1 and seq_len >= 2")
        if not 0.0 < self.a48_switch < 1.0:
            raise ValueError(f"TrainConfig.a48_switch must lie in (0, 1), got {self.a48_switch}")

    @property
    def switch_step(self) -> int:
        """First step of a4.8's second stage."""
        return max(1, min(self.steps - 1, round(self.a48_switch * self.steps)))

    def stages(self, scheme: str) -> list[tuple[int, str]]:
        """``(first step, scheme)`` of each training stage of ``scheme``."""
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        if scheme == "a4.8":
            return [(0, "b1.58"), (self.switch_step, "a4.8")]
        return [(0, scheme)]

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)


def model_config(config: TrainConfig, scheme: str) -> BitNetConfig:
    """The :class:`BitNetConfig` of ``config``'s architecture under ``scheme``."""
    return BitNetConfig(
        vocab_size=256,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.seq_len,
        scheme=get_scheme(scheme).name,
    )


# --------------------------------------------------------------------------------------------
# data and evaluation


def _batch(data: np.ndarray, config: TrainConfig, step: int) -> torch.Tensor:
    """Rows of ``seq_len + 1`` bytes at random offsets, drawn from seed ``(seed, step)``."""
    span = config.seq_len + 1
    if data.size < span:
        raise ValueError(f"training text has {data.size} bytes, fewer than a window ({span})")
    rng = np.random.default_rng([config.seed, step])
    starts = rng.integers(0, data.size - span + 1, size=config.batch_size)
    rows = np.stack([data[s : s + span] for s in starts])
    return torch.from_numpy(rows.astype(np.int64))


def window_batches(
    data: np.ndarray, seq_len: int, batch_size: int = 16, max_windows: int | None = None
) -> list[np.ndarray]:
    """Non-overlapping ``[rows, seq_len + 1]`` int64 windows of ``data`` (stride ``seq_len``),
    in batches; a partial last window is dropped."""
    count = (data.size - 1) // seq_len
    if max_windows is not None:
        count = min(count, max_windows)
    if count < 1:
        raise ValueError(f"text of {data.size} bytes is shorter than one window of {seq_len + 1}")
    idx = np.arange(count)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    windows = data[idx].astype(np.int64)
    return [windows[i : i + batch_size] for i in range(0, count, batch_size)]


def nll_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed negative log-likelihood (nats) of ``targets`` under ``logits`` ``[..., vocab]``,
    in float64 (one function for torch and compiled logits alike)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(z).sum(axis=-1))
    picked = np.take_along_axis(z, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return float(np.sum(logz - picked))


def evaluate_nll(
    forward: Callable[[np.ndarray], np.ndarray],
    data: np.ndarray,
    seq_len: int,
    batch_size: int = 16,
    max_windows: int | None = None,
) -> dict[str, float]:
    """Teacher-forced per-byte loss of ``forward`` over ``data`` (see :func:`window_batches`).

    Parameters
    ----------
    forward : callable
        ``input_ids`` int64 ``[rows, seq_len]`` -> logits float32 ``[rows, seq_len, vocab]``
        (a torch model wrapped by :func:`torch_forward`, or a compiled model).

    Returns
    -------
    dict
        ``nll`` (nats per byte), ``ppl`` (``exp(nll)``), ``bpb`` (bits per byte), ``bytes``.
    """
    total, count = 0.0, 0
    for windows in window_batches(data, seq_len, batch_size, max_windows):
        total += nll_sum(forward(windows[:, :-1]), windows[:, 1:])
        count += windows[:, 1:].size
    nll = total / count
    return {"nll": nll, "ppl": math.exp(nll), "bpb": nll / _LN2, "bytes": count}


def torch_forward(model: BitNetForCausalLM) -> Callable[[np.ndarray], np.ndarray]:
    """``ids -> logits`` of ``model`` in numpy, without gradients."""

    def forward(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(ids))[0].numpy()

    return forward


def compiled_forward(model: BitNetForCausalLM, workdir: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Export ``model`` (int8 codes when it holds them, else ternary constants), compile it with
    TVM for the host CPU and return its ``ids -> logits``."""
    from bitnet_tvm.compiler import compile_model
    from bitnet_tvm.export import export_onnx

    int8 = any(getattr(m, "int8_codes", False) for m in model.modules())
    onnx_path = export_onnx(model, workdir / "model.onnx", weights="int8" if int8 else "ternary")
    compiled = compile_model(onnx_path, target="llvm")
    return lambda ids: compiled.run(["logits"], {"input_ids": ids})[0]


# --------------------------------------------------------------------------------------------
# training


def _optimizer(model: BitNetForCausalLM, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim == 2 and "embed" not in n)]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """``torch.save`` ``state`` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


def _state(model, optimizer, config, scheme, step, history) -> dict[str, Any]:
    """A deep copy of the training state (the live tensors keep changing after it is taken)."""
    return copy.deepcopy(
        {
            "train_config": dataclasses.asdict(config),
            "scheme": scheme,
            "active_scheme": model.config.scheme,
            "model_config": model.config.to_dict(),
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
        }
    )


def train(
    corpus: Corpus,
    scheme: str,
    config: TrainConfig,
    *,
    resume: dict[str, Any] | None = None,
    snapshot_at: int | None = None,
    on_snapshot: Callable[[dict[str, Any]], None] | None = None,
    log_every: int = 25,
) -> tuple[BitNetForCausalLM, list[dict[str, float]]]:
    """Train one model of ``config``'s architecture under ``scheme`` (``fp``/``b1.58``/``a4.8``).

    Parameters
    ----------
    corpus : Corpus
        Training text and held-out text (for the periodic loss).
    scheme : str
        One of :data:`SCHEMES`; ``a4.8`` runs two stages (see the module docstring).
    config : TrainConfig
        Sizes, schedule and seed.
    resume : dict, optional
        A state from ``on_snapshot`` of a run with the same ``config`` whose active scheme at
        that step is the one ``scheme`` would have (e.g. the ``b1.58`` run's state at
        ``config.switch_step``, to continue as ``a4.8``); training continues from its step.
    snapshot_at, on_snapshot : optional
        Call ``on_snapshot(state)`` with the full state (model, optimizer, history) just
        before step ``snapshot_at`` runs.
    log_every : int
        Log the training loss every so many steps.

    Returns
    -------
    model : BitNetForCausalLM
        The trained model (float master weights, training mode off).
    history : list of dict
        Per step ``step``, ``lr``, ``loss`` (nats/byte), ``scheme``, ``seconds``; at eval steps
        also ``eval_nll``.
    """
    stages = config.stages(scheme)
    model = BitNetForCausalLM(model_config(config, stages[0][1]), seed=config.seed)
    optimizer = _optimizer(model, config)
    start, history = 0, []
    if resume is not None:
        if resume.get("train_config") != dataclasses.asdict(config):
            raise ValueError("resume state was trained with another TrainConfig")
        start = int(resume["step"])
        if not 0 < start < config.steps:
            raise ValueError(f"resume state is at step {start}, outside (0, {config.steps})")
        # the state was taken before step `start` ran (and before any switch at that step)
        active = [s for first, s in stages if first < start][-1]
        if resume["active_scheme"] != active:
            raise ValueError(
                f"resume state at step {start} has scheme {resume['active_scheme']!r}; a "
                f"{scheme!r} run has {active!r} there"
            )
        model.set_scheme(active)
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        history = [dict(h) for h in resume["history"]]
    eval_ids = window_batches(corpus.heldout, config.seq_len, 16, config.eval_windows)
    switches = dict(stages)
    elapsed0 = history[-1]["seconds"] if history else 0.0
    t0 = time.perf_counter()
    model.train()
    for step in range(start, config.steps):
        if step in switches and model.config.scheme != switches[step]:
            log.info("[%s] step %d: switching to scheme %s", scheme, step, switches[step])
            model.set_scheme(switches[step])
        if step == snapshot_at and on_snapshot is not None:
            on_snapshot(_state(model, optimizer, config, scheme, step, history))
        lr = config.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids = _batch(corpus.train, config, step)
        logits, _ = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        record = {
            "step": step + 1,
            "lr": lr,
            "loss": loss.item(),
            "scheme": model.config.scheme,
            "seconds": elapsed0 + time.perf_counter() - t0,
        }
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"[{scheme}] loss is {record['loss']} at step {step + 1}")
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            model.eval()
            record["eval_nll"] = _eval_subset(model, eval_ids)
            model.train()
        history.append(record)
        if (step + 1) % log_every == 0 or "eval_nll" in record:
            log.info(
                "[%s] step %d/%d loss %.4f%s lr %.2e %.0fs",
                scheme,
                step + 1,
                config.steps,
                record["loss"],
                f" eval {record['eval_nll']:.4f}" if "eval_nll" in record else "",
                lr,
                record["seconds"],
            )
    return model.eval(), history


def _eval_subset(model: BitNetForCausalLM, batches: list[np.ndarray]) -> float:
    forward = torch_forward(model)
    total = sum(nll_sum(forward(b[:, :-1]), b[:, 1:]) for b in batches)
    return total / sum(b[:, 1:].size for b in batches)


# --------------------------------------------------------------------------------------------
# command line


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bitnet_tvm.train",
        description="Train tiny byte-level fp / b1.58 / a4.8 BitNet models and compare them.",
    )
    p.add_argument("--corpus", default=None, help=f"text file or directory ({FORTUNES_DIR})")
    p.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    p.add_argument("--out", default="runs/accuracy", help="checkpoint directory")
    p.add_argument("--results", default=None, help="write the results JSON here")
    p.add_argument("--plot", default=None, help="write training curves (PNG) here")
    p.add_argument(
        "--export-builtin", default=None, help="write the trained a4.8 model as the built-in asset"
    )
    p.add_argument(
        "--no-compiled-check",
        action="store_true",
        help="skip the TVM-compiled perplexity of the a4.8 model",
    )
    p.add_argument(
        "--fp-lrs",
        type=float,
        nargs="+",
        default=None,
        help="peak learning rates to train the fp baseline with (default: --lr); the best on "
        "the held-out split is the table's fp, all are reported",
    )
    p.add_argument("--heldout-every", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: deterministic)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(
            flag, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name)
        )
    return p.parse_args(argv)


def _final_state(model, config, scheme, history) -> dict[str, Any]:
    return {
        "train_config": dataclasses.asdict(config),
        "scheme": scheme,
        "model_config": model.config.to_dict(),
        "step": config.steps,
        "model": model.state_dict(),
        "history": history,
    }


def _load_or_train(
    corpus: Corpus, scheme: str, config: TrainConfig, out: Path, name: str | None = None
) -> tuple[BitNetForCausalLM, list[dict[str, float]]]:
    """Reuse ``out/<name>.pt`` (``name`` defaults to ``scheme``) when it holds a finished run of
    ``config``, else train (a4.8 resumes from ``out/a4.8-stage1.pt`` when the b1.58 run left
    it)."""
    final = out / f"{name or scheme}.pt"
    wanted = dataclasses.asdict(config)
    if final.is_file():
        state = torch.load(final, weights_only=False)
        if state["train_config"] == wanted and state["step"] == config.steps:
            log.info("[%s] reusing finished run %s", scheme, final)
            model = BitNetForCausalLM(BitNetConfig.from_dict(state["model_config"]))
            model.load_state_dict(state["model"])
            return model.eval(), state["history"]
    stage1_path = out / "a4.8-stage1.pt"
    resume = None
    if scheme == "a4.8" and stage1_path.is_file():
        state = torch.load(stage1_path, weights_only=False)
        if state["train_config"] == wanted:
            log.info(
                "[a4.8] stage 1 is the b1.58 run up to step %d (%s)", state["step"], stage1_path
            )
            resume = state
    model, history = train(
        corpus,
        scheme,
        config,
        resume=resume,
        snapshot_at=config.switch_step if scheme == "b1.58" else None,
        on_snapshot=lambda state: save_checkpoint(stage1_path, state),
    )
    save_checkpoint(final, _final_state(model, config, scheme, history))
    return model, history


def _fp_baseline(
    corpus: Corpus, config: TrainConfig, out: Path, lrs: Sequence[float]
) -> tuple[BitNetForCausalLM, list[dict[str, float]], dict[str, Any]]:
    """Train the fp baseline at each peak rate in ``lrs`` and keep the best on the held-out
    split (the ternary schemes train at ``config.lr``; BitNet prefers higher rates than FP)."""
    runs = {}
    for lr in lrs:
        cfg = dataclasses.replace(config, lr=lr)
        name = "fp" if lr == config.lr else f"fp-lr{lr:g}"
        model, history = _load_or_train(corpus, "fp", cfg, out, name)
        metrics = evaluate_nll(torch_forward(model), corpus.heldout, config.seq_len)
        log.info("[fp lr %g] held-out ppl %.4f", lr, metrics["ppl"])
        runs[lr] = (model, history, metrics)
    best = min(runs, key=lambda lr: runs[lr][2]["nll"])
    sweep = {
        "chosen_lr": best,
        "runs": [
            {
                "lr": lr,
                "ppl": m["ppl"],
                "bpb": m["bpb"],
                "train_seconds": round(h[-1]["seconds"], 1),
                "curve": [[r["step"], r["eval_nll"] / _LN2] for r in h if "eval_nll" in r],
            }
            for lr, (_, h, m) in runs.items()
        ],
    }
    return runs[best][0], runs[best][1], sweep


def _relative(a: float, b: float) -> float:
    return (a - b) / b


def _sample_text(heldout: np.ndarray, limit: int = 6144) -> str:
    """The held-out text up to ``limit`` bytes, cut after the last complete document."""
    text = heldout[:limit].tobytes().decode("utf-8", errors="ignore")
    cut = text.rfind("%\n")
    return text[: cut + 2] if cut > 0 else text


def _machine() -> dict[str, Any]:
    import tvm

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tvm": tvm.__version__,
        "numpy": np.__version__,
    }


def summarize(
    corpus: Corpus,
    config: TrainConfig,
    models: dict[str, BitNetForCausalLM],
    histories: dict[str, list[dict[str, float]]],
    *,
    export_builtin: Path | None = None,
    compiled_check: bool = True,
    workdir: Path,
) -> dict[str, Any]:
    """Evaluate the trained models on the full held-out split and collect the results table:
    perplexity per scheme, sparsity of a4.8 (and b1.58), and, for the a4.8 model as shipped,
    the perplexity of its TVM-compiled form."""
    seq = config.seq_len
    results: dict[str, Any] = {"schemes": {}}
    for scheme, model in models.items():
        hist = histories[scheme]
        metrics = evaluate_nll(torch_forward(model), corpus.heldout, seq)
        metrics["train_seconds"] = round(hist[-1]["seconds"], 1)
        metrics["steps"] = len(hist)
        metrics["train_bytes"] = len(hist) * config.batch_size * seq
        results["schemes"][scheme] = metrics
        log.info("[%s] held-out ppl %.4f (%.4f bits/byte)", scheme, metrics["ppl"], metrics["bpb"])
    ppl = {s: m["ppl"] for s, m in results["schemes"].items()}
    if {"fp", "b1.58"} <= set(ppl):
        results["b1.58_vs_fp"] = _relative(ppl["b1.58"], ppl["fp"])
    if {"b1.58", "a4.8"} <= set(ppl):
        results["a4.8_vs_b1.58"] = _relative(ppl["a4.8"], ppl["b1.58"])
    sample_ids = torch.from_numpy(window_batches(corpus.heldout, seq, 16)[0][:, :-1])
    results["sparsity_input"] = f"{sample_ids.shape[0]} held-out windows of {seq} bytes"
    results["sparsity"] = {
        s: measure_sparsity(models[s], sample_ids) for s in ("a4.8", "b1.58") if s in models
    }
    if "b1.58" in models:  # b1.58's final weights under a4.8's quantizers, without stage 2
        direct = copy.deepcopy(models["b1.58"]).set_scheme("a4.8")
        results["b1.58_weights_a4.8_activations_no_stage2"] = evaluate_nll(
            torch_forward(direct), corpus.heldout, seq
        )
    if "a4.8" in models and export_builtin is not None:
        results["builtin"] = _ship(corpus, config, models["a4.8"], results, export_builtin)
        if compiled_check:
            results["builtin"].update(_compiled_check(corpus, export_builtin, seq, workdir))
    return results


def _ship(corpus, config, model, results, directory: Path) -> dict[str, Any]:
    from bitnet_tvm.model.builtin import load_builtin_model, save_builtin_model

    info = {
        "corpus": {k: corpus.info[k] for k in ("path", "documents", "bytes", "heldout_rule")},
        "train_config": dataclasses.asdict(config),
        "heldout": results["schemes"]["a4.8"],
        "sparsity": results["sparsity"].get("a4.8"),
        "command": "python -m bitnet_tvm.train " + " ".join(sys.argv[1:]),
    }
    sample = _sample_text(corpus.heldout)
    data = np.frombuffer(sample.encode("utf-8"), dtype=np.uint8)
    info["heldout_sample"] = evaluate_nll(torch_forward(model), data, config.seq_len)
    save_builtin_model(model, directory, info=info, heldout_sample=sample)
    loaded = load_builtin_model(directory)
    metrics = evaluate_nll(torch_forward(loaded), corpus.heldout, config.seq_len)
    size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    return {
        "asset_dir": str(directory),
        "asset_bytes": size,
        "loaded_torch_ppl": metrics["ppl"],
        "loaded_equals_trained": metrics["nll"] == results["schemes"]["a4.8"]["nll"],
    }


def _compiled_check(corpus, directory: Path, seq: int, workdir: Path) -> dict[str, Any]:
    from bitnet_tvm.model.builtin import load_builtin_model

    model = load_builtin_model(directory)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    forward = compiled_forward(model, workdir)
    compile_s = time.perf_counter() - start
    compiled = evaluate_nll(forward, corpus.heldout, seq)
    torch_m = evaluate_nll(torch_forward(model), corpus.heldout, seq)
    log.info("compiled ppl %.5f vs torch %.5f", compiled["ppl"], torch_m["ppl"])
    return {
        "compiled_target": "llvm (host CPU)",
        "compile_seconds": round(compile_s, 1),
        "compiled_ppl": compiled["ppl"],
        "compiled_bpb": compiled["bpb"],
        "torch_ppl": torch_m["ppl"],
        "compiled_vs_torch_ppl": _relative(compiled["ppl"], torch_m["ppl"]),
    }


def plot(results: dict[str, Any], histories: dict[str, list[dict]], path: Path) -> Path:
    """Held-out loss curves (bits/byte) of every scheme and the final perplexities, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    sweep = results.get("fp_lr_sweep")
    for scheme, hist in histories.items():
        evals = [(h["step"], h["eval_nll"] / _LN2) for h in hist if "eval_nll" in h]
        label = f"fp (lr {sweep['chosen_lr']:g})" if scheme == "fp" and sweep else scheme
        ax.plot(*zip(*evals, strict=True), marker="o", ms=3, label=label)
    for run in sweep["runs"] if sweep else []:
        if run["lr"] != sweep["chosen_lr"]:
            steps, bpb = zip(*run["curve"], strict=True)
            ax.plot(steps, bpb, ls="--", color="C0", alpha=0.5, label=f"fp (lr {run['lr']:g})")
    if "a4.8" in histories:
        switch = next(h["step"] for h in histories["a4.8"] if h["scheme"] == "a4.8")
        ax.axvline(switch, color="grey", ls=":", lw=1)
        ax.annotate("a4.8 stage 2", (switch, ax.get_ylim()[1]), fontsize=8, va="top", ha="right")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out loss (bits/byte, subset)")
    ax.set_title("training curves")
    ax.legend()
    schemes = list(results["schemes"])
    values = [results["schemes"][s]["ppl"] for s in schemes]
    bars = bx.bar(schemes, values, color=["C0", "C1", "C2"][: len(schemes)])
    bx.bar_label(bars, fmt="%.3f")
    bx.set_ylim(min(values) * 0.9, max(values) * 1.05)
    bx.set_ylabel("held-out perplexity per byte")
    bx.set_title(f"final ({results['schemes'][schemes[0]]['bytes']} held-out bytes)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_open(path) as f:
        f.write(json.dumps(data, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bitnet_tvm.train`` (see the module docstring)."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    corpus = load_corpus(args.corpus, args.heldout_every)
    log.info("corpus %s: %s", corpus.info["path"], corpus.info["bytes"])
    out = Path(args.out)
    models, histories = {}, {}
    fp_sweep: dict[str, Any] = {}
    for scheme in (s for s in SCHEMES if s in args.schemes):
        if scheme == "fp" and args.fp_lrs:
            models["fp"], histories["fp"], fp_sweep = _fp_baseline(corpus, config, out, args.fp_lrs)
            continue
        models[scheme], histories[scheme] = _load_or_train(corpus, scheme, config, out)
    results = {
        "command": "python -m bitnet_tvm.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": _machine(),
        "corpus": corpus.info,
        "train_config": dataclasses.asdict(config),
        "model_config": models[next(iter(models))].config.replace(scheme="fp").to_dict(),
        "parameters": sum(p.numel() for p in models[next(iter(models))].parameters()),
        **summarize(
            corpus,
            config,
            models,
            histories,
            export_builtin=Path(args.export_builtin) if args.export_builtin else None,
            compiled_check=not args.no_compiled_check,
            workdir=out / "compiled",
        ),
        "curves": {
            s: [
                {"step": h["step"], "eval_bpb": h["eval_nll"] / _LN2, "scheme": h["scheme"]}
                for h in hist
                if "eval_nll" in h
            ]
            for s, hist in histories.items()
        },
    }
    if fp_sweep:
        results["fp_lr_sweep"] = fp_sweep
        results["schemes"]["fp"]["lr"] = fp_sweep["chosen_lr"]
    if args.results:
        _write_json(Path(args.results), results)
    if args.plot:
        plot(results, histories, Path(args.plot))
    print(json.dumps({k: results[k] for k in results if k != "curves"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
