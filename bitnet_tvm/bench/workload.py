"""What the benchmark runs: the model variants, their ONNX exports and the prompts.

Every backend runs the same ONNX file (``export_onnx(..., with_past=True, weights="int8")`` of a
:func:`~bitnet_tvm.model.synthetic.random_int8_model`: random ternary codes, the config's shape)
and the same prompts (seeded random token ids).

Two variants of each model are exported, so that the LM head can be timed apart from the
transformer layers:

* ``full``   -- the config as given (the LM head is ``vocab_size x hidden`` float32);
* ``layers`` -- the same config with a vocabulary of :data:`LAYERS_VOCAB` tokens: embedding
  lookup, every decoder layer, the final norm and a ``16 x hidden`` head, so its time is the
  transformer layers' (the head left is < 0.1 % of a layer's work for 2B4T).

The LM head's time per token is then ``step(full) - step(layers)``.  The decoder layers of the two
variants are built from the same seed but are different random draws; their cost does not depend
on the values.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet_tvm.model import BitNetConfig, get_config

__all__ = [
    "LAYERS_VOCAB",
    "VARIANTS",
    "Workload",
    "bench_config",
    "export_workload",
    "make_workload",
    "prompt_ids",
]

log = logging.getLogger(__name__)

#: Vocabulary of the ``layers`` variant.
LAYERS_VOCAB = 16
VARIANTS = ("layers", "full")


@dataclass(frozen=True)
class Workload:
    """One exported model variant.

    Attributes
    ----------
    variant : str
        ``"layers"`` or ``"full"``.
    config : BitNetConfig
        The exported model's config.
    onnx : Path
        The with-past ONNX export (int8 weights).
    seed : int
        Seed of the random weights (:func:`model`) rebuilds the same model.
    """

    variant: str
    config: BitNetConfig
    onnx: Path
    seed: int

    def model(self):
        """The PyTorch model that was exported (rebuilt from the seed)."""
        from bitnet_tvm.model.synthetic import random_int8_model

        return random_int8_model(self.config, seed=self.seed)


def bench_config(model: str, layers: int | None = None, scheme: str = "a4.8") -> BitNetConfig:
    """The preset ``model`` with ``layers`` decoder layers (all of them when None)."""
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)):
        raise TypeError(f"layers must be an int or None, got {layers!r}")
    if layers is not None and layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    overrides = {"scheme": scheme}
    if layers is not None:
        overrides["num_hidden_layers"] = layers
    return get_config(model, **overrides)


def _variant_config(config: BitNetConfig, variant: str) -> BitNetConfig:
    if variant == "full":
        return config
    if variant == "layers":
        return config.replace(vocab_size=min(LAYERS_VOCAB, config.vocab_size))
    raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")


def make_workload(config: BitNetConfig, variant: str, workdir: Path, seed: int = 0) -> Workload:
    """The ``variant`` of ``config``, its export named in ``workdir`` by a hash of the config and
    seed (:func:`export_workload` writes it; an existing file is reused)."""
    config = _variant_config(config, variant)
    key = json.dumps({"config": config.to_dict(), "seed": seed}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    path = Path(workdir) / f"bench_{variant}_L{config.num_hidden_layers}_{digest}.onnx"
    return Workload(variant, config, path, seed)


def export_workload(workload: Workload) -> Path:
    """Build the random model of ``workload`` and export it (atomically) to ``workload.onnx``."""
    from bitnet_tvm.export import export_onnx

    config = workload.config
    workload.onnx.parent.mkdir(parents=True, exist_ok=True)
    log.info(
        "exporting the %s variant (%d layers, vocab %d) to %s",
        workload.variant,
        config.num_hidden_layers,
        config.vocab_size,
        workload.onnx,
    )
    return export_onnx(
        workload.model(), workload.onnx, with_past=True, weights="int8", verify=False
    )


def prompt_ids(vocab_size: int, batch: int, length: int, seed: int = 0) -> np.ndarray:
    """Seeded random prompts, int64 ``[batch, length]``."""
    if length < 1:
        raise ValueError(f"prompt length must be >= 1, got {length}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab_size, (batch, length), dtype=np.int64)
