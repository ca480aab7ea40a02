"""End to end on the CPU: ONNX BitNet -> bitnet_tvm.compile -> run, against onnxruntime.

Tolerance: compiled logits within ``1e-4 * max|logits|`` of onnxruntime on the same ONNX file,
and the same argmax everywhere.  The integer path (codes, int32 accumulation) is exact; what
differs is float rounding order (RMSNorm and the quantizer statistics in one fused kernel,
``(acc * scale) * alpha`` against a float matmul of dequantized values), measured at ~1e-6 of
the logit scale.  A flipped activation code at a rounding tie would cost ~1e-2 here, so the
bound also shows that no code flips on these inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import bitnet_tvm
from bitnet_tvm.errors import BitnetError
from bitnet_tvm.export import export_onnx
from bitnet_tvm.hf_export import export_hf_bitnet
from bitnet_tvm.model import BitNetForCausalLM, get_config
from bitnet_tvm.schedules.layouts import packed_shape

REL_TOL = 1e-4


def _export(root: Path, scheme: str, **kwargs) -> Path:
    model = BitNetForCausalLM(get_config("tiny", scheme=scheme), seed=0).eval()
    path = root / f"{scheme}_{'_'.join(f'{k}-{v}' for k, v in kwargs.items())}.onnx"
    return export_onnx(model, path, verify=False, **kwargs)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {scheme: _export(root, scheme) for scheme in ("a4.8", "b1.58", "fp")}


@pytest.fixture(scope="module")
def compiled(exports) -> dict[str, bitnet_tvm.CompiledModel]:
    return {scheme: bitnet_tvm.compile(path) for scheme, path in exports.items()}


def _ids(batch: int, seq: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, seq)).astype(np.int64)


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    scale = float(np.max(np.abs(want)))
    err = float(np.max(np.abs(got - want)))
    assert err <= REL_TOL * scale, f"max abs err {err:.3g} > {REL_TOL} * {scale:.3g}"
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("scheme", ["a4.8", "b1.58", "fp"])
def test_logits_match_onnxruntime_at_several_shapes(exports, compiled, scheme):
    session = ort.InferenceSession(str(exports[scheme]), providers=["CPUExecutionProvider"])
    for batch, seq in [(1, 1), (2, 7), (3, 13)]:  # one compiled module, symbolic batch/seq
        feed = {"input_ids": _ids(batch, seq)}
        _assert_close(compiled[scheme].run(["logits"], feed)[0], session.run(["logits"], feed)[0])


@pytest.mark.parametrize(
    ("scheme", "ops"),
    [
        (
            "a4.8",
            [
                "ternary_int4_matmul",
                "sparse_int8_matmul",
                "ternary_int4_gate_up",
                "sparse_int8_matmul",
            ],
        ),
        (
            "b1.58",
            [
                "ternary_int8_matmul",
                "sparse_int8_matmul",
                "ternary_int8_gate_up",
                "sparse_int8_matmul",
            ],
        ),
    ],
)
def test_report_lists_every_bitlinear(compiled, scheme, ops):
    report = compiled[scheme].report
    layers = get_config("tiny").num_hidden_layers
    assert [layer.operator for layer in report.layers] == ops * layers
    names = [layer.name for layer in report.layers[:4]]
    assert names == [
        "layers_0_qkv_proj",
        "layers_0_o_proj",
        "layers_0_gate_up_proj",
        "layers_0_down_proj",
    ]
    config = get_config("tiny")
    qkv = report.layers[0]
    assert qkv.n == config.hidden_size + 2 * config.num_key_value_heads * config.head_dim
    assert report.layers[2].n == 2 * config.intermediate_size  # gate and up rows
    assert report.unfused_matmuls == 0
    assert "layers_0_qkv_proj" in str(report)


def test_fp_model_has_no_bitlinears(compiled):
    assert compiled["fp"].report.layers == []
    assert compiled["fp"].report.unfused_matmuls == 0


def test_requantize_b158_export_with_a48_scheme(exports):
    # Same seed, same master weights: compiling the b1.58 graph with a4.8 activations must
    # give the a4.8 graph's logits.
    requantized = bitnet_tvm.compile(exports["b1.58"], scheme="a4.8")
    assert requantized.report.layers[0].operator == "ternary_int4_matmul"
    feed = {"input_ids": _ids(2, 9)}
    want = ort.InferenceSession(str(exports["a4.8"])).run(["logits"], feed)[0]
    _assert_close(requantized.run(["logits"], feed)[0], want)


def test_decode_with_past_key_values(tmp_path):
    path = _export(tmp_path, "a4.8", with_past=True)
    model = bitnet_tvm.compile(path)
    session = ort.InferenceSession(str(path))
    config = get_config("tiny")
    names = [o.name for o in session.get_outputs()]
    empty = np.zeros((2, config.num_key_value_heads, 0, config.head_dim), np.float32)
    feed = {"input_ids": _ids(2, 6)}
    for i in range(config.num_hidden_layers):
        feed[f"past_key.{i}"] = feed[f"past_value.{i}"] = empty
    for _step in range(3):  # prefill, then two single-token decode steps
        want, got = session.run(None, feed), model.run(None, feed)
        _assert_close(got[0], want[0])
        for w, g in zip(want[1:], got[1:], strict=True):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
        feed = {"input_ids": want[0][:, -1].argmax(-1)[:, None].astype(np.int64)}
        for i in range(config.num_hidden_layers):
            feed[f"past_key.{i}"] = want[names.index(f"present_key.{i}")]
            feed[f"past_value.{i}"] = want[names.index(f"present_value.{i}")]


@pytest.mark.parametrize("form", ["packed", "online"])
def test_hf_bitnet_exports_are_fully_fused(tmp_path, form):
    path = export_hf_bitnet(form, tmp_path / f"hf_{form}.onnx")
    model = bitnet_tvm.compile(path)
    assert model.report.unfused_matmuls == 0
    assert len(model.report.layers) == 4 * 2  # qkv, o, gate/up, down per layer
    rng = np.random.default_rng(0)
    mask = np.ones((2, 9), np.int64)
    mask[-1, :2] = 0
    feed = {"input_ids": rng.integers(0, 128, (2, 9)).astype(np.int64), "attention_mask": mask}
    want = ort.InferenceSession(str(path)).run(["logits"], feed)[0]
    _assert_close(model.run(["logits"], feed)[0], want)


def test_save_load_roundtrip_keeps_weights_out_of_the_library(compiled, tmp_path):
    model = compiled["a4.8"]
    path = model.save(tmp_path / "artifact")
    assert sorted(p.name for p in path.iterdir()) == ["metadata.json", "model.so", "params.npz"]
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["inputs"] == [{"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64"}]
    # every fused operator's packed weight is a parameter (not a constant in the library)
    with np.load(path / "params.npz") as params:
        packed = sorted(
            params[name].shape for name in params.files if params[name].dtype == np.uint8
        )
    want = sorted(packed_shape(r.n, r.k, r.layout) for r in model.report.layers)
    assert packed == want
    feed = {"input_ids": _ids(2, 5)}
    np.testing.assert_array_equal(
        bitnet_tvm.load(path).run(["logits"], feed)[0], model.run(["logits"], feed)[0]
    )


def test_artifact_runs_with_the_runtime_only(compiled, tmp_path):
    path = compiled["a4.8"].save(tmp_path / "artifact")
    ids = _ids(2, 5)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "want.npy", compiled["a4.8"].run(["logits"], {"input_ids": ids})[0])
    script = tmp_path / "run_artifact.py"  # only the runtime: no compiler, no relax
    script.write_text(
        "import sys, numpy as np\n"
        "from bitnet_tvm.runtime import load\n"
        "artifact, ids, want = sys.argv[1:]\n"
        "got = load(artifact).run(['logits'], {'input_ids': np.load(ids)})[0]\n"
        "assert np.array_equal(got, np.load(want))\n"
        "assert not [m for m in sys.modules if m.startswith(('tvm.relax', 'tvm.s_tir'))]\n"
    )
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    args = [
        sys.executable,
        str(script),
        str(path),
        str(tmp_path / "ids.npy"),
        str(tmp_path / "want.npy"),
    ]
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_bad_inputs_give_clear_errors(compiled):
    model = compiled["a4.8"]
    with pytest.raises(TypeError, match="input 'input_ids': expected dtype int64"):
        model.run(None, {"input_ids": _ids(1, 3).astype(np.int32)})
    with pytest.raises(ValueError, match="expected rank 2"):
        model.run(None, {"input_ids": _ids(1, 3)[0]})
    with pytest.raises(ValueError, match="missing \\['input_ids'\\]"):
        model.run(None, {})
    with pytest.raises(ValueError, match="unknown output 'nope'"):
        model.run(["nope"], {"input_ids": _ids(1, 3)})
    with pytest.raises(TypeError, match="must be a numpy array"):
        model.run(None, {"input_ids": [[1, 2]]})


def test_bad_artifacts_give_clear_errors(compiled, tmp_path):
    with pytest.raises(BitnetError, match=r"model\.so is missing"):
        bitnet_tvm.load(tmp_path)
    path = compiled["a4.8"].save(tmp_path / "artifact")
    meta = json.loads((path / "metadata.json").read_text())
    (path / "metadata.json").write_text(json.dumps({**meta, "format_version": 999}))
    with pytest.raises(BitnetError, match="format 999"):
        bitnet_tvm.load(path)


def test_bad_onnx_gives_clear_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"bad\.onnx"):
        bitnet_tvm.compile(bad)
    with pytest.raises(FileNotFoundError):
        bitnet_tvm.compile(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="unknown scheme"):
        bitnet_tvm.compile(bad, scheme="a9.9")
