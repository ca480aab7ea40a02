"""ONNX export: onnxruntime matches torch in every scheme, weight form and cache mode."""

import numpy as np
import onnx
import pytest
import torch

from bitnet_tvm.export import DEFAULT_LOGITS_TOL, _io_names, export_onnx, verify_onnx
from bitnet_tvm.model import BitNetForCausalLM, get_config

ort = pytest.importorskip("onnxruntime")

# Every scheme is exported with and without past and (ternary schemes) in both weight forms;
# this covering set of pairs runs by default, the rest of the product is marked slow.
FAST = [
    ("a4.8", "master", True),
    ("a4.8", "ternary", False),
    ("b1.58", "master", False),
    ("b1.58", "ternary", True),
    ("a4.8-kv3", "master", False),
    ("a4.8-kv3", "ternary", True),
    ("fp", "master", True),
    ("fp", "master", False),
]
SLOW = [
    (s, w, p)
    for s in ("a4.8", "b1.58", "a4.8-kv3")
    for w in ("master", "ternary")
    for p in (False, True)
    if (s, w, p) not in FAST
]
CASES = [*FAST, *(pytest.param(*c, marks=pytest.mark.slow) for c in SLOW)]


def _model(scheme="a4.8", layers=1, seed=0):
    return BitNetForCausalLM(get_config("tiny", scheme=scheme, num_hidden_layers=layers), seed=seed)


def _run(sess, model, batch, seq, past_len, seed=5):
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)
    with_past = len(sess.get_inputs()) > 1
    shape = (batch, cfg.num_key_value_heads, past_len, cfg.head_dim)
    past = (
        tuple(
            (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
            for _ in range(cfg.num_hidden_layers)
        )
        if with_past
        else None
    )
    flat = [t for pair in past for t in pair] if past else []
    names = [i.name for i in sess.get_inputs()]
    out = sess.run(None, dict(zip(names, [ids.numpy(), *(t.numpy() for t in flat)], strict=True)))
    with torch.no_grad():
        logits, presents = model(ids, past)
    return out, logits.numpy(), [t.numpy() for pair in presents for t in pair]


@pytest.mark.parametrize(("scheme", "weights", "with_past"), CASES)
def test_export_matches_torch(tmp_path, scheme, weights, with_past):
    model = _model(scheme)
    path = export_onnx(model, tmp_path / "m.onnx", with_past=with_past, weights=weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp dir left
    report = verify_onnx(model, path, batch=2, seq_len=4, past_len=3, seed=11)
    assert report["rel_err"] <= DEFAULT_LOGITS_TOL
    graph = onnx.load(path).graph
    inputs, outputs = _io_names(1, with_past)
    assert [i.name for i in graph.input] == inputs
    assert [o.name for o in graph.output] == outputs
    ops = {n.op_type for n in graph.node}
    if scheme == "fp":
        assert "Round" not in ops
    else:
        assert {"Round", "Clip"} <= ops
    if weights == "ternary":
        codes = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.dims == [64, 64]]
        assert codes and all(set(np.unique(c)) <= {-1.0, 0.0, 1.0} for c in codes)


def test_shapes_are_dynamic(tmp_path):
    """Two layers, with past: batch, sequence and past length (0 included) vary at run time.

    Scheme ``fp`` has no quantizer, hence no rounding ties: ORT matches torch to float rounding
    (observed ~1e-7) in every shape.  The quantized schemes are checked on other shapes than
    their export example by ``test_export_matches_torch``.
    """
    model = _model("fp", layers=2, seed=3)
    path = export_onnx(model, tmp_path / "dec.onnx", with_past=True, verify=False)
    sess = ort.InferenceSession(str(path))
    for batch, seq, past_len in [(1, 1, 0), (4, 1, 9), (3, 6, 2)]:
        out, logits, presents = _run(sess, model, batch, seq, past_len)
        assert out[0].shape == (batch, seq, 256)
        assert out[1].shape == (batch, 2, past_len + seq, 16)
        np.testing.assert_allclose(out[0], logits, rtol=0, atol=1e-5 * np.abs(logits).max())
        for got, want in zip(out[1:], presents, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_verify_catches_a_wrong_graph(tmp_path):
    """A file exported from other weights fails verification with a clear message."""
    path = export_onnx(_model("a4.8", seed=0), tmp_path / "m.onnx", verify=False)
    with pytest.raises(ValueError, match="differ from torch in all 2 input draws"):
        verify_onnx(_model("a4.8", seed=1), path, attempts=2)
    with pytest.raises(ValueError, match="do not match the model"):
        verify_onnx(_model("a4.8", layers=2), path)


def test_rejects_bad_arguments(tmp_path):
    model = _model()
    with torch.no_grad():
        model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layers\.0\.mlp\.up_proj\.weight.*non-finite"):
        export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="weights must be"):
        export_onnx(_model(), tmp_path / "m.onnx", weights="int2")
    with pytest.raises(ValueError, match="ternary weights"):
        export_onnx(_model("fp"), tmp_path / "m.onnx", weights="ternary")
    with pytest.raises(ValueError, match="does not exist"):
        export_onnx(_model(), tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match="BitNetForCausalLM"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise RuntimeError("export failed")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(RuntimeError, match="export failed"):
        export_onnx(_model(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert target.read_bytes() == b"old"
