"""Torch fake quantizers with straight-through gradients, bit-exact with the NumPy reference.

Each quantizer returns integer codes (held in float32 tensors, so that the matmuls that follow
stay in float and export to plain ONNX ops) and the float32 scale that dequantizes them.  The
float32 operation order is the reference's, step for step:

* activations: ``d = guard(stat)`` (``stat + eps`` or ``max(stat, eps)``), multiplier
  ``s = L / d``, ``q = clamp(round(x * s), qmin, qmax)``, scale ``d / L``;
* weights: ``alpha = max(mean|w|, eps)``, ``q = clamp(round(w / alpha), -1, 1)``;
* KV: absmax per (token, head), ``absmax + eps`` guard, levels ``+-(2**(bits-1) - 1)``.

Constants are float32 tensors, never Python doubles, so no step is promoted to float64.  Max
reductions are exact; mean reductions may sum in a different order than NumPy's pairwise sum, so
a statistic can differ in its last bit and flip a code at an exact rounding tie (rare: tests
bound it at 0.1 % of codes, one level apart).

Straight-through estimator (BitNet training): ``round`` and ``clamp`` pass gradients as the
identity, and scales are treated as constants.  The STE term ``y - y.detach()`` is exactly zero
in the forward pass, so codes stay exact integers; it is only added while autograd records
(``torch.is_grad_enabled()`` and the input needs a gradient), which keeps inference and export
graphs free of it.

TopK keeps ``ceil(ratio * d)`` entries per token with ties at the threshold kept in index order.
``torch.topk`` on CPU does not order tied entries by index (``topk([1, 3, 3, 3, 2, 3, 0, 3], 3)``
returns indices 1, 7, 5), so the mask is built from the k-th largest magnitude instead: keep
everything above it, then the first tied entries (by a cumulative count) until k are kept.  This
is exact in torch and exports to ONNX ``TopK``/``CumSum``/comparisons whose result does not depend
on the runtime's own tie order.
"""

from __future__ import annotations

import torch

from bitnet_tvm.reference import EPS, _kv_levels, topk_count
from bitnet_tvm.schemes import ActQuant, EpsMode, QuantMethod

__all__ = [
    "fake_quantize_activation",
    "fake_quantize_kv",
    "quantize_activation",
    "quantize_kv",
    "quantize_weight_ternary",
    "straight_through",
    "topk_sparsify",
]


def _f32(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


def _check_float(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension, got shape {tuple(x.shape)}")


def straight_through(value: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, identity gradient to ``source`` in the backward pass.

    Computed as ``value.detach() + (source - source.detach())``: the added term is exactly 0.0
    for finite ``source``, so ``value`` is returned bit for bit.  Returns ``value`` unchanged
    when no gradient is being recorded.
    """
    if torch.is_grad_enabled() and source.requires_grad:
        return value.detach() + (source - source.detach())
    return value


def _quantize_rows(
    x: torch.Tensor,
    stat: torch.Tensor,
    levels: float,
    qmin: int,
    qmax: int,
    eps_mode: EpsMode,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference ``_quantize_rows``: codes ``clamp(round(x * (L / d)))`` and scale ``d / L``."""
    stat = stat.detach()
    eps_t = _f32(eps)
    denom = stat + eps_t if EpsMode(eps_mode) is EpsMode.ADD else torch.maximum(stat, eps_t)
    levels_t = _f32(levels)
    y = x * (levels_t / denom)
    q = torch.clamp(torch.round(y), qmin, qmax)
    return straight_through(q, y), denom / levels_t


def quantize_weight_ternary(w: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternary codes of a whole weight (reference ``quantize_weights_ternary``).

    Parameters
    ----------
    w : Tensor of float32
        Weight, any shape.
    eps : float
        Lower bound of ``alpha``.

    Returns
    -------
    codes : Tensor of float32
        Values in {-1, 0, 1}, same shape as ``w``; gradient ``1 / alpha`` to ``w`` (STE).
    alpha : Tensor of float32, 0-d
        ``max(mean|w|, eps)`` (no gradient); ``w ~ codes * alpha``.
    """
    _check_float(w, "w")
    alpha = torch.maximum(w.detach().abs().mean(), _f32(eps))
    y = w / alpha
    return straight_through(torch.clamp(torch.round(y), -1, 1), y), alpha


def topk_sparsify(x: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Keep the ``ceil(keep_ratio * d)`` largest-magnitude entries of each row, zero the rest.

    Ties at the threshold keep the lower index (reference ``topk_sparsify``).  Gradients flow to
    the kept entries.
    """
    _check_float(x, "x")
    k = topk_count(x.shape[-1], keep_ratio)
    mag = x.detach().abs()
    kth = torch.topk(mag, k, dim=-1).values[..., k - 1 :]
    above = mag > kth
    tied = mag == kth
    room = k - above.sum(dim=-1, keepdim=True)
    keep = above | (tied & (torch.cumsum(tied.to(torch.int64), dim=-1) <= room))
    return torch.where(keep, x, torch.zeros_like(x))


def quantize_activation(x: torch.Tensor, act: ActQuant) -> tuple[torch.Tensor, torch.Tensor]:
    """One site's activation quantizer, per token (reference ``quantize_act``).

    Parameters
    ----------
    x : Tensor of float32, shape ``[..., d]``
        Activations, one token per row.
    act : ActQuant
        The site's quantizer; must be enabled.  TopK (if any) is applied first.

    Returns
    -------
    codes : Tensor of float32, shape ``[..., d]``
        Integer levels in ``[act.qmin, act.qmax]``; STE gradient to ``x``.
    scale : Tensor of float32, shape ``[..., 1]``
        Dequantization scale (no gradient); ``x ~ codes * scale``.
    """
    if not isinstance(act, ActQuant) or not act.enabled:
        raise ValueError(f"quantize_activation needs an enabled ActQuant, got {act!r}")
    _check_float(x, "x")
    if act.topk is not None:
        x = topk_sparsify(x, act.topk)
    mag = x.abs()
    if act.method is QuantMethod.ABSMEAN:
        stat = mag.mean(dim=-1, keepdim=True)
    else:
        stat = mag.amax(dim=-1, keepdim=True)
    return _quantize_rows(x, stat, act.levels, act.qmin, act.qmax, act.eps_mode, act.eps)


def fake_quantize_activation(x: torch.Tensor, act: ActQuant) -> torch.Tensor:
    """``codes * scale`` of :func:`quantize_activation`; ``x`` itself when ``act`` is disabled."""
    if not act.enabled:
        return x
    codes, scale = quantize_activation(x, act)
    return codes * scale


def quantize_kv(x: torch.Tensor, bits: int, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """KV-cache codes per (token, head) over the last axis (reference ``quantize_kv``).

    Returns
    -------
    codes : Tensor of float32
        Integers in ``[-L, L]``, ``L = 2**(bits-1) - 1``; STE gradient to ``x``.
    scale : Tensor of float32, shape ``[..., 1]``
        ``(absmax + eps) / L``.
    """
    _check_float(x, "x")
    levels = _kv_levels(bits)
    amax = x.abs().amax(dim=-1, keepdim=True)
    return _quantize_rows(x, amax, float(levels), -levels, levels, EpsMode.ADD, eps)


def fake_quantize_kv(x: torch.Tensor, bits: int, eps: float = EPS) -> torch.Tensor:
    """``codes * scale`` of :func:`quantize_kv` (what a quantized cache decodes to)."""
    codes, scale = quantize_kv(x, bits, eps)
    return codes * scale
