"""NumPy reference: the single definition of every quantizer, packing and fused op.

Every kernel, graph pass, exporter and benchmark of bitnet-tvm is checked against this module.
Integer results (codes, packed bytes, int32 accumulators) must equal it exactly; float results
are compared with a stated tolerance.

Conventions (float32 throughout, ``np.rint`` = round half to even, as ``torch.round``):

* Weights, per tensor (arXiv 2402.17764): ``alpha = max(mean|W|, eps)``,
  ``Wq = clip(rint(W / alpha), -1, 1)``, ``W ~ alpha * Wq``.
* Activations, per token (last axis), a multiplier ``s = L / d`` and ``q = clip(rint(x * s))``,
  where ``d`` is the guarded statistic (``stat + eps``, or ``max(stat, eps)`` for b1.58 / HF) and
  ``L`` is sqrt(7) for INT4 absmean (levels -8..7) or 127 for INT8 absmax (levels -128..127)
  (arXiv 2411.04965, Sec. 2).  The dequantization scale is ``d / L`` so ``x ~ q * scale``.
* TopK keeps ``ceil(ratio * d)`` entries of largest magnitude per token; ties keep the lower
  index.  No rescale.
* BitLinear: ``y = float32(sum_k q[k] * Wq[n, k]) * act_scale * alpha``, int32 accumulation,
  the two float multiplies in that order.
* Packing pads the packed axis with zero weights up to its group (4 codes for 2-bit, 5 trits for
  base-3) and unpacking takes the logical shape back.

  - ``2bit``: our kernel layout, along K (the last axis): code ``w + 1`` of element ``k`` in byte
    ``k // 4`` at bits ``2 * (k % 4)``.
  - ``2bit_hf``: HF transformers' ``BitLinear`` layout, along the output axis (axis 0): with
    ``R = ceil(out / 4)`` rows of bytes, output row ``j`` is in byte row ``j % R`` at bits
    ``2 * (j // R)``.
  - ``base3``: 5 trits per byte along K, ``byte = sum_i (w_i + 1) * 3**i`` (1.6 bits/weight).

* KV cache (our choice where the paper is silent): per (token, head) absmax over head_dim,
  symmetric levels ``-L..L`` with ``L = 2**(bits-1) - 1`` (4-bit: +-7, 3-bit: +-3), stored as
  the unsigned code ``q + 2**(bits-1)`` ("unsigned integers using absmax"); scale
  ``(absmax + eps) / L`` (the eps is added, as in the a4.8 quantizers: V rows are often
  integer multiples of one factor, and a clamped scale would put many codes exactly on rounding
  ties, where the last bit of the scale decides).  4-bit codes pack 2 per byte, 3-bit codes
  8 per 3 bytes (a little-endian 24-bit word), along head_dim.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from bitnet_tvm.schemes import ActQuant, EpsMode, QuantMethod

__all__ = [
    "EPS",
    "attention_packed_kv",
    "bitlinear",
    "dequantize_kv",
    "dequantize_kv_cache",
    "int8_matmul",
    "int_matmul",
    "kv_packed_width",
    "pack_kv",
    "pack_ternary",
    "pack_ternary_2bit",
    "pack_ternary_2bit_hf",
    "pack_ternary_2bit_vnni",
    "pack_ternary_base3",
    "pack_ternary_base3_vnni",
    "quantize_act",
    "quantize_act_int4",
    "quantize_act_int8",
    "quantize_kv",
    "quantize_kv_cache",
    "quantize_weights_int8_rows",
    "quantize_weights_ternary",
    "rmsnorm",
    "ternary_gate_up",
    "ternary_matmul",
    "topk_count",
    "topk_sparsify",
    "unpack_kv",
    "unpack_ternary",
    "unpack_ternary_2bit",
    "unpack_ternary_2bit_hf",
    "unpack_ternary_2bit_vnni",
    "unpack_ternary_base3",
    "unpack_ternary_base3_vnni",
]

EPS = 1e-5
_F32 = np.float32
PackingFormat = Literal["2bit", "2bit_hf", "base3", "2bit_vnni", "base3_vnni", "base3_mulshift"]


# --------------------------------------------------------------------------- validation
def _float_array(x: object, name: str, min_ndim: int = 1) -> np.ndarray:
    """``x`` as a float32 array, rejecting non-float dtypes, low rank and non-finite values."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {x.shape}")
    if x.shape[-1:] == (0,):
        raise ValueError(f"{name} must have a non-empty last axis, got shape {x.shape}")
    # Checked after the cast: a finite float64 beyond the float32 range becomes inf.
    with np.errstate(over="ignore"):
        y = x.astype(_F32, copy=False)
    if not np.all(np.isfinite(y)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(y))[0])
        raise ValueError(f"{name} must be finite in float32; found {x[bad]} at index {bad}")
    return y


def _finite_stat(stat: np.ndarray, name: str) -> np.ndarray:
    """Reject a statistic that overflowed float32 (finite inputs near the float32 maximum)."""
    if not np.all(np.isfinite(stat)):
        raise ValueError(f"{name} is too large: its scale statistic overflows float32")
    return stat


def _int_array(q: object, name: str, lo: int, hi: int, min_ndim: int = 1) -> np.ndarray:
    """``q`` as an int array whose values all lie in ``[lo, hi]``."""
    if not isinstance(q, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(q).__name__}")
    if not np.issubdtype(q.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {q.dtype}")
    if q.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {q.shape}")
    if q.size and (q.min() < lo or q.max() > hi):
        raise ValueError(f"{name} values must lie in [{lo}, {hi}], got [{q.min()}, {q.max()}]")
    return q


def _ternary(q: object, name: str = "q", min_ndim: int = 1) -> np.ndarray:
    return _int_array(q, name, -1, 1, min_ndim).astype(np.int8, copy=False)


def _packed(packed: object, name: str = "packed") -> np.ndarray:
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8:
        raise TypeError(
            f"{name} must be a uint8 numpy array, got {getattr(packed, 'dtype', packed)}"
        )
    return packed


def _guard(stat: np.ndarray, eps_mode: EpsMode | str, eps: float) -> np.ndarray:
    """The statistic with its epsilon guard: ``stat + eps`` or ``max(stat, eps)``."""
    if EpsMode(eps_mode) is EpsMode.ADD:
        return stat + _F32(eps)
    return np.maximum(stat, _F32(eps))


# --------------------------------------------------------------------------- quantizers
def quantize_weights_ternary(w: np.ndarray, eps: float = EPS) -> tuple[np.ndarray, np.float32]:
    """Absmean ternary quantization of a whole weight matrix.

    Parameters
    ----------
    w : ndarray of float
        Weight, any shape (usually ``[out, in]``).
    eps : float
        Lower bound of the scale.

    Returns
    -------
    q : ndarray of int8
        Codes in {-1, 0, 1}, same shape as ``w``.
    alpha : float32
        ``max(mean|w|, eps)``; ``w ~ q * alpha``.
    """
    w = _float_array(w, "w")
    alpha = _finite_stat(np.maximum(np.mean(np.abs(w), dtype=_F32), _F32(eps)).astype(_F32), "w")
    q = np.clip(np.rint(w / alpha), -1, 1).astype(np.int8)
    return q, _F32(alpha)


def _quantize_rows(
    x: np.ndarray, stat: np.ndarray, levels: float, qmin: int, qmax: int, eps_mode, eps
) -> tuple[np.ndarray, np.ndarray]:
    denom = _finite_stat(_guard(stat, eps_mode, eps).astype(_F32), "x")
    mult = (_F32(levels) / denom).astype(_F32)
    q = np.clip(np.rint(x * mult), qmin, qmax).astype(np.int8)
    return q, (denom / _F32(levels)).astype(_F32)


def quantize_act_int4(
    x: np.ndarray, eps_mode: EpsMode | str = EpsMode.ADD, eps: float = EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token INT4 absmean quantization (arXiv 2411.04965).

    ``q = clip(rint(x * sqrt(7) / (mean|x| + eps)), -8, 7)``.

    Parameters
    ----------
    x : ndarray of float, shape ``[..., d]``
        Activations; each row along the last axis is one token.
    eps_mode : {"add", "clamp"}
        ``mean|x| + eps`` (the paper) or ``max(mean|x|, eps)``.
    eps : float
        The epsilon.

    Returns
    -------
    q : ndarray of int8, shape ``[..., d]``
        Codes in [-8, 7].
    scale : ndarray of float32, shape ``[..., 1]``
        ``(mean|x| + eps) / sqrt(7)``; ``x ~ q * scale``.
    """
    x = _float_array(x, "x")
    beta = np.mean(np.abs(x), axis=-1, keepdims=True, dtype=_F32)
    return _quantize_rows(x, beta, math.sqrt(7.0), -8, 7, eps_mode, eps)


def quantize_act_int8(
    x: np.ndarray, eps_mode: EpsMode | str = EpsMode.ADD, eps: float = EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token INT8 absmax quantization.

    ``q = clip(rint(x * 127 / (max|x| + eps)), -128, 127)``.

    Parameters
    ----------
    x : ndarray of float, shape ``[..., d]``
        Activations; each row along the last axis is one token.
    eps_mode : {"add", "clamp"}
        ``max|x| + eps`` (the a4.8 paper) or ``max(max|x|, eps)`` (b1.58, HF ``BitLinear``).
    eps : float
        The epsilon.

    Returns
    -------
    q : ndarray of int8, shape ``[..., d]``
        Codes in [-128, 127].
    scale : ndarray of float32, shape ``[..., 1]``
        ``(max|x| + eps) / 127``; ``x ~ q * scale``.
    """
    x = _float_array(x, "x")
    gamma = np.max(np.abs(x), axis=-1, keepdims=True)
    return _quantize_rows(x, gamma, 127.0, -128, 127, eps_mode, eps)


def topk_count(d: int, keep_ratio: float) -> int:
    """Entries kept per token by :func:`topk_sparsify`: ``ceil(keep_ratio * d)``, at least 1.

    A product within 1e-9 (relative) of an integer counts as that integer, so a ratio written
    as a decimal (``0.07 * 100`` is 7.000000000000001 in float) or recovered from a graph as
    ``k / d`` (``5 / 6 * 6`` is 5.000000000000001) keeps exactly the count it stands for.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    product = float(keep_ratio) * d
    nearest = round(product)
    count = nearest if abs(product - nearest) <= 1e-9 * max(1.0, product) else math.ceil(product)
    return max(1, count)


def topk_sparsify(x: np.ndarray, keep_ratio: float) -> np.ndarray:
    """Per-token TopK by magnitude: keep ``ceil(keep_ratio * d)`` entries, zero the rest.

    Ties keep the lower index.  No rescale.

    Parameters
    ----------
    x : ndarray of float, shape ``[..., d]``
        Activations.
    keep_ratio : float
        Fraction of each row kept, in (0, 1].

    Returns
    -------
    ndarray of float32, shape ``[..., d]``
        ``x`` with all but the kept entries of each row set to 0.
    """
    x = _float_array(x, "x")
    k = topk_count(x.shape[-1], keep_ratio)
    order = np.argsort(-np.abs(x), axis=-1, kind="stable")[..., :k]
    mask = np.zeros(x.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return np.where(mask, x, _F32(0)).astype(_F32)


def quantize_act(x: np.ndarray, act: ActQuant) -> tuple[np.ndarray, np.ndarray]:
    """Apply one site's activation quantizer (TopK first when it has one).

    Parameters
    ----------
    x : ndarray of float, shape ``[..., d]``
        Activations.
    act : ActQuant
        The site's quantizer; must be enabled.

    Returns
    -------
    q : ndarray of int8
        Codes.
    scale : ndarray of float32, shape ``[..., 1]``
        Dequantization scale.
    """
    if not act.enabled:
        raise ValueError("quantize_act needs an enabled ActQuant (method 'absmean' or 'absmax')")
    if act.topk is not None:
        x = topk_sparsify(x, act.topk)
    x = _float_array(x, "x")
    stat = (
        np.mean(np.abs(x), axis=-1, keepdims=True, dtype=_F32)
        if act.method is QuantMethod.ABSMEAN
        else np.max(np.abs(x), axis=-1, keepdims=True)
    )
    return _quantize_rows(x, stat, act.levels, act.qmin, act.qmax, act.eps_mode, act.eps)


# --------------------------------------------------------------------------- matmul
def int_matmul(q_act: np.ndarray, q_w: np.ndarray) -> np.ndarray:
    """int32 accumulators ``sum_k q_act[..., k] * q_w[n, k]``.

    Parameters
    ----------
    q_act : ndarray of int, shape ``[..., K]``
        Activation codes (any signed width up to int8).
    q_w : ndarray of int, shape ``[N, K]``
        Ternary weight codes.

    Returns
    -------
    ndarray of int32, shape ``[..., N]``
    """
    q_act = _int_array(q_act, "q_act", -128, 127)
    q_w = _ternary(q_w, "q_w", min_ndim=2)
    if q_w.ndim != 2 or q_act.shape[-1] != q_w.shape[1]:
        raise ValueError(
            f"q_act [..., K] and q_w [N, K] disagree: shapes {q_act.shape} and {q_w.shape}"
        )
    return np.matmul(q_act.astype(np.int32), q_w.astype(np.int32).T)


def ternary_matmul(
    q_act: np.ndarray, act_scale: np.ndarray, q_w: np.ndarray, alpha: np.ndarray | float
) -> np.ndarray:
    """Fused BitLinear: ``float32(int_matmul(q_act, q_w)) * act_scale * alpha``.

    Parameters
    ----------
    q_act : ndarray of int8, shape ``[..., K]``
        Activation codes.
    act_scale : ndarray of float32, shape ``[..., 1]``
        Per-token dequantization scale (or one scalar for every token).
    q_w : ndarray of int8, shape ``[N, K]``
        Ternary weight codes.
    alpha : float or ndarray of float32, shape ``[N]``
        Weight scale: one per matrix, or one per output column for fused projections.

    Returns
    -------
    ndarray of float32, shape ``[..., N]``
    """
    acc = int_matmul(q_act, q_w).astype(_F32)
    act_scale = np.asarray(act_scale, dtype=_F32)
    if act_scale.ndim and act_scale.shape != (*q_act.shape[:-1], 1):
        raise ValueError(
            f"act_scale must have shape {(*q_act.shape[:-1], 1)} (one scale per token), "
            f"got {act_scale.shape}"
        )
    alpha = np.asarray(alpha, dtype=_F32)
    if alpha.ndim not in (0, 1) or (alpha.ndim == 1 and alpha.shape[0] != q_w.shape[0]):
        raise ValueError(
            f"alpha must be a scalar or have shape [{q_w.shape[0]}], got {alpha.shape}"
        )
    return ((acc * act_scale) * alpha).astype(_F32)


def ternary_gate_up(
    q_act: np.ndarray, act_scale: np.ndarray, q_w: np.ndarray, alpha: np.ndarray
) -> np.ndarray:
    """Fused gate/up projection with the ReLU² GLU: ``(relu(g) * relu(g)) * u``.

    Parameters
    ----------
    q_act : ndarray of int8, shape ``[..., K]``
        Activation codes (shared by both projections).
    act_scale : ndarray of float32, shape ``[..., 1]``
        Per-token dequantization scale.
    q_w : ndarray of int8, shape ``[2I, K]``
        Ternary codes: the ``I`` gate rows, then the ``I`` up rows.
    alpha : ndarray of float32, shape ``[2I]``
        Per-row weight scales, in the same order.

    Returns
    -------
    ndarray of float32, shape ``[..., I]``
        ``g`` and ``u`` are :func:`ternary_matmul` of each half, multiplied in this order.
    """
    rows = np.shape(q_w)[0]
    if rows % 2:
        raise ValueError(f"q_w must hold gate and up rows (an even count), got {rows}")
    i = rows // 2
    alpha = np.asarray(alpha, dtype=_F32)
    g = ternary_matmul(q_act, act_scale, q_w[:i], alpha[:i])
    u = ternary_matmul(q_act, act_scale, q_w[i:], alpha[i:])
    r = np.maximum(g, _F32(0))
    return (r * r) * u


def bitlinear(
    x: np.ndarray, q_w: np.ndarray, alpha: np.ndarray | float, act: ActQuant
) -> np.ndarray:
    """A whole BitLinear on float input: quantize ``x`` per ``act``, then :func:`ternary_matmul`."""
    q, scale = quantize_act(x, act)
    return ternary_matmul(q, scale, q_w, alpha)


def rmsnorm(x: np.ndarray, weight: np.ndarray | None, eps: float = 1e-5) -> np.ndarray:
    """RMSNorm over the last axis: ``x / sqrt(mean(x**2) + eps) * weight``."""
    x = _float_array(x, "x")
    inv = (_F32(1) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + _F32(eps))).astype(_F32)
    y = x * inv
    return (y if weight is None else y * np.asarray(weight, dtype=_F32)).astype(_F32)


# --------------------------------------------------------------------------- packing
def _pad_last(a: np.ndarray, group: int, value: int) -> np.ndarray:
    pad = (-a.shape[-1]) % group
    if not pad:
        return a
    widths = [(0, 0)] * (a.ndim - 1) + [(0, pad)]
    return np.pad(a, widths, constant_values=value)


def _check_shape(packed: np.ndarray, shape: tuple[int, ...], group: int, axis: int) -> tuple:
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape {shape} has a negative dimension")
    if len(shape) != packed.ndim:
        raise ValueError(f"shape {shape} has rank {len(shape)}; packed has shape {packed.shape}")
    want = list(shape)
    want[axis] = -(-shape[axis] // group)
    if tuple(want) != packed.shape:
        raise ValueError(
            f"packed shape {packed.shape} does not hold logical shape {shape}: "
            f"expected {tuple(want)} ({group} values per byte along axis {axis})"
        )
    return shape


def pack_ternary_2bit(q: np.ndarray) -> np.ndarray:
    """Pack ternary codes 4 per byte along the last axis (our kernel layout).

    Parameters
    ----------
    q : ndarray of int, values in {-1, 0, 1}, shape ``[..., K]``

    Returns
    -------
    ndarray of uint8, shape ``[..., ceil(K / 4)]``
        Element ``k`` is ``((byte[k // 4] >> 2 * (k % 4)) & 3) - 1``.
    """
    codes = _pad_last(_ternary(q).astype(np.uint8) + np.uint8(1), 4, 1)
    codes = codes.reshape(*codes.shape[:-1], -1, 4)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    return np.bitwise_or.reduce(codes << shifts, axis=-1).astype(np.uint8)


def unpack_ternary_2bit(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Invert :func:`pack_ternary_2bit`; ``shape`` is the logical (unpadded) shape."""
    packed = _packed(packed)
    shape = _check_shape(packed, shape, 4, -1)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    codes = (packed[..., None] >> shifts) & np.uint8(3)
    codes = codes.reshape(*packed.shape[:-1], -1)[..., : shape[-1]]
    if np.any(codes == 3):
        raise ValueError("packed holds the invalid 2-bit code 3 (valid codes are 0, 1, 2)")
    return (codes.astype(np.int8) - np.int8(1)).reshape(shape)


def pack_ternary_2bit_hf(q: np.ndarray) -> np.ndarray:
    """Pack ``[out, in]`` ternary codes in HF transformers' ``BitLinear`` layout.

    Returns
    -------
    ndarray of uint8, shape ``[ceil(out / 4), in]``
        Output row ``j`` sits in byte row ``j % R`` at bits ``2 * (j // R)``, ``R = ceil(out/4)``.
        Padding rows (``j >= out``) hold zero weights.
    """
    q = _ternary(q, min_ndim=2)
    if q.ndim != 2:
        raise ValueError(f"q must be a 2-D [out, in] weight, got shape {q.shape}")
    rows = -(-q.shape[0] // 4)
    codes = np.ones((4 * rows, q.shape[1]), dtype=np.uint8)
    codes[: q.shape[0]] = q.astype(np.uint8) + np.uint8(1)
    packed = np.zeros((rows, q.shape[1]), dtype=np.uint8)
    for i in range(4):
        packed |= codes[i * rows : (i + 1) * rows] << np.uint8(2 * i)
    return packed


def unpack_ternary_2bit_hf(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Invert :func:`pack_ternary_2bit_hf`; ``shape`` is ``(out, in)``."""
    packed = _packed(packed)
    if packed.ndim != 2:
        raise ValueError(
            f"packed must be a 2-D [ceil(out / 4), in] array, got shape {packed.shape}"
        )
    shape = _check_shape(packed, shape, 4, 0)
    codes = np.concatenate([(packed >> np.uint8(2 * i)) & np.uint8(3) for i in range(4)], axis=0)
    codes = codes[: shape[0]]
    if np.any(codes == 3):
        raise ValueError("packed holds the invalid 2-bit code 3 (valid codes are 0, 1, 2)")
    return codes.astype(np.int8) - np.int8(1)


_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def pack_ternary_base3(q: np.ndarray) -> np.ndarray:
    """Pack ternary codes 5 per byte along the last axis: ``byte = sum_i (q_i + 1) * 3**i``.

    Returns
    -------
    ndarray of uint8, shape ``[..., ceil(K / 5)]``, values in [0, 242]
    """
    codes = _pad_last(_ternary(q).astype(np.uint8) + np.uint8(1), 5, 1)
    codes = codes.reshape(*codes.shape[:-1], -1, 5)
    return np.sum(codes * _POW3, axis=-1, dtype=np.uint16).astype(np.uint8)


def unpack_ternary_base3(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Invert :func:`pack_ternary_base3`; ``shape`` is the logical (unpadded) shape."""
    packed = _packed(packed)
    shape = _check_shape(packed, shape, 5, -1)
    if packed.size and packed.max() > 242:
        raise ValueError(f"packed holds {packed.max()}; base-3 bytes are at most 242 (3**5 - 1)")
    codes = (packed[..., None] // _POW3) % np.uint8(3)
    codes = codes.reshape(*packed.shape[:-1], -1)[..., : shape[-1]]
    return (codes.astype(np.int8) - np.int8(1)).reshape(shape)


#: Rows interleaved per group by the VNNI layouts (one register tile of the decode kernel).
VNNI_ROWS = 16
#: Codes per row and block of the VNNI layouts: 64 codes in 16 bytes (2-bit), 320 in 64 (base 3).
VNNI_BLOCK_2BIT, VNNI_BLOCK_BASE3 = 64, 320


def _vnni_pad(q: np.ndarray, block: int) -> np.ndarray:
    """A 2-D ternary ``q`` as int8, zero weights padding rows to ``VNNI_ROWS`` and K to
    ``block``."""
    q = _ternary(q, min_ndim=2)
    if q.ndim != 2:
        raise ValueError(f"q must be a 2-D [N, K] weight, got shape {q.shape}")
    n, k = q.shape
    padded = np.zeros((-(-n // VNNI_ROWS) * VNNI_ROWS, -(-k // block) * block), dtype=np.int8)
    padded[:n, :k] = q
    return padded


def _interleave_rows(rows: np.ndarray, nbytes: int) -> np.ndarray:
    """``[N16, KB * nbytes]`` per-row blocks to ``[N16 / 16, KB * 16 * nbytes]``: in each group
    the 16 rows' ``nbytes`` pieces of block ``kb`` follow one another."""
    n16, width = rows.shape
    grid = rows.reshape(n16 // VNNI_ROWS, VNNI_ROWS, width // nbytes, nbytes)
    return np.ascontiguousarray(grid.transpose(0, 2, 1, 3)).reshape(n16 // VNNI_ROWS, -1)


def _deinterleave_rows(packed: np.ndarray, shape: tuple[int, ...], block: int, nbytes: int):
    packed = _packed(packed)
    if len(shape) != 2 or any(not isinstance(d, int) or d <= 0 for d in shape):
        raise ValueError(f"shape must be a 2-D (N, K) shape of positive ints, got {shape}")
    n, k = shape
    want = (-(-n // VNNI_ROWS), -(-k // block) * VNNI_ROWS * nbytes)
    if packed.shape != want:
        raise ValueError(f"packed shape {packed.shape} does not hold {shape}: expected {want}")
    grid = packed.reshape(want[0], -1, VNNI_ROWS, nbytes).transpose(0, 2, 1, 3)
    return grid.reshape(want[0] * VNNI_ROWS, -1)


def pack_ternary_2bit_vnni(q: np.ndarray) -> np.ndarray:
    """Pack a ``[N, K]`` ternary weight for the VNNI decode kernel: row groups stream linearly.

    Rows are padded to a multiple of 16 and K to a multiple of 64 with zero weights, packed as
    :func:`pack_ternary_2bit`, and the 16 rows of each group interleaved per 16-byte block.

    Returns
    -------
    ndarray of uint8, shape ``[ceil(N / 16), ceil(K / 64) * 256]``
        Element ``(n, k)`` is ``((byte >> 2 * (k % 4)) & 3) - 1`` of
        ``byte = packed[n // 16, 256 * (k // 64) + 16 * (n % 16) + (k % 64) // 4]``.
    """
    return _interleave_rows(pack_ternary_2bit(_vnni_pad(q, VNNI_BLOCK_2BIT)), VNNI_BLOCK_2BIT // 4)


def unpack_ternary_2bit_vnni(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Invert :func:`pack_ternary_2bit_vnni`; ``shape`` is ``(N, K)``."""
    rows = _deinterleave_rows(packed, shape, VNNI_BLOCK_2BIT, VNNI_BLOCK_2BIT // 4)
    full = unpack_ternary_2bit(rows, (rows.shape[0], 4 * rows.shape[1]))
    return full[: shape[0], : shape[1]]


def _base3_vnni_digits(q8: np.ndarray) -> np.ndarray:
    """Digits ``d = 0..4`` (new last-but-one axis) of multiply-shift bytes: with
    ``t_d = q * 3**d mod 256``, digit ``d`` is ``(3 * t_d) >> 8``."""
    t = q8.astype(np.int64)[..., None, :] * (3 ** np.arange(5))[:, None] % 256
    return ((3 * t) >> 8).astype(np.uint8)


def pack_ternary_base3_vnni(q: np.ndarray) -> np.ndarray:
    """Pack a ``[N, K]`` ternary weight 5 per byte (1.6 bits) for the VNNI decode kernel.

    Rows are padded to a multiple of 16 and K to a multiple of 320 with zero weights.  Byte ``b``
    (< 64) of block ``kb`` of a row holds the codes ``c_d`` of ``k = 320 kb + 64 d + b``
    (``d < 5``) as ``ceil(256 * v / 243)``, ``v = sum_d c_d 3**(4 - d)`` (TQ1_0's
    multiply-shift form): digit ``d`` is ``(3 * t_d) >> 8`` with ``t_d = byte * 3**d mod 256``,
    so ``256 * c_d = 3 t_d - t_(d+1)`` is linear in bytes a ``vpdpbusd`` can take.  The 16 rows
    of a group are interleaved per 64-byte block.

    Returns
    -------
    ndarray of uint8, shape ``[ceil(N / 16), ceil(K / 320) * 1024]``
        Element ``(n, k)`` is digit ``(k % 320) // 64`` of
        ``packed[n // 16, 1024 * (k // 320) + 64 * (n % 16) + k % 64]``, minus 1.
    """
    codes = _vnni_pad(q, VNNI_BLOCK_BASE3).astype(np.int64) + 1
    digits = codes.reshape(codes.shape[0], -1, 5, 64)
    value = np.einsum("nbdk,d->nbk", digits, 3 ** np.arange(4, -1, -1))
    rows = (-(-value * 256 // 243)).astype(np.uint8)
    return _interleave_rows(rows.reshape(codes.shape[0], -1), 64)


def pack_ternary_base3_mulshift(q: np.ndarray) -> np.ndarray:
    """Pack ternary codes 5 per byte along the last axis in TQ1_0's multiply-shift form.

    Byte ``b`` holds the codes ``c_d = q[..., 5 b + d] + 1`` (``d < 5``; K padded with zero
    weights) as ``ceil(256 * v / 243)``, ``v = sum_d c_d 3**(4 - d)``: digit ``d`` is
    ``(3 * t_d) >> 8`` with ``t_d = byte * 3**d mod 256`` (as :func:`pack_ternary_base3_vnni`,
    without the row interleaving), so ``256 c_d = 3 t_d - t_(d+1)``.

    Returns
    -------
    ndarray of uint8, shape ``[..., ceil(K / 5)]``
    """
    codes = _pad_last(_ternary(q).astype(np.int64) + 1, 5, 1)
    value = codes.reshape(*codes.shape[:-1], -1, 5) @ 3 ** np.arange(4, -1, -1)
    return (-(-value * 256 // 243)).astype(np.uint8)


def unpack_ternary_base3_mulshift(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Invert :func:`pack_ternary_base3_mulshift`; ``shape`` is the logical (unpadded) shape."""
    packed = _packed(packed)
    shape = _check_shape(packed, shape, 5, -1)
    digits = np.swapaxes(_base3_vnni_digits(packed), -1, -2)  # [..., bytes, 5]
    codes = digits.reshape(*packed.shape[:-1], -1)[..., : shape[-1]]
    return (codes.astype(np.int8) - np.int8(1)).reshape(shape)


def unpack_ternary_base3_vnni(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Invert :func:`pack_ternary_base3_vnni`; ``shape`` is ``(N, K)``."""
    rows = _deinterleave_rows(packed, shape, VNNI_BLOCK_BASE3, 64)
    digits = _base3_vnni_digits(rows.reshape(rows.shape[0], -1, 64))  # always <= 2
    codes = digits.reshape(rows.shape[0], -1)[: shape[0], : shape[1]]
    return codes.astype(np.int8) - np.int8(1)


_PACKERS = {
    "2bit": (pack_ternary_2bit, unpack_ternary_2bit),
    "2bit_hf": (pack_ternary_2bit_hf, unpack_ternary_2bit_hf),
    "base3": (pack_ternary_base3, unpack_ternary_base3),
    "2bit_vnni": (pack_ternary_2bit_vnni, unpack_ternary_2bit_vnni),
    "base3_vnni": (pack_ternary_base3_vnni, unpack_ternary_base3_vnni),
    "base3_mulshift": (pack_ternary_base3_mulshift, unpack_ternary_base3_mulshift),
}


def _packer(fmt: str):
    try:
        return _PACKERS[fmt]
    except KeyError:
        raise ValueError(
            f"unknown packing format {fmt!r}; expected one of {list(_PACKERS)}"
        ) from None


def pack_ternary(q: np.ndarray, fmt: PackingFormat) -> np.ndarray:
    """Pack ternary codes in the named format (``2bit``, ``2bit_hf`` or ``base3``)."""
    return _packer(fmt)[0](q)


def unpack_ternary(packed: np.ndarray, shape: tuple[int, ...], fmt: PackingFormat) -> np.ndarray:
    """Unpack ternary codes from the named format to the logical ``shape``."""
    return _packer(fmt)[1](packed, shape)


# --------------------------------------------------------------------------- KV cache
def _kv_levels(bits: int) -> int:
    if bits not in (3, 4):
        raise ValueError(f"KV bits must be 3 or 4, got {bits}")
    return (1 << (bits - 1)) - 1


def quantize_kv(x: np.ndarray, bits: int, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """Quantize K or V per (token, head): symmetric absmax over the last axis (head_dim).

    Parameters
    ----------
    x : ndarray of float, shape ``[..., head_dim]``
        Keys (after RoPE) or values.
    bits : {3, 4}
        Code width.
    eps : float
        Lower bound of the absmax.

    Returns
    -------
    q : ndarray of int8, values in ``[-L, L]``, ``L = 2**(bits-1) - 1``
    scale : ndarray of float32, shape ``[..., 1]``
        ``(absmax + eps) / L``; ``x ~ q * scale``.
    """
    x = _float_array(x, "x")
    levels = _kv_levels(bits)
    amax = np.max(np.abs(x), axis=-1, keepdims=True)
    return _quantize_rows(x, amax, float(levels), -levels, levels, EpsMode.ADD, eps)


def dequantize_kv(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``q * scale`` in float32."""
    return (q.astype(_F32) * np.asarray(scale, dtype=_F32)).astype(_F32)


def pack_kv(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack KV codes as unsigned ``q + 2**(bits-1)`` along the last axis.

    4-bit: 2 codes per byte (element ``2i`` in the low nibble); 3-bit: 8 codes per 3 bytes, code
    ``i`` of a group at bits ``3 i`` of the little-endian 24-bit word.

    Returns
    -------
    ndarray of uint8, shape ``[..., ceil(D / 2)]`` (4-bit) or ``[..., 3 * ceil(D / 8)]`` (3-bit)
    """
    levels = _kv_levels(bits)
    q = _int_array(q, "q", -levels, levels)
    codes = q.astype(np.uint32) + np.uint32(1 << (bits - 1))
    if bits == 4:
        codes = _pad_last(codes, 2, 8).reshape(*q.shape[:-1], -1, 2)
        return (codes[..., 0] | (codes[..., 1] << 4)).astype(np.uint8)
    codes = _pad_last(codes, 8, 4).reshape(*q.shape[:-1], -1, 8)
    word = np.bitwise_or.reduce(codes << (3 * np.arange(8, dtype=np.uint32)), axis=-1)
    triple = np.stack([(word >> (8 * b)) & 0xFF for b in range(3)], axis=-1)
    return triple.astype(np.uint8).reshape(*q.shape[:-1], -1)


def unpack_kv(packed: np.ndarray, bits: int, head_dim: int) -> np.ndarray:
    """Invert :func:`pack_kv` to int8 codes of length ``head_dim`` on the last axis."""
    levels = _kv_levels(bits)
    packed = _packed(packed)
    if not isinstance(head_dim, int | np.integer) or head_dim < 1:
        raise ValueError(f"head_dim must be a positive integer, got {head_dim!r}")
    group, nbytes = (2, 1) if bits == 4 else (8, 3)
    want = nbytes * -(-head_dim // group)
    if packed.shape[-1] != want:
        raise ValueError(
            f"packed last axis is {packed.shape[-1]}; {bits}-bit head_dim {head_dim} needs {want}"
        )
    if bits == 4:
        codes = np.stack([packed & 0xF, packed >> 4], axis=-1).astype(np.int16)
    else:
        b = packed.reshape(*packed.shape[:-1], -1, 3).astype(np.uint32)
        word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
        codes = ((word[..., None] >> (3 * np.arange(8, dtype=np.uint32))) & 7).astype(np.int16)
    q = codes.reshape(*packed.shape[:-1], -1)[..., :head_dim] - (1 << (bits - 1))
    if q.size and np.abs(q).max() > levels:
        raise ValueError(f"packed holds a code outside the {bits}-bit levels [-{levels}, {levels}]")
    return q.astype(np.int8)


# --------------------------------------------------------------------------- packed KV cache
def kv_packed_width(bits: int, head_dim: int) -> int:
    """Bytes of one (token, head) row of :func:`pack_kv` codes: ``ceil(D/2)`` or ``3 ceil(D/8)``."""
    _kv_levels(bits)
    return -(-head_dim // 2) if bits == 4 else 3 * -(-head_dim // 8)


def quantize_kv_cache(
    x: np.ndarray, bits: int, start: int, bos_bits: int | None = None, eps: float = EPS
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """New keys or values ``[B, H, T, D]`` from position ``start`` as the packed cache holds them.

    Every token is quantized with :func:`quantize_kv` at ``bits`` and packed with
    :func:`pack_kv`, except, when ``bos_bits`` differs from ``bits``, the token at position 0
    (BOS): it is quantized at ``bos_bits``, its packed codes go to the separate BOS slot and its
    row of the ``bits`` codes holds the codes of zeros (unused).  Its scale is in ``scale`` like
    every other token's.

    Returns
    -------
    codes : ndarray of uint8, ``[B, H, T, kv_packed_width(bits, D)]``
    scale : ndarray of float32, ``[B, H, T]``
    bos : ndarray of uint8 ``[B, H, kv_packed_width(bos_bits, D)]`` when this call holds
        position 0 under a separate BOS width, else None
    """
    x = _float_array(x, "x", min_ndim=4)
    q, scale = quantize_kv(x, bits, eps)
    codes, scale = pack_kv(q, bits), scale[..., 0]
    if bos_bits is None or bos_bits == bits or start != 0 or x.shape[2] == 0:
        return codes, scale, None
    q_bos, s_bos = quantize_kv(x[:, :, :1], bos_bits, eps)
    codes[:, :, 0] = pack_kv(np.zeros_like(q[:, :, 0]), bits)
    scale[:, :, 0] = s_bos[:, :, 0, 0]
    return codes, scale, pack_kv(q_bos, bos_bits)[:, :, 0]


def dequantize_kv_cache(
    codes: np.ndarray,
    scale: np.ndarray,
    bos: np.ndarray | None,
    bits: int,
    bos_bits: int | None,
    head_dim: int,
) -> np.ndarray:
    """Float32 ``[B, H, S, D]`` values of a cache laid out as :func:`quantize_kv_cache` does
    (position 0 from the ``bos`` slot when it is given)."""
    x = dequantize_kv(unpack_kv(codes, bits, head_dim), scale[..., None])
    if bos is not None and x.shape[2]:
        x[:, :, 0] = dequantize_kv(unpack_kv(bos, bos_bits, head_dim), scale[:, :, 0, None])
    return x


def attention_packed_kv(
    q: np.ndarray,
    k: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    v: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    *,
    bits: int,
    bos_bits: int | None = None,
    scale: float,
) -> np.ndarray:
    """Causal grouped-query attention over a packed KV cache (float32).

    Parameters
    ----------
    q : ndarray of float32, ``[B, Hq, T, D]``
        Queries (after RoPE) of the last ``T`` of the ``S`` positions.
    k, v : (codes, scale, bos)
        The cache as :func:`quantize_kv_cache` builds it for all ``S`` positions: codes
        ``[B, Hkv, S, W]``, scale ``[B, Hkv, S]``, and the BOS slot ``[B, Hkv, W_bos]`` (or
        None when every token has ``bits``).
    bits, bos_bits : int
        Code widths; ``bos_bits`` applies to position 0 when ``bos`` is given.
    scale : float
        Score multiplier (``1 / sqrt(D)``).

    Returns
    -------
    ndarray of float32, ``[B, Hq, T, D]``
        ``softmax(q k^T * scale, causal) @ v`` with K and V dequantized (``codes * scale``),
        query ``t`` seeing keys ``s <= S - T + t``, query head ``h`` reading KV head
        ``h // (Hq / Hkv)``.
    """
    q = _float_array(q, "q", min_ndim=4)
    kf = dequantize_kv_cache(*k, bits, bos_bits, q.shape[-1])
    vf = dequantize_kv_cache(*v, bits, bos_bits, q.shape[-1])
    groups = q.shape[1] // kf.shape[1]
    kf, vf = np.repeat(kf, groups, axis=1), np.repeat(vf, groups, axis=1)
    t, s = q.shape[2], kf.shape[2]
    scores = np.matmul(q, np.swapaxes(kf, -1, -2)).astype(_F32) * _F32(scale)
    causal = np.arange(s)[None, :] <= (s - t + np.arange(t))[:, None]
    scores = np.where(causal, scores, _F32(-np.inf))
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = (scores / scores.sum(axis=-1, keepdims=True)).astype(_F32)
    return np.matmul(probs, vf).astype(_F32)


# --------------------------------------------------------------------------- INT8 LM head
def quantize_weights_int8_rows(w: np.ndarray, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-row absmax INT8 weight quantization (the optional INT8 LM head).

    ``scale[n] = max(max_k |w[n, k]|, eps) / 127``, ``q = clip(rint(w / scale), -127, 127)``.

    Parameters
    ----------
    w : ndarray of float, shape ``[N, K]``
        Weight, one output feature (vocabulary entry) per row.

    Returns
    -------
    q : ndarray of int8, shape ``[N, K]``
        Codes in [-127, 127].
    scale : ndarray of float32, shape ``[N]``
        Row scales; ``w ~ q * scale[:, None]``.
    """
    w = _float_array(w, "w", min_ndim=2)
    if w.ndim != 2:
        raise ValueError(f"w must be a [N, K] matrix, got shape {w.shape}")
    gamma = np.max(np.abs(w), axis=-1, keepdims=True)
    q, scale = _quantize_rows(w, gamma, 127.0, -127, 127, EpsMode.CLAMP, eps)
    return q, scale[:, 0]


def int8_matmul(
    q_act: np.ndarray, act_scale: np.ndarray, q_w: np.ndarray, w_scale: np.ndarray
) -> np.ndarray:
    """INT8 x INT8 matmul: ``float32(sum_k q_act * q_w[n]) * act_scale * w_scale[n]``.

    Parameters
    ----------
    q_act : ndarray of int8, shape ``[..., K]``
        Activation codes (per-token absmax, :func:`quantize_act_int8`).
    act_scale : ndarray of float32, shape ``[..., 1]``
        Per-token scales.
    q_w : ndarray of int8, shape ``[N, K]``
        Weight codes (:func:`quantize_weights_int8_rows`).
    w_scale : ndarray of float32, shape ``[N]``
        Per-row weight scales.

    Returns
    -------
    ndarray of float32, shape ``[..., N]``
        int32 accumulation, then ``(acc * act_scale) * w_scale`` in float32.
    """
    q_act = _int_array(q_act, "q_act", -128, 127)
    q_w = _int_array(q_w, "q_w", -128, 127, min_ndim=2)
    if q_w.ndim != 2 or q_act.shape[-1] != q_w.shape[1]:
        raise ValueError(
            f"q_act [..., K] and q_w [N, K] disagree: shapes {q_act.shape} and {q_w.shape}"
        )
    act_scale = np.asarray(act_scale, dtype=_F32)
    if act_scale.shape != (*q_act.shape[:-1], 1):
        raise ValueError(
            f"act_scale must have shape {(*q_act.shape[:-1], 1)}, got {act_scale.shape}"
        )
    w_scale = np.asarray(w_scale, dtype=_F32)
    if w_scale.shape != (q_w.shape[0],):
        raise ValueError(f"w_scale must have shape [{q_w.shape[0]}], got {w_scale.shape}")
    acc = np.matmul(q_act.astype(np.int32), q_w.astype(np.int32).T).astype(_F32)
    return ((acc * act_scale) * w_scale).astype(_F32)
