"""Measurements: peak resident memory of a block, and best-of-N timings of a backend.

Timings are the minimum over ``repeats`` runs (the least disturbed one: these machines are
shared), each run timed with :func:`time.perf_counter`.  Peak memory is the process's RSS,
sampled every :data:`SAMPLE_SECONDS` by a thread while a block runs, minus the RSS when the block
started (so it counts what the block allocated and kept or used at its peak, e.g. loading a
backend and running it once).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import psutil

__all__ = ["PeakRSS", "Timing", "best_timing"]

#: Sampling period of :class:`PeakRSS`.
SAMPLE_SECONDS = 0.005


class PeakRSS:
    """``with PeakRSS() as m: ...`` then ``m.delta`` (bytes): peak RSS in the block minus RSS at
    its start (never negative); ``m.peak`` is the absolute peak."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.start = 0
        self.peak = 0

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def delta(self) -> int:
        """Bytes: peak minus start."""
        return max(self.peak - self.start, 0)


@dataclass(frozen=True)
class Timing:
    """One prefill + greedy decode run.

    ``prefill_seconds`` is the forward pass over the prompt (with an empty cache);
    ``decode_seconds`` the ``steps`` single-token forward passes after it (cache kept);
    ``tokens`` ``[batch, steps + 1]`` are the greedy tokens (the first from the prefill).
    """

    prefill_seconds: float
    decode_seconds: float
    tokens: np.ndarray

    @property
    def steps(self) -> int:
        """Decode steps timed."""
        return int(self.tokens.shape[1]) - 1

    @property
    def decode_tokens_per_second(self) -> float:
        """Generated tokens per second over the decode steps, all rows together."""
        if self.steps == 0 or self.decode_seconds <= 0:
            return math.nan
        return self.steps * int(self.tokens.shape[0]) / self.decode_seconds


def best_timing(runs: list[Timing]) -> Timing:
    """The best prefill and the best decode among ``runs`` (possibly of different runs); the
    tokens of the first run."""
    if not runs:
        raise ValueError("best_timing needs at least one run")
    return Timing(
        prefill_seconds=min(r.prefill_seconds for r in runs),
        decode_seconds=min(r.decode_seconds for r in runs),
        tokens=runs[0].tokens,
    )
