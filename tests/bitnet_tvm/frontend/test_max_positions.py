"""max_positions: the maximum length from ONNX metadata_props or RoPE tables, and generation's
clear error for an over-long prompt on an artifact compiled without model_info."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import bitnet_tvm
from bitnet_tvm.export import export_onnx
from bitnet_tvm.frontend.max_positions import METADATA_KEY, max_positions
from bitnet_tvm.generate import Generator
from bitnet_tvm.model import BitNetForCausalLM, get_config


def _proto(tables: dict[str, tuple[int, ...]], *, as_constant: bool = False) -> onnx.ModelProto:
    tensors = [
        helper.make_tensor(name, onnx.TensorProto.FLOAT, dims, np.zeros(dims).ravel().tolist())
        for name, dims in tables.items()
    ]
    nodes = []
    if as_constant:
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in tensors]
        tensors = []
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    nodes.append(helper.make_node("Identity", ["x"], ["y"]))
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=tensors))


@pytest.mark.parametrize("as_constant", [False, True])
def test_rope_table_length(as_constant):
    proto = _proto(
        {"model.rotary.cos_cached": (40, 8), "sin_cached": (40, 8)}, as_constant=as_constant
    )
    assert max_positions(proto) == 40


def test_no_or_ambiguous_tables_give_none():
    assert max_positions(_proto({"weight": (40, 8)})) is None  # not a cos/sin name
    assert max_positions(_proto({"cos": (40,)})) is None  # not rank 2
    assert max_positions(_proto({"cos": (40, 8), "sin": (32, 8)})) is None  # ambiguous
    assert max_positions(_proto({"cosmos_scale": (40, 8)})) == 40  # name starts with "cos"


def test_metadata_props_win_and_are_checked():
    proto = _proto({"cos": (40, 8)})
    helper.set_model_props(proto, {METADATA_KEY: "64"})
    assert max_positions(proto) == 64
    helper.set_model_props(proto, {METADATA_KEY: "-3"})
    with pytest.raises(ValueError, match=r"max_position_embeddings.*positive integer"):
        max_positions(proto)


def test_overlong_prompt_without_model_info(tmp_path):
    """compile without model_info: the length comes from the ONNX model, the error is clear."""
    torch_model = BitNetForCausalLM(get_config("tiny", scheme="b1.58"), seed=0)
    path = export_onnx(torch_model, tmp_path / "past.onnx", with_past=True, verify=False)
    proto = onnx.load(path)
    helper.set_model_props(proto, {METADATA_KEY: "16"})
    onnx.save(proto, path)
    compiled = bitnet_tvm.compile(path)
    assert compiled.metadata["model"] is None and compiled.metadata["max_positions"] == 16
    reloaded = bitnet_tvm.load(compiled.save(tmp_path / "artifact"))
    generator = Generator(reloaded)
    assert generator.max_length == 16
    with pytest.raises(ValueError, match=r"prompt has 17 tokens, more than .* length 16"):
        generator.generate(np.zeros(17, np.int64))
    with pytest.raises(ValueError, match=r"lower max_new_tokens to 6"):
        generator.generate(np.zeros(10, np.int64), max_new_tokens=8)
