"""The built-in model: a small byte-level a4.8 BitNet trained by :mod:`bitnet_tvm.train`.

Asset files (in ``bitnet_tvm/assets/``, shipped as package data)::

    builtin_a48.json     format version, BitNetConfig, how it was trained and what it scored
    builtin_a48.npz      the weights (compressed):
                           <linear>.weight_packed   uint8 [out, ceil(in / 4)], ternary codes packed
                                                    by reference.pack_ternary_2bit
                           <linear>.weight_scale    float32 scalar, the absmean alpha
                           <other parameter>        float32 (embedding, LM head, RMSNorm weights)
                           check.input_ids          int64 [1, n], a fixed input
                           check.logits             float32 [1, n, 256], its logits at save time
    heldout_sample.txt   a few KB of the held-out split of the training corpus

:func:`load_builtin_model` rebuilds the model with the weights in frozen form (codes and
alpha, see :meth:`BitLinear.freeze_int8 <bitnet_tvm.model.BitLinear.freeze_int8>`): its
outputs are the trained fake-quant model's bit for bit, which ``check.logits`` lets a test
confirm.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from bitnet_tvm.model.config import BitNetConfig
from bitnet_tvm.model.layers import BitLinear
from bitnet_tvm.model.modeling import BitNetForCausalLM
from bitnet_tvm.reference import pack_ternary_2bit, unpack_ternary_2bit

__all__ = [
    "ASSET_DIR",
    "FORMAT_VERSION",
    "builtin_asset_available",
    "load_builtin_check",
    "load_builtin_info",
    "load_builtin_model",
    "load_heldout_sample",
    "save_builtin_model",
]

#: Where the shipped asset lives.
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
#: Version of the asset layout.
FORMAT_VERSION = 1

_JSON, _NPZ, _SAMPLE = "builtin_a48.json", "builtin_a48.npz", "heldout_sample.txt"
_PACKED, _SCALE = ".weight_packed", ".weight_scale"
_CHECK_IDS, _CHECK_LOGITS = "check.input_ids", "check.logits"


def _dir(directory: str | os.PathLike[str] | None) -> Path:
    return Path(directory) if directory is not None else ASSET_DIR


def builtin_asset_available(directory: str | os.PathLike[str] | None = None) -> bool:
    """Whether the asset files are present (in ``directory``, default :data:`ASSET_DIR`)."""
    root = _dir(directory)
    return (root / _JSON).is_file() and (root / _NPZ).is_file()


def _ternary_linears(model: BitNetForCausalLM) -> dict[str, BitLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BitLinear) and m.ternary}


@torch.no_grad()
def save_builtin_model(
    model: BitNetForCausalLM,
    directory: str | os.PathLike[str],
    *,
    info: dict[str, Any] | None = None,
    heldout_sample: str | None = None,
    check_ids: torch.Tensor | None = None,
) -> Path:
    """Write ``model`` (ternary weights, master or frozen form) as the asset in ``directory``.

    The files are written to a temporary directory beside ``directory`` and moved in only when
    all are complete.

    Parameters
    ----------
    model : BitNetForCausalLM
        A model whose scheme has ternary weights.
    directory : path-like
        Target directory (created; its other files are kept).
    info : dict, optional
        JSON-able facts stored as ``training`` in the JSON (corpus, steps, perplexity, ...).
    heldout_sample : str, optional
        Text written to ``heldout_sample.txt``.
    check_ids : Tensor of int64 ``[1, n]``, optional
        Input whose logits are stored for :func:`load_builtin_check`; default 64 fixed bytes.
    """
    if not isinstance(model, BitNetForCausalLM):
        raise TypeError(f"model must be a BitNetForCausalLM, got {type(model).__name__}")
    linears = _ternary_linears(model)
    if not linears:
        raise ValueError(f"model scheme {model.config.scheme!r} has no ternary weights to pack")
    if check_ids is None:
        check_ids = torch.tensor([list(b"The quick brown fox jumps over the lazy dog. " * 2)[:64]])
    was_training = model.training
    model.eval()
    try:
        logits = model(check_ids)[0].numpy()
    finally:
        model.train(was_training)
    arrays: dict[str, np.ndarray] = {
        _CHECK_IDS: check_ids.numpy().astype(np.int64),
        _CHECK_LOGITS: logits.astype(np.float32),
    }
    for name, module in linears.items():
        codes, alpha = module.quantized_weight()
        arrays[name + _PACKED] = pack_ternary_2bit(codes.numpy().astype(np.int8))
        arrays[name + _SCALE] = np.asarray(alpha.numpy(), dtype=np.float32)
    ternary_weights = {name + ".weight" for name in linears}
    for name, param in model.named_parameters():
        if name not in ternary_weights:
            arrays[name] = param.detach().numpy().astype(np.float32)
    meta = {
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "training": info or {},
    }
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".builtin.", dir=root.parent))
    try:
        np.savez_compressed(tmp / _NPZ, **arrays)
        (tmp / _JSON).write_text(json.dumps(meta, indent=1) + "\n")
        if heldout_sample is not None:
            (tmp / _SAMPLE).write_text(heldout_sample, encoding="utf-8")
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == _JSON):  # the JSON last
            os.replace(f, root / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def load_builtin_info(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The asset's JSON: ``format_version``, ``config`` and ``training``.

    Raises
    ------
    FileNotFoundError
        If the asset is missing.
    ValueError
        If it has another format version.
    """
    root = _dir(directory)
    if not builtin_asset_available(root):
        raise FileNotFoundError(
            f"the built-in model asset ({_JSON}, {_NPZ}) is missing from {root}; train it with "
            "`python -m bitnet_tvm.train --export-builtin bitnet_tvm/assets`"
        )
    meta = json.loads((root / _JSON).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{root / _JSON}: format_version {meta.get('format_version')!r}, expected "
            f"{FORMAT_VERSION}"
        )
    return meta


@torch.no_grad()
def load_builtin_model(
    directory: str | os.PathLike[str] | None = None,
    *,
    form: Literal["int8", "ternary"] = "int8",
) -> BitNetForCausalLM:
    """Rebuild the built-in a4.8 model (inference only, eval mode).

    Parameters
    ----------
    directory : path-like or None
        Asset directory; None is :data:`ASSET_DIR`.
    form : {"int8", "ternary"}
        BitLinear weights as int8 codes (:meth:`BitNetForCausalLM.freeze_int8`; export with
        ``weights="int8"``) or float {-1, 0, 1} codes (``freeze_ternary``; exports with any
        ``weights``).  Both compute the trained model's logits bit for bit.

    Raises
    ------
    FileNotFoundError
        If the asset is missing.
    ValueError
        If ``form`` is unknown or the weights do not fit the config.
    """
    if form not in ("int8", "ternary"):
        raise ValueError(f"form must be 'int8' or 'ternary', got {form!r}")
    root = _dir(directory)
    meta = load_builtin_info(root)
    model = BitNetForCausalLM(BitNetConfig.from_dict(meta["config"]), seed=0)
    model.freeze_ternary()
    linears = _ternary_linears(model)
    ternary_weights = {name + ".weight" for name in linears}
    floats = {n: p for n, p in model.named_parameters() if n not in ternary_weights}
    with np.load(root / _NPZ) as arrays:
        expected = {_CHECK_IDS, _CHECK_LOGITS, *floats}
        expected |= {n + s for n in linears for s in (_PACKED, _SCALE)}
        if set(arrays.files) != expected:
            raise ValueError(
                f"{root / _NPZ} does not fit the config: missing "
                f"{sorted(expected - set(arrays.files))}, unexpected "
                f"{sorted(set(arrays.files) - expected)}"
            )
        for name, module in linears.items():
            codes = unpack_ternary_2bit(arrays[name + _PACKED], tuple(module.weight.shape))
            module.weight.copy_(torch.from_numpy(codes.astype(np.float32)))
            module.weight_scale.copy_(torch.from_numpy(arrays[name + _SCALE]))
        for name, param in floats.items():
            value = arrays[name]
            if value.shape != tuple(param.shape) or value.dtype != np.float32:
                raise ValueError(
                    f"{root / _NPZ}: {name} is {value.dtype} {value.shape}, expected float32 "
                    f"{tuple(param.shape)}"
                )
            param.copy_(torch.from_numpy(value))
    if form == "int8":
        model.freeze_int8()
    return model.eval()


def load_builtin_check(
    directory: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, logits)`` stored at save time: the trained model's logits of a fixed input."""
    root = _dir(directory)
    load_builtin_info(root)
    with np.load(root / _NPZ) as arrays:
        return arrays[_CHECK_IDS], arrays[_CHECK_LOGITS]


def load_heldout_sample(directory: str | os.PathLike[str] | None = None) -> bytes:
    """UTF-8 bytes of the shipped held-out text sample.

    Raises
    ------
    FileNotFoundError
        If the sample is missing.
    """
    path = _dir(directory) / _SAMPLE
    if not path.is_file():
        raise FileNotFoundError(f"the held-out sample {path} is missing")
    return path.read_bytes()
