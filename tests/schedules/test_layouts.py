"""Packed weight layouts: shapes and round trips through the reference unpackers."""

import numpy as np
import pytest

from bitnet_tvm import reference
from bitnet_tvm.schedules.layouts import WeightLayout, pack_weight, packed_shape


@pytest.mark.parametrize("n, k", [(13, 37), (4, 8), (1, 5)])
def test_pack_round_trip(n, k):
    q_w = np.random.default_rng(n * k).integers(-1, 2, (n, k)).astype(np.int8)
    two = pack_weight(q_w, WeightLayout.TWO_BIT)
    assert two.shape == packed_shape(n, k, "2bit") == (n, -(-k // 4))
    assert np.array_equal(reference.unpack_ternary_2bit(two, (n, k)), q_w)
    kmajor = pack_weight(q_w, WeightLayout.TWO_BIT_KMAJOR)
    assert kmajor.shape == packed_shape(n, k, "2bit_kmajor") == (k, -(-n // 4))
    assert np.array_equal(reference.unpack_ternary_2bit(kmajor, (k, n)), q_w.T)
    base3 = pack_weight(q_w, WeightLayout.BASE3)
    assert base3.shape == packed_shape(n, k, "base3") == (n, -(-k // 5))
    assert np.array_equal(reference.unpack_ternary_base3(base3, (n, k)), q_w)


@pytest.mark.parametrize("n, k", [(13, 37), (16, 64), (33, 2560 + 64 + 3), (1, 321)])
@pytest.mark.parametrize(
    "layout, block, nbytes",
    [(WeightLayout.TWO_BIT_VNNI, 64, 16), (WeightLayout.BASE3_VNNI, 320, 64)],
    ids=["2bit_vnni", "base3_vnni"],
)
def test_vnni_layouts(n, k, layout, block, nbytes):
    """Row groups of 16 interleaved per block; element (n, k) where the docstrings say."""
    q_w = np.random.default_rng(n + k).integers(-1, 2, (n, k)).astype(np.int8)
    packed = pack_weight(q_w, layout)
    assert packed.shape == packed_shape(n, k, layout) == (-(-n // 16), -(-k // block) * 16 * nbytes)
    assert np.array_equal(reference.unpack_ternary(packed, (n, k), layout.value), q_w)
    rows, cols = np.arange(n)[:, None], np.arange(k)
    if layout is WeightLayout.TWO_BIT_VNNI:
        byte = packed[rows // 16, 256 * (cols // 64) + 16 * (rows % 16) + cols % 64 // 4]
        code = (byte >> (2 * (cols % 4))) & 3
    else:
        byte = packed[rows // 16, 1024 * (cols // 320) + 64 * (rows % 16) + cols % 64].astype(int)
        t = byte * 3 ** (cols % 320 // 64) % 256
        code = (3 * t) >> 8
    assert np.array_equal(code.astype(np.int8) - 1, q_w)
    assert layout.codes_per_byte == (4 if block == 64 else 5)


def test_base3_vnni_is_1_6_bits():
    assert np.prod(packed_shape(2560, 2560, "base3_vnni")) * 8 / (2560 * 2560) == 1.6


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be a positive int"):
        packed_shape(0, 4, "2bit")
    with pytest.raises(ValueError, match="2bit_lut"):
        packed_shape(4, 4, "2bit_lut")
    with pytest.raises(ValueError, match="q_w must be a 2-D"):
        pack_weight(np.zeros(4, np.int8), "2bit")
