"""``compile_model(weights="1.6bit")``: every BitLinear stored 5 codes per byte, same numerics.

The built-in a4.8 model (with past key/values) is compiled with 2-bit and with 1.6-bit weights;
the ternary codes are the same, so the logits and the KV cache must be bit-identical, at
prefill (40 tokens: the M >= 16 kernels) and at a decode step (M = 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm

import bitnet_tvm
import bitnet_tvm.compiler
from bitnet_tvm.bench.harness import BenchSpec
from bitnet_tvm.cli import _format_info, artifact_info, main
from bitnet_tvm.export import export_onnx
from bitnet_tvm.model.builtin import load_builtin_model
from bitnet_tvm.schedules import attrs


@tvm.instrument.pass_instrument
class _Capture:
    def __init__(self) -> None:
        self.lowered = None

    def run_after_pass(self, mod, info) -> None:
        if info.name == "bitnet.lowering":
            self.lowered = mod


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Per weight width: the compiled model and, for 1.6 bits, the lowered PrimFuncs."""
    model = load_builtin_model(form="int8")
    path = tmp_path_factory.mktemp("w16") / "m.onnx"
    export_onnx(model, path, weights="int8", verify=False, with_past=True)
    capture = _Capture()
    with tvm.transform.PassContext(opt_level=3, instruments=[capture]):
        low = bitnet_tvm.compile(path, weights="1.6bit")
    funcs = [f for f in capture.lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    return {"2bit": bitnet_tvm.compile(path), "1.6bit": low, "funcs": funcs}


def _steps(compiled: bitnet_tvm.CompiledModel) -> list[np.ndarray]:
    """Outputs of a 40-token prefill and of one decode step after it."""
    names = [spec["name"] for spec in compiled.get_outputs()]
    past = [spec for spec in compiled.get_inputs() if spec["name"].startswith("past_")]
    ids = np.random.default_rng(3).integers(0, 256, (1, 40)).astype(np.int64)
    feed = {"input_ids": ids}
    feed |= {s["name"]: np.zeros((1, s["shape"][1], 0, s["shape"][3]), np.float32) for s in past}
    prefill = compiled.run(names, feed)
    feed = {"input_ids": prefill[0][:, -1:].argmax(-1).astype(np.int64)}
    feed |= {s["name"]: out for s, out in zip(past, prefill[1:], strict=True)}
    return prefill + compiled.run(names, feed)


def test_same_outputs_as_2bit(built):
    for got, want in zip(_steps(built["1.6bit"]), _steps(built["2bit"]), strict=True):
        np.testing.assert_array_equal(got, want)


def test_every_bitlinear_is_base3_and_scheduled(built):
    layers = built["1.6bit"].report.to_dict()["layers"]
    assert len(layers) == 16  # 4 layers x (qkv, o, gate_up, down)
    layouts = {layer["name"].split("_", 2)[2]: layer["layout"] for layer in layers}
    assert all(layout.startswith("base3") for layout in layouts.values()), layouts
    assert layouts["o_proj"] == layouts["down_proj"] == "base3_kmajor"
    ops = [f for f in built["funcs"] if attrs.LAYOUT in f.attrs]
    assert {str(f.attrs[attrs.LAYOUT]) for f in ops} == set(layouts.values())
    assert all("tirx.is_scheduled" in f.attrs for f in ops)
    assert all("T.parallel(" in f.script() or "T.vectorized(" in f.script() for f in ops)
    loops = [f for f in built["funcs"] if "for " in f.script()]  # VM shape funcs have none
    assert all("tirx.is_scheduled" in f.attrs for f in loops)


def test_metadata_and_info(built, tmp_path):
    assert built["2bit"].metadata["weights"] == "2bit"
    path = built["1.6bit"].save(tmp_path / "a")
    info = artifact_info(path)
    assert info["weights"] == "1.6bit"
    assert set(info["layouts"]) in ({"base3_vnni", "base3_kmajor"}, {"base3", "base3_kmajor"})
    packed = info["params"]["packed ternary weights (uint8)"]["bytes"]
    assert f"weights    1.6bit ternary, {packed / 2**20:.2f} MiB" in _format_info(info)
    two = artifact_info(built["2bit"].save(tmp_path / "b"))
    assert packed < two["params"]["packed ternary weights (uint8)"]["bytes"]


@pytest.mark.parametrize("weights", ["1bit", 1.6, None])
def test_bad_weights(weights):
    with pytest.raises(ValueError, match="weights must be one of"):
        bitnet_tvm.compile("unused.onnx", weights=weights)


def test_1p6bit_needs_the_graph_passes():
    with pytest.raises(ValueError, match="needs rewrite=True"):
        bitnet_tvm.compiler.compile_model("m.onnx", weights="1.6bit", rewrite=False)


def test_cli_weights_option(compile_calls, tmp_path, capsys):
    seen = compile_calls
    assert main(["compile", "m.onnx", "-o", str(tmp_path / "a"), "--weights", "1.6bit"]) == 0
    assert seen["weights"] == "1.6bit"
    assert main(["compile", "m.onnx", "-o", str(tmp_path / "b")]) == 0
    assert seen["weights"] == "2bit"
    with pytest.raises(SystemExit):
        main(["compile", "m.onnx", "-o", "out", "--weights", "1.58bit"])
    assert "--weights" in capsys.readouterr().err


def test_bench_backend_with_1p6bit_weights():
    spec = BenchSpec(backends=("bitnet_a4.8", "bitnet_a4.8_1.6bit", "onnxruntime"))
    assert "bitnet_a4.8_1.6bit" in spec.backends
    assert "bitnet_a4.8_1.6bit" not in BenchSpec().backends  # only when asked for
