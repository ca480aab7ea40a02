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


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be a positive int"):
        packed_shape(0, 4, "2bit")
    with pytest.raises(ValueError, match="2bit_lut"):
        packed_shape(4, 4, "2bit_lut")
    with pytest.raises(ValueError, match="q_w must be a 2-D"):
        pack_weight(np.zeros(4, np.int8), "2bit")
