"""Packing formats of :mod:`bitnet_tvm.reference`, checked bit by bit with Python integers.

Also compares the HF layout with ``transformers.integrations.bitnet.pack_weights`` /
``unpack_weights`` (the latter is wrapped in ``torch.compile``; its undecorated function runs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from transformers.integrations import bitnet as hf_bitnet

from bitnet_tvm import reference as ref

SETTINGS = settings(deadline=None, max_examples=100)
FORMATS = ("2bit", "2bit_hf", "base3")


def ternary(min_dims: int = 1, max_dims: int = 3, max_side: int = 13):
    shapes = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side)
    return hnp.arrays(np.int8, shapes, elements=st.integers(-1, 1))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --------------------------------------------------------------------------- 2-bit, along K
@SETTINGS
@given(q=ternary())
def test_2bit_bit_positions(q):
    packed = ref.pack_ternary_2bit(q)
    k = q.shape[-1]
    assert packed.dtype == np.uint8 and packed.shape == (*q.shape[:-1], ceil_div(k, 4))
    for lead in np.ndindex(q.shape[:-1]):
        for j in range(4 * ceil_div(k, 4)):
            byte = int(packed[(*lead, j // 4)])
            code = (byte >> (2 * (j % 4))) & 0b11
            assert code == (int(q[(*lead, j)]) + 1 if j < k else 1)  # padding: zero weights


def test_2bit_known_bytes():
    # codes 0,1,2,1 -> 0b01_10_01_00; a lone -1 pads with three zero weights -> 0b01_01_01_00
    q = np.array([[-1, 0, 1, 0, -1]], np.int8)
    np.testing.assert_array_equal(ref.pack_ternary_2bit(q), [[0b01100100, 0b01010100]])


# --------------------------------------------------------------------------- 2-bit, HF layout
@SETTINGS
@given(q=ternary(min_dims=2, max_dims=2, max_side=17))
def test_2bit_hf_bit_positions(q):
    packed = ref.pack_ternary_2bit_hf(q)
    out, cols = q.shape
    rows = ceil_div(out, 4)
    assert packed.dtype == np.uint8 and packed.shape == (rows, cols)
    for j in range(4 * rows):
        for c in range(cols):
            code = (int(packed[j % rows, c]) >> (2 * (j // rows))) & 0b11
            assert code == (int(q[j, c]) + 1 if j < out else 1)


@SETTINGS
@given(q=ternary(min_dims=2, max_dims=2, max_side=17))
def test_2bit_hf_matches_transformers(q):
    hf_packed = hf_bitnet.pack_weights(torch.from_numpy(q.copy())).numpy()
    ours = ref.pack_ternary_2bit_hf(q)
    if q.shape[0] % 4 == 0:
        np.testing.assert_array_equal(ours, hf_packed)
    # HF leaves padding rows at code 0; the logical rows decode the same either way
    np.testing.assert_array_equal(ref.unpack_ternary_2bit_hf(hf_packed, q.shape), q)
    unpack = hf_bitnet.unpack_weights.__wrapped__  # skip torch.compile
    hf_unpacked = unpack(torch.from_numpy(ours), dtype=torch.int8).numpy()
    np.testing.assert_array_equal(hf_unpacked[: q.shape[0]], q)


def test_2bit_hf_docstring_example():
    # the example in transformers' unpack_weights docstring
    packed = np.array([[0b10100001, 0b00011000], [0b10010000, 0b00001010]], np.uint8)
    want = [[0, -1], [-1, 1], [-1, 1], [-1, 1], [1, 0], [0, -1], [1, -1], [1, -1]]
    np.testing.assert_array_equal(ref.unpack_ternary_2bit_hf(packed, (8, 2)), want)


# --------------------------------------------------------------------------- base-3
@SETTINGS
@given(q=ternary())
def test_base3_bytes(q):
    packed = ref.pack_ternary_base3(q)
    k = q.shape[-1]
    assert packed.dtype == np.uint8 and packed.shape == (*q.shape[:-1], ceil_div(k, 5))
    for lead in np.ndindex(q.shape[:-1]):
        for b in range(ceil_div(k, 5)):
            trits = [int(q[(*lead, 5 * b + i)]) + 1 if 5 * b + i < k else 1 for i in range(5)]
            assert int(packed[(*lead, b)]) == sum(t * 3**i for i, t in enumerate(trits))


def test_base3_extremes():
    q = np.array([[1] * 5 + [-1] * 5 + [0] * 3], np.int8)
    np.testing.assert_array_equal(ref.pack_ternary_base3(q), [[242, 0, 1 + 3 + 9 + 27 + 81]])


# --------------------------------------------------------------------------- round trips
@SETTINGS
@given(q=ternary(min_dims=2, max_dims=2, max_side=17), fmt=st.sampled_from(FORMATS))
def test_round_trip_2d(q, fmt):
    packed = ref.pack_ternary(q, fmt)
    back = ref.unpack_ternary(packed, q.shape, fmt)
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, q)


@SETTINGS
@given(q=ternary(), fmt=st.sampled_from(["2bit", "base3"]))
def test_round_trip_any_rank(q, fmt):
    np.testing.assert_array_equal(ref.unpack_ternary(ref.pack_ternary(q, fmt), q.shape, fmt), q)


@SETTINGS
@given(
    data=st.data(), fmt=st.sampled_from(FORMATS), rows=st.integers(1, 4), groups=st.integers(1, 5)
)
def test_every_valid_byte_decodes_and_re_encodes(data, fmt, rows, groups):
    if fmt == "base3":
        byte = st.integers(0, 242)
    else:  # four 2-bit codes, none of them 3
        byte = st.lists(st.integers(0, 2), min_size=4, max_size=4).map(
            lambda c: c[0] | c[1] << 2 | c[2] << 4 | c[3] << 6
        )
    packed = data.draw(hnp.arrays(np.uint8, (rows, groups), elements=byte))
    group = 5 if fmt == "base3" else 4
    shape = (group * rows, groups) if fmt == "2bit_hf" else (rows, group * groups)
    q = ref.unpack_ternary(packed, shape, fmt)
    np.testing.assert_array_equal(ref.pack_ternary(q, fmt), packed)


# --------------------------------------------------------------------------- invalid input
@pytest.mark.parametrize("fmt", FORMATS)
def test_pack_rejects_non_ternary(fmt):
    with pytest.raises(ValueError, match=r"q values must lie in \[-1, 1\]"):
        ref.pack_ternary(np.array([[0, 2], [1, -1]], np.int8), fmt)
    with pytest.raises(TypeError, match="q must have an integer dtype"):
        ref.pack_ternary(np.zeros((2, 2), np.float32), fmt)


@pytest.mark.parametrize("shape", [(5,), (1, 3, 4)])
def test_2bit_hf_needs_2d(shape):
    with pytest.raises(ValueError, match=r"2-D|2 dimension"):
        ref.pack_ternary_2bit_hf(np.zeros(shape, np.int8))
    with pytest.raises(ValueError, match="2-D"):
        ref.unpack_ternary_2bit_hf(np.zeros((1, *shape[1:]), np.uint8), shape)


def test_invalid_2bit_code():
    with pytest.raises(ValueError, match="invalid 2-bit code 3"):
        ref.unpack_ternary_2bit(np.array([[0b11 << 2]], np.uint8), (1, 4))
    with pytest.raises(ValueError, match="invalid 2-bit code 3"):
        ref.unpack_ternary_2bit_hf(np.array([[0b11 << 6]], np.uint8), (4, 1))


def test_invalid_base3_byte():
    with pytest.raises(ValueError, match="at most 242"):
        ref.unpack_ternary_base3(np.array([[243]], np.uint8), (1, 5))


@pytest.mark.parametrize(
    ("fmt", "packed_shape", "shape"),
    [
        ("2bit", (2, 2), (2, 9)),
        ("2bit", (2, 2), (2, 4)),
        ("2bit", (2, 2), (8,)),
        ("2bit", (2, 2), (2, -1)),
        ("2bit_hf", (2, 3), (9, 3)),
        ("2bit_hf", (2, 3), (8, 2)),
        ("base3", (1, 2), (1, 11)),
        ("base3", (1, 2), (1, 2, 5)),
    ],
)
def test_unpack_shape_must_fit(fmt, packed_shape, shape):
    with pytest.raises(ValueError, match="shape"):
        ref.unpack_ternary(np.full(packed_shape, 0b01010101, np.uint8), shape, fmt)


@pytest.mark.parametrize("packed", [np.zeros((1, 1), np.int8), [[0]], np.zeros((1, 1), np.uint16)])
def test_unpack_needs_uint8(packed):
    with pytest.raises(TypeError, match="packed must be a uint8"):
        ref.unpack_ternary(packed, (1, 4), "2bit")


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown packing format 'int2'"):
        ref.pack_ternary(np.zeros((1, 4), np.int8), "int2")


# --------------------------------------------------------------------------- KV cache
def kv_codes(bits: int):
    levels = (1 << (bits - 1)) - 1
    shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=19)
    return hnp.arrays(np.int8, shapes, elements=st.integers(-levels, levels))


@SETTINGS
@given(q=kv_codes(4))
def test_kv4_nibbles(q):
    packed = ref.pack_kv(q, 4)
    d = q.shape[-1]
    assert packed.dtype == np.uint8 and packed.shape == (*q.shape[:-1], ceil_div(d, 2))
    for lead in np.ndindex(q.shape[:-1]):
        for i in range(2 * ceil_div(d, 2)):
            code = (int(packed[(*lead, i // 2)]) >> (4 * (i % 2))) & 0xF
            assert code == (int(q[(*lead, i)]) + 8 if i < d else 8)
    np.testing.assert_array_equal(ref.unpack_kv(packed, 4, d), q)


@SETTINGS
@given(q=kv_codes(3))
def test_kv3_little_endian_words(q):
    packed = ref.pack_kv(q, 3)
    d = q.shape[-1]
    groups = ceil_div(d, 8)
    assert packed.dtype == np.uint8 and packed.shape == (*q.shape[:-1], 3 * groups)
    for lead in np.ndindex(q.shape[:-1]):
        for g in range(groups):
            b0, b1, b2 = (int(packed[(*lead, 3 * g + b)]) for b in range(3))
            word = b0 | b1 << 8 | b2 << 16
            for i in range(8):
                k = 8 * g + i
                assert (word >> (3 * i)) & 0b111 == (int(q[(*lead, k)]) + 4 if k < d else 4)
    np.testing.assert_array_equal(ref.unpack_kv(packed, 3, d), q)


def test_kv_known_bytes():
    np.testing.assert_array_equal(ref.pack_kv(np.array([-7, 7, 0], np.int8), 4), [0xF1, 0x88])
    # codes 1..7 then 4 (pad): 0b100_111_110_101_100_011_010_001
    q3 = np.array([-3, -2, -1, 0, 1, 2, 3], np.int8)
    word = sum(c << (3 * i) for i, c in enumerate([1, 2, 3, 4, 5, 6, 7, 4]))
    np.testing.assert_array_equal(ref.pack_kv(q3, 3), [word & 0xFF, word >> 8 & 0xFF, word >> 16])


@SETTINGS
@given(x=hnp.arrays(np.float32, (3, 2, 11), elements=st.floats(-100, 100, width=32)))
def test_kv_quantize_pack_round_trip(x):
    for bits in (3, 4):
        q, scale = ref.quantize_kv(x, bits)
        back = ref.unpack_kv(ref.pack_kv(q, bits), bits, x.shape[-1])
        np.testing.assert_array_equal(ref.dequantize_kv(back, scale), ref.dequantize_kv(q, scale))


@pytest.mark.parametrize(("bits", "bad"), [(4, 8), (4, -8), (3, 4), (3, -4)])
def test_pack_kv_rejects_out_of_level_codes(bits, bad):
    with pytest.raises(ValueError, match="q values must lie in"):
        ref.pack_kv(np.array([[0, bad]], np.int8), bits)


@pytest.mark.parametrize(("bits", "byte"), [(4, 0x80), (4, 0x08), (3, 0)])
def test_unpack_kv_rejects_out_of_level_codes(bits, byte):
    # unsigned code 0 is -8 (4-bit) or -4 (3-bit): below the symmetric levels
    packed = np.full((1, 1 if bits == 4 else 3), 0x88 if bits == 4 else 0xFF, np.uint8)
    packed[0, 0] = byte
    with pytest.raises(ValueError, match="outside the"):
        ref.unpack_kv(packed, bits, 2)


@pytest.mark.parametrize(
    ("bits", "length", "head_dim"), [(4, 3, 7), (4, 3, 4), (3, 3, 9), (3, 4, 8)]
)
def test_unpack_kv_length_must_fit(bits, length, head_dim):
    with pytest.raises(ValueError, match="packed last axis"):
        ref.unpack_kv(np.full((2, length), 0x88, np.uint8), bits, head_dim)


def test_kv_bad_arguments():
    with pytest.raises(ValueError, match="KV bits must be 3 or 4"):
        ref.pack_kv(np.zeros((1, 4), np.int8), 2)
    with pytest.raises(ValueError, match="KV bits must be 3 or 4"):
        ref.unpack_kv(np.zeros((1, 2), np.uint8), 8, 4)
    with pytest.raises(ValueError, match="head_dim must be a positive integer"):
        ref.unpack_kv(np.zeros((1, 0), np.uint8), 4, 0)
    with pytest.raises(TypeError, match="packed must be a uint8"):
        ref.unpack_kv(np.zeros((1, 2), np.int8), 4, 4)
    with pytest.raises(TypeError, match="q must have an integer dtype"):
        ref.pack_kv(np.zeros((1, 4), np.float32), 4)
