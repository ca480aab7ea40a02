"""The ``int8`` weight form: export, compact import and compile of a tiny model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bitnet_tvm import export as export_mod
from bitnet_tvm.compiler import compile_model
from bitnet_tvm.export import export_onnx
from bitnet_tvm.model import BitLinear, BitNetForCausalLM, get_config
from bitnet_tvm.model.synthetic import random_int8_model
from bitnet_tvm.weight_import import import_compact, lifted_initializers

ort = pytest.importorskip("onnxruntime")

LAYERS = 2
REL_TOL = 1e-4


def _model() -> BitNetForCausalLM:
    return BitNetForCausalLM(get_config("tiny", num_hidden_layers=LAYERS), seed=3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[BitNetForCausalLM, onnx.ModelProto, object]:
    model = _model()
    path = export_onnx(model, tmp_path_factory.mktemp("int8") / "m.onnx", weights="int8")
    return model, path


def _bitlinear_codes(model: BitNetForCausalLM) -> dict[str, np.ndarray]:
    frozen = _model()
    frozen.load_state_dict(model.state_dict())
    frozen.freeze_int8()
    return {
        f"model.{name}.weight": m.weight.numpy()
        for name, m in frozen.named_modules()
        if isinstance(m, BitLinear)
    }


def test_int8_initializers_hold_the_codes(exported):
    model, path = exported
    graph = onnx.load(path).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    codes = _bitlinear_codes(model)
    assert len(codes) == 7 * LAYERS
    for name, want in codes.items():
        got = inits[name]  # [out, in] int8, no float copy of it in the file
        assert got.dtype == np.int8 and np.array_equal(got, want), name
    # no float copy of any weight (the exporter's constant folder would make small ones)
    shapes = {s for c in codes.values() for s in (c.shape, c.shape[::-1])}
    assert not [n for n, a in inits.items() if a.dtype == np.float32 and a.shape in shapes]
    lifted = {t.name for t in lifted_initializers(graph)}
    assert lifted == set(codes)  # every code tensor, read only through Cast(float)


def _ort_logits(path, ids):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input_ids": ids})[0]


def test_int8_export_compiles_fused_and_matches_onnxruntime(exported):
    _, path = exported
    compiled = compile_model(path, "llvm")
    report = compiled.report
    assert report.unfused_matmuls == 0
    assert len(report.layers) == 4 * LAYERS  # qkv, o, gate_up, down per layer
    rng = np.random.default_rng(0)
    for batch, seq in ((1, 1), (2, 7), (3, 4)):
        ids = rng.integers(0, 256, (batch, seq)).astype(np.int64)
        (got,) = compiled.run(["logits"], {"input_ids": ids})
        want = _ort_logits(path, ids)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= REL_TOL * np.abs(want).max()


def test_compact_import_keeps_codes_int8(exported):
    _, path = exported
    mod, proto = import_compact(path)
    assert [i.name for i in proto.graph.input] == ["input_ids"]
    assert [p.name for p in mod["main"].params] == ["input_ids"]
    script = mod["main"].script(show_meta=False)
    assert script.count('R.astype(metadata["ir.GenericConst"]') == 7 * LAYERS


def test_external_data_export_compiles(tmp_path, monkeypatch):
    """Large models go to ``<name>.onnx.data``; both files move into place together and the
    compiler reads the int8 codes from the data file."""
    monkeypatch.setattr(export_mod, "_EXTERNAL_DATA_BYTES", 0)
    model = random_int8_model(get_config("tiny", num_hidden_layers=1), seed=1)
    path = export_onnx(model, tmp_path / "big.onnx", weights="int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    proto = onnx.load(path, load_external_data=False)
    codes = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(codes) == 7 and all(t.data_location == onnx.TensorProto.EXTERNAL for t in codes)
    compiled = compile_model(path, "llvm")
    assert compiled.report.unfused_matmuls == 0 and len(compiled.report.layers) == 4
    ids = np.array([[1, 2, 3, 4, 5]], dtype=np.int64)
    (got,) = compiled.run(["logits"], {"input_ids": ids})
    want = _ort_logits(path, ids)
    assert np.abs(got - want).max() <= REL_TOL * np.abs(want).max()
    (tmp_path / "big.onnx.data").unlink()
    with pytest.raises(ValueError, match=r"big\.onnx\.data"):
        compile_model(path, "llvm")


def test_freeze_int8_is_bit_exact():
    model = _model()
    ids = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, _ = model(ids)
        model.freeze_int8()
        after, _ = model(ids)
    assert torch.equal(before, after)
    lin = model.layers[0].mlp.down_proj
    assert lin.weight.dtype == torch.int8 and set(lin.weight.unique().tolist()) <= {-1, 0, 1}


def test_random_int8_model_is_seeded_and_int8():
    config = get_config("tiny", num_hidden_layers=1)
    a, b, c = (random_int8_model(config, seed=s) for s in (4, 4, 5))
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name
    assert not torch.equal(a.layers[0].self_attn.q_proj.weight, c.layers[0].self_attn.q_proj.weight)
    lin = a.layers[0].self_attn.q_proj
    assert lin.frozen and lin.weight.dtype == torch.int8
    assert set(lin.weight.unique().tolist()) == {-1, 0, 1}
    assert torch.equal(a.rotary.inv_freq, _model().rotary.inv_freq)  # not left on meta
    with pytest.raises(ValueError, match="ternary"):
        random_int8_model(get_config("tiny", scheme="fp"))


def test_int8_model_exports_only_as_int8(tmp_path):
    model = random_int8_model(get_config("tiny", num_hidden_layers=1))
    with pytest.raises(ValueError, match="weights='int8'"):
        export_onnx(model, tmp_path / "m.onnx", weights="master")
    fp = BitNetForCausalLM(get_config("tiny", scheme="fp", num_hidden_layers=1))
    with pytest.raises(ValueError, match="ternary weights"):
        export_onnx(fp, tmp_path / "m.onnx", weights="int8")
    assert list(tmp_path.iterdir()) == []
