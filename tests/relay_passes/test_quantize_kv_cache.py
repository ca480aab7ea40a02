"""QuantizeKVCache on one attention layer spelled as our with-past export spells it.

Golden checks on the rewritten signature (packed codes, scales, BOS slots in and out), the
fused calls, the ``bitnet.kv_cache`` facts and the artifact I/O names; negatives: no KV fake
quantizer, a scheme without KV bits, layers that disagree.  End-to-end numerics (generation vs
PyTorch) are in tests/bitnet_tvm/test_generate_kv.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from bitnet_tvm.relay_passes.quantize_kv_cache import KV_ATTR, QuantizeKVCache, packed_kv_io
from bitnet_tvm.schemes import get_scheme

HQ, HKV, D = 4, 2, 16


def _fake_quant(bb, rx, x, bits):
    """``codes * scale`` as the export writes fake_quantize_kv (Clip as maximum/minimum)."""
    levels = float(2 ** (bits - 1) - 1)
    guard = bb.emit(
        relax.op.add(
            bb.emit(relax.op.max(bb.emit(relax.op.abs(x)), [-1], True)), rx.const(rx.EPS32)
        )
    )
    y = bb.emit(
        relax.op.round(
            bb.emit(relax.op.multiply(x, bb.emit(relax.op.divide(rx.const(levels), guard))))
        )
    )
    codes = rx.emit_clip(bb, y, -levels, levels, "min_max")
    return bb.emit(relax.op.multiply(codes, bb.emit(relax.op.divide(guard, rx.const(levels)))))


def _kv(bb, rx, x, positions, widths):
    if widths is None:
        return x
    bits, bos = widths
    if bos is None:
        return _fake_quant(bb, rx, x, bits)
    is_bos = bb.emit(relax.op.equal(positions, relax.const(0, "int64")))
    cond = bb.emit(relax.op.expand_dims(is_bos, [0, 1, 3]))
    return bb.emit(relax.op.where(cond, _fake_quant(bb, rx, x, bos), _fake_quant(bb, rx, x, bits)))


def _repeat(bb, x, s):
    b = x.ty.shape[0]
    e = bb.emit(relax.op.expand_dims(x, [2]))
    e = bb.emit(relax.op.broadcast_to(e, [b, HKV, HQ // HKV, s, D]))
    return bb.emit(relax.op.reshape(e, [b, HQ, s, D]))


def _module(rx, widths=((3, 4), (3, 4)), layers=1, leak=False) -> tvm.IRModule:
    """``main(q, kn, vn, positions, past_key_i, past_value_i...) -> (o..., present...)``."""
    batch, seq, past = (tirx.Var(n, "int64") for n in ("batch", "seq", "past"))
    f32 = "float32"
    q = relax.Var("q", relax.TensorType([batch, HQ, seq, D], f32))
    kn = relax.Var("kn", relax.TensorType([batch, HKV, seq, D], f32))
    vn = relax.Var("vn", relax.TensorType([batch, HKV, seq, D], f32))
    positions = relax.Var("positions", relax.TensorType([seq], "int64"))
    pasts = [
        relax.Var(f"past_{kv}_{i}", relax.TensorType([batch, HKV, past, D], f32))
        for i in range(layers)
        for kv in ("key", "value")
    ]
    bb = relax.BlockBuilder()
    with bb.function("main", [q, kn, vn, positions, *pasts]):
        with bb.dataflow():
            outs, presents = [], []
            for i in range(layers):
                kc = bb.emit(
                    relax.op.concat([pasts[2 * i], _kv(bb, rx, kn, positions, widths[i])], 2)
                )
                vc = bb.emit(
                    relax.op.concat([pasts[2 * i + 1], _kv(bb, rx, vn, positions, widths[i])], 2)
                )
                s = kc.ty.shape[2]
                kt = bb.emit(relax.op.permute_dims(_repeat(bb, kc, s), [0, 1, 3, 2]))
                scores = bb.emit(relax.op.multiply(bb.emit(relax.op.matmul(q, kt)), rx.const(0.25)))
                masked = bb.emit(
                    relax.op.where(rx.const(np.array([False]), "bool"), rx.const(-np.inf), scores)
                )
                probs = bb.emit(relax.op.nn.softmax(masked, axis=-1))
                outs.append(bb.emit(relax.op.matmul(probs, _repeat(bb, vc, s))))
                presents += [kc, vc, scores] if leak else [kc, vc]
            out = bb.emit_output(relax.Tuple([*outs, *presents]))
        bb.emit_func_output(out)
    return bb.get()


def _dims(shape) -> list[str]:
    return [str(d.value) if isinstance(d, tirx.IntImm) else str(d) for d in shape]


def _signature(func) -> list[tuple[str, str, list]]:
    return [(p.name, str(p.ty.dtype), _dims(p.ty.shape)) for p in func.params]


def _calls(mod) -> list[str]:
    found = []
    for _, binding in relax.analysis.get_var2val(mod["main"]).items():
        if isinstance(binding, relax.Call) and binding.op.name == "relax.call_tir":
            found.append(mod[binding.args[0]].attrs["bitnet.op"])
    return [str(c) for c in found]


def test_rewrites_bos_3bit_cache(rx):
    mod = QuantizeKVCache()(_module(rx))
    func = mod["main"]
    cache = [
        ("uint8", ["batch", "2", "past", "6"]),
        ("float32", ["batch", "2", "past"]),
        ("uint8", ["batch", "2", "8"]),
    ]
    want = [("q", "float32", ["batch", "4", "seq", "16"])]
    want += [(n, "float32", ["batch", "2", "seq", "16"]) for n in ("kn", "vn")]
    want += [("positions", "int64", ["seq"])]
    for kv in ("key", "value"):
        want += [
            (f"past_{kv}{part}_0", *c)
            for part, c in zip(("", "_scale", "_bos"), cache, strict=True)
        ]
    assert _signature(func) == want
    ret = [(str(f.dtype), _dims(f.shape)) for f in func.ret_ty.fields]
    present = [
        ("uint8", ["batch", "2", "past + seq", "6"]),
        ("float32", ["batch", "2", "past + seq"]),
    ]
    present.append(("uint8", ["batch", "2", "8"]))
    assert ret == [("float32", ["batch", "4", "seq", "16"]), *present, *present]
    assert sorted(_calls(mod)) == ["kv_append", "kv_append", "kv_attention"]
    info = json.loads(str(func.attrs[KV_ATTR]))
    assert (info["bits"], info["bos_bits"], info["kv_heads"], info["head_dim"]) == (3, 4, 2, 16)
    assert (info["layers"], info["inputs"], info["outputs"]) == (1, [4, 5], [1, 2])
    assert not relax.analysis.free_vars(func)  # no reference to the old fp32 cache is left


def test_scheme_quantizes_an_unquantized_cache_at_its_width(rx):
    mod = QuantizeKVCache(get_scheme("a4.8-kv4"))(_module(rx, widths=(None,)))
    info = json.loads(str(mod["main"].attrs[KV_ATTR]))
    assert (info["bits"], info["bos_bits"]) == (4, None)
    assert [p.name for p in mod["main"].params][4:] == [
        "past_key_0",
        "past_key_scale_0",
        "past_value_0",
        "past_value_scale_0",
    ]
    assert int(mod["main"].params[4].ty.shape[3]) == 8  # 16 4-bit codes


@pytest.mark.parametrize(
    ("widths", "scheme"), [((None,), None), (((3, 4),), "a4.8"), (((4, None),), "a4.8")]
)
def test_leaves_the_graph_alone(rx, widths, scheme):
    """No KV fake quantizer (and no scheme), or a scheme without KV bits: fp cache as before."""
    before = _module(rx, widths=widths)
    after = QuantizeKVCache(get_scheme(scheme) if scheme else None)(before)
    tvm.ir.assert_structural_equal(after, before)


def test_scores_used_elsewhere_keep_the_fp_cache(rx):
    """The replaced chain must feed only the attention: otherwise the site is left alone."""
    before = _module(rx, leak=True)
    tvm.ir.assert_structural_equal(QuantizeKVCache()(before), before)


def test_layers_with_different_widths_are_an_error(rx):
    with pytest.raises((ValueError, RuntimeError), match="KV fake quantizers of the layers differ"):
        QuantizeKVCache()(_module(rx, widths=((3, 4), (4, None)), layers=2))


def test_packed_kv_io_names_follow_the_onnx_names(rx):
    mod = QuantizeKVCache()(_module(rx))
    names = ["q", "kn", "vn", "positions", "past_key.0", "past_value.0"]
    inputs = [{"name": n, "shape": [], "dtype": "float32"} for n in names]
    outputs = [{"name": n} for n in ("o", "present_key.0", "present_value.0")]
    new_in, new_out, info = packed_kv_io(mod, inputs, outputs)
    assert [s["name"] for s in new_in][4:] == [
        "past_key.0",
        "past_key_scale.0",
        "past_key_bos.0",
        "past_value.0",
        "past_value_scale.0",
        "past_value_bos.0",
    ]
    assert new_in[5] == {
        "name": "past_key_scale.0",
        "shape": ["batch", 2, "past"],
        "dtype": "float32",
    }
    assert [s["name"] for s in new_out][:3] == ["o", "present_key.0", "present_key_scale.0"]
    per_token = info.bytes_per_token()
    assert per_token["packed"] == 2 * 2 * (6 + 4) and per_token["fp16"] == 2 * 2 * 32
