"""Packed ternary weight layouts understood by the fused operators.

Every layout is built on a packer of :mod:`bitnet_tvm.reference`; this module only names the
layouts, gives their packed shapes and orients the matrix.  A LUT-ready layout (groups of three
weights indexing a 27-entry table) would be a new :class:`WeightLayout` member.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from bitnet_tvm import reference

__all__ = ["WeightLayout", "pack_weight", "packed_shape", "unpack_weight"]


class WeightLayout(StrEnum):
    """Storage of a ternary weight ``W[N, K]`` (codes ``w + 1``).

    * ``2bit``: :func:`reference.pack_ternary_2bit` of ``W``: uint8 ``[N, ceil(K / 4)]``,
      element ``(n, k)`` at bits ``2 * (k % 4)`` of byte ``[n, k // 4]``.
    * ``2bit_kmajor``: :func:`reference.pack_ternary_2bit` of ``W.T``: uint8
      ``[K, ceil(N / 4)]``, each row of ``W^T`` contiguous (the sparse kernel reads only the
      rows whose activation is non-zero).
    * ``base3``: :func:`reference.pack_ternary_base3` of ``W``: uint8 ``[N, ceil(K / 5)]``,
      element ``(n, k)`` is digit ``k % 5`` (base 3) of byte ``[n, k // 5]``.
    * ``base3_kmajor``: :func:`reference.pack_ternary_base3_mulshift` of ``W.T``: uint8
      ``[K, ceil(N / 5)]``, 1.6 bits per weight, each row of ``W^T`` contiguous (the sparse
      operator's layout with 1.6-bit weights); element ``(n, k)`` is multiply-shift digit
      ``n % 5`` of byte ``[k, n // 5]`` (linear in bytes a ``vpdpbusd`` can take).
    * ``2bit_vnni``: :func:`reference.pack_ternary_2bit_vnni`: uint8
      ``[ceil(N / 16), ceil(K / 64) * 256]``, groups of 16 rows interleaved per 16-byte block
      (one linear stream per register tile of the VNNI decode kernel).
    * ``base3_vnni``: :func:`reference.pack_ternary_base3_vnni`: uint8
      ``[ceil(N / 16), ceil(K / 320) * 1024]``, 1.6 bits per weight, digit ``d`` of 64
      consecutive bytes holding 64 consecutive codes; row groups interleaved per 64-byte block.
    """

    TWO_BIT = "2bit"
    TWO_BIT_KMAJOR = "2bit_kmajor"
    BASE3 = "base3"
    TWO_BIT_VNNI = "2bit_vnni"
    BASE3_VNNI = "base3_vnni"
    BASE3_KMAJOR = "base3_kmajor"

    @property
    def codes_per_byte(self) -> int:
        """Ternary codes stored per byte."""
        return 5 if self in _BASE3 else 4

    @property
    def k_major(self) -> bool:
        """Whether the packed matrix is ``W^T`` (rows indexed by K)."""
        return self in (WeightLayout.TWO_BIT_KMAJOR, WeightLayout.BASE3_KMAJOR)

    @property
    def row_format(self) -> str:
        """The :func:`reference.pack_ternary` format of every row (of ``W``, or of ``W^T`` for
        a K-major layout) before any interleaving."""
        if self is WeightLayout.BASE3_KMAJOR:
            return "base3_mulshift"
        return "base3" if self in _BASE3 else "2bit"

    @property
    def vnni_block(self) -> int | None:
        """Codes per row and block of a row-interleaved VNNI layout (None for the others)."""
        return _VNNI_BLOCK.get(self)


_BASE3 = frozenset({WeightLayout.BASE3, WeightLayout.BASE3_VNNI, WeightLayout.BASE3_KMAJOR})
_VNNI_BLOCK = {
    WeightLayout.TWO_BIT_VNNI: reference.VNNI_BLOCK_2BIT,
    WeightLayout.BASE3_VNNI: reference.VNNI_BLOCK_BASE3,
}


def _dim(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def packed_shape(n: int, k: int, layout: WeightLayout | str) -> tuple[int, int]:
    """Shape of the packed uint8 array holding a ternary ``W[n, k]`` in ``layout``."""
    n, k = _dim(n, "n"), _dim(k, "k")
    layout = WeightLayout(layout)
    if layout.vnni_block is not None:
        rows = reference.VNNI_ROWS
        return -(-n // rows), -(-k // layout.vnni_block) * layout.vnni_block * rows // (
            layout.codes_per_byte
        )
    if layout.k_major:
        return k, -(-n // layout.codes_per_byte)
    return n, -(-k // layout.codes_per_byte)


def pack_weight(q_w: np.ndarray, layout: WeightLayout | str) -> np.ndarray:
    """Pack ternary codes ``q_w`` (int ``[N, K]``, values in {-1, 0, 1}) into ``layout``.

    Returns
    -------
    ndarray of uint8, shape ``packed_shape(N, K, layout)``
    """
    layout = WeightLayout(layout)
    if not isinstance(q_w, np.ndarray) or q_w.ndim != 2:
        raise ValueError(f"q_w must be a 2-D [N, K] numpy array, got {getattr(q_w, 'shape', q_w)}")
    if layout is WeightLayout.BASE3:
        return reference.pack_ternary_base3(q_w)
    if layout is WeightLayout.TWO_BIT_VNNI:
        return reference.pack_ternary_2bit_vnni(q_w)
    if layout is WeightLayout.BASE3_VNNI:
        return reference.pack_ternary_base3_vnni(q_w)
    if layout.k_major:
        return reference.pack_ternary(np.ascontiguousarray(q_w.T), layout.row_format)
    return reference.pack_ternary_2bit(q_w)


def unpack_weight(packed: np.ndarray, n: int, k: int, layout: WeightLayout | str) -> np.ndarray:
    """Invert :func:`pack_weight`: int8 ternary codes ``[n, k]`` of ``packed`` in ``layout``."""
    layout = WeightLayout(layout)
    if layout.k_major:
        return np.ascontiguousarray(reference.unpack_ternary(packed, (k, n), layout.row_format).T)
    return reference.unpack_ternary(packed, (n, k), layout.value)
