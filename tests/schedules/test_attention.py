"""Packed-KV operators (kv_append, kv_attention), scheduled by the CPU rule, against the reference.

kv_append must reproduce ``reference.quantize_kv_cache`` exactly (codes, scales, BOS slot) and
copy the past rows unchanged.  kv_attention is float arithmetic with another exp and summation
order than NumPy: compared within ``ATOL`` (measured <= 2e-7 on these shapes; outputs ~1).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from bitnet_tvm import reference
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.attention import KVAttention
from bitnet_tvm.schedules.operators import kv_append, kv_attention

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})
ATOL = 2e-6
# (bits, bos_bits) of the a4.8-kv4 and a4.8-kv3 presets
MODES = [(4, None), (3, 4)]


def _build(func):
    """``func`` scheduled by the CPU rule, built for LLVM."""
    sch = KVAttention().apply(func, TARGET, False)
    assert sch is not None
    return tvm.compile(tvm.IRModule({"main": sch.mod["main"]}), target=TARGET)


def _run(ex, inputs, out_specs):
    outs = [tvm.runtime.tensor(np.zeros(shape, dtype)) for shape, dtype in out_specs]
    ex["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs], *outs)
    return [o.numpy() for o in outs]


def _append(ex, x, past, bits, bos_bits):
    """Run kv_append; ``past`` is (codes, scale, bos) of the reference layout."""
    b, h, t, d = x.shape
    s = past[0].shape[2] + t
    specs = [((b, h, s, reference.kv_packed_width(bits, d)), "uint8"), ((b, h, s), "float32")]
    inputs = [x, past[0], past[1]]
    if bos_bits is not None:
        specs.append(((b, h, reference.kv_packed_width(bos_bits, d)), "uint8"))
        inputs.append(past[2])
    out = _run(ex, inputs, specs)
    return (*out, None) if bos_bits is None else tuple(out)


def _empty(b, h, d, bits, bos_bits):
    codes = np.zeros((b, h, 0, reference.kv_packed_width(bits, d)), np.uint8)
    bos = None if bos_bits is None else np.zeros((b, h, reference.kv_packed_width(4, d)), np.uint8)
    return codes, np.zeros((b, h, 0), np.float32), bos


def _cache(rng, b, h, steps, d, bits, bos_bits):
    """The reference cache of ``sum(steps)`` random tokens appended in chunks of ``steps``."""
    codes, scale, bos = _empty(b, h, d, bits, bos_bits)
    start = 0
    for t in steps:
        x = rng.standard_normal((b, h, t, d)).astype(np.float32)
        c, s, new_bos = reference.quantize_kv_cache(x, bits, start, bos_bits)
        codes, scale = np.concatenate([codes, c], 2), np.concatenate([scale, s], 2)
        bos = new_bos if new_bos is not None else bos
        start += t
    return codes, scale, bos


@pytest.mark.parametrize(("bits", "bos_bits"), MODES)
@pytest.mark.parametrize("d", [16, 12])
def test_kv_append_equals_reference(bits, bos_bits, d):
    rng = np.random.default_rng(0)
    func = kv_append(3, d, bits=bits, bos_bits=bos_bits)
    assert str(func.attrs[attrs.OP]) == "kv_append"
    ex = _build(func)
    b, h = 2, 3
    past = _empty(b, h, d, bits, bos_bits)
    start = 0
    for t in (5, 1, 3):  # prefill (with BOS), a decode step, a chunk
        x = rng.standard_normal((b, h, t, d)).astype(np.float32)
        x[0, 0, -1] = 0.0  # an all-zero row: codes 0, scale eps / L
        x[1, 2, 0, :3] = [0.5, -0.5, 1.0]  # ties at half levels after scaling
        codes, scale, bos = _append(ex, x, past, bits, bos_bits)
        want_c, want_s, want_bos = reference.quantize_kv_cache(x, bits, start, bos_bits)
        np.testing.assert_array_equal(codes[:, :, :start], past[0])
        np.testing.assert_array_equal(scale[:, :, :start], past[1])
        np.testing.assert_array_equal(codes[:, :, start:], want_c)
        np.testing.assert_array_equal(scale[:, :, start:], want_s)
        if bos_bits is not None:
            np.testing.assert_array_equal(bos, want_bos if start == 0 else past[2])
        past, start = (codes, scale, bos), start + t


def test_kv_round_trip_through_the_cache_equals_the_fake_quantizer():
    """Unpacked, dequantized cache rows are the reference fake-quantized K (BOS at 4 bits)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4, 16)).astype(np.float32)
    codes, scale, bos = reference.quantize_kv_cache(x, 3, 0, 4)
    got = reference.dequantize_kv(reference.unpack_kv(codes, 3, 16), scale[..., None])
    got[:, :, 0] = reference.dequantize_kv(reference.unpack_kv(bos, 4, 16), scale[:, :, 0, None])
    want = reference.dequantize_kv(*reference.quantize_kv(x, 3))
    want[:, :, 0] = reference.dequantize_kv(*reference.quantize_kv(x[:, :, :1], 4))[:, :, 0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("bits", "bos_bits"), MODES)
@pytest.mark.parametrize(
    ("hq", "hkv", "d", "cases"),
    [(4, 2, 16, [(7,), (6, 1)]), (3, 1, 12, [(5, 3), (1,)])],
)
def test_kv_attention_equals_reference(bits, bos_bits, hq, hkv, d, cases):
    """Prefill (T = S), decode (T = 1) and a chunk (1 < T < S); GQA, odd head counts and D."""
    rng = np.random.default_rng(1)
    scale = float(np.float32(1 / np.sqrt(d)))
    func = kv_attention(hq, hkv, d, bits=bits, bos_bits=bos_bits, scale=scale)
    assert str(func.attrs[attrs.OP]) == "kv_attention"
    ex = _build(func)
    b = 2
    for steps in cases:  # one compiled function for every B, T and S
        k = _cache(rng, b, hkv, steps, d, bits, bos_bits)
        v = _cache(rng, b, hkv, steps, d, bits, bos_bits)
        t = steps[-1]
        q = rng.standard_normal((b, hq, t, d)).astype(np.float32)
        inputs = [q, *(a for a in k if a is not None), *(a for a in v if a is not None)]
        (got,) = _run(ex, inputs, [((b, hq, t, d), "float32")])
        want = reference.attention_packed_kv(q, k, v, bits=bits, bos_bits=bos_bits, scale=scale)
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_cpu_rule_declines_other_functions(foreign):
    assert KVAttention().apply(foreign, TARGET, False) is None


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="bits must be 3 or 4"):
        kv_append(2, 16, bits=2)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        kv_attention(3, 2, 16, bits=4, scale=0.25)
    with pytest.raises(ValueError, match="head_dim must be a positive int"):
        kv_attention(2, 2, 0, bits=4, scale=0.25)
