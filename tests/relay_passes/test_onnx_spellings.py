"""BitLinear spellings as they arrive through the ONNX frontend (``Clip`` as ``call_tir``,
variadic ``Max`` as ``max(stack)``, ``Cast`` to int8, HF's quantizers), after FoldWeights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bitnet_tvm.frontend import import_onnx
from bitnet_tvm.relay_passes.fold_weights import FoldWeights
from bitnet_tvm.relay_passes.fuse_bitlinear import find_bitlinears
from bitnet_tvm.relay_passes.graph_view import GraphView
from bitnet_tvm.schemes import EpsMode, QuantMethod

K, N = 8, 4


def _model(nodes, inits):
    graph = helper.make_graph(
        nodes,
        "bitlinear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", N])],
        [numpy_helper.from_array(np.asarray(v), name) for name, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _f32(v):
    return np.asarray(v, dtype=np.float32)


def _quantizer(guard_op: str):
    """ONNX nodes of an absmax INT8 quantizer of ``x`` into ``q``; its guard is ``gd``."""
    guard = {
        "max": helper.make_node("Max", ["st", "eps"], ["gd"]),
        "clip": helper.make_node("Clip", ["st", "eps"], ["gd"]),
        "add": helper.make_node("Add", ["st", "eps"], ["gd"]),
    }[guard_op]
    return [
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("ReduceMax", ["a", "axes"], ["st"], keepdims=1),
        guard,
        helper.make_node("Div", ["L", "gd"], ["s"]),
        helper.make_node("Mul", ["x", "s"], ["y"]),
        helper.make_node("Round", ["y"], ["r"]),
        helper.make_node("Clip", ["r", "lo", "hi"], ["q"]),
    ]


def _inits(w):
    return {
        "axes": np.array([-1], np.int64),
        "eps": _f32(1e-5),
        "L": _f32(127.0),
        "lo": _f32(-128.0),
        "hi": _f32(127.0),
        "W": w,
    }


def _match(model):
    mod = FoldWeights()(import_onnx(model))
    g = GraphView.of(mod, mod["main"])
    found = find_bitlinears(g)
    assert len(found) == 1, mod["main"].script(show_meta=False)
    return found[0], g


@pytest.mark.parametrize(
    ("guard", "mode"),
    [("max", EpsMode.CLAMP), ("clip", EpsMode.CLAMP), ("add", EpsMode.ADD)],
    ids=["variadic-max", "clip-min-only", "add"],
)
def test_onnx_float_dequant(rx, guard, mode):
    """Codes clipped by ONNX ``Clip`` (imported as call_tir maximum/minimum)."""
    w = rx.ternary_weight(K, N, alpha=0.25)
    nodes = [
        *_quantizer(guard),
        helper.make_node("Div", ["gd", "L"], ["sc"]),
        helper.make_node("Mul", ["q", "sc"], ["dq"]),
        helper.make_node("MatMul", ["dq", "W"], ["out"]),
    ]
    m, g = _match(_model(nodes, _inits(w)))
    act = m.act.act
    assert (act.method, act.bits, act.eps_mode, act.topk) == (QuantMethod.ABSMAX, 8, mode, None)
    assert act.eps == rx.EPS32
    assert m.alpha == 0.25
    # The codes really are clipped through the frontend's call_tir PrimFuncs.
    q = g.value(m.act.q)
    assert q.op.name == "relax.call_tir" and q.args[0].name_hint.startswith("minimum")


def test_onnx_hf_packed_bitlinear(rx):
    """HF packed BitLinear: 2-bit codes unpacked in the graph, codes cast through int8,
    ``matmul(q, W) / (ws * s)``."""
    codes = np.sign(rx.ternary_weight(K, N)).astype(np.int8)
    ws = 4.0
    nodes = [
        *_quantizer("max"),
        helper.make_node("Cast", ["q"], ["q8"], to=TensorProto.INT8),
        helper.make_node("Cast", ["q8"], ["qf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["Wu"], ["Wf"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["Wf", "one"], ["W"]),
        helper.make_node("MatMul", ["qf", "W"], ["mm"]),
        helper.make_node("Mul", ["ws", "s"], ["den"]),
        helper.make_node("Div", ["mm", "den"], ["out"]),
    ]
    inits = _inits(None)
    del inits["W"]
    inits |= {"Wu": (codes + 1).astype(np.uint8), "one": _f32(1.0), "ws": _f32(ws)}
    m, _ = _match(_model(nodes, inits))
    assert m.alpha == 1.0 / ws
    np.testing.assert_array_equal(m.q_w, codes.T)
    assert (m.act.act.eps_mode, m.act.act.bits) == (EpsMode.CLAMP, 8)


class _AutoBitLinear(torch.nn.Module):
    """HF AutoBitLinear's forward: weights and activations fake-quantized in the graph."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(N, K, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ws = 1.0 / self.weight.abs().mean().clamp(min=1e-5)
        wq = (self.weight * ws).round().clamp(-1, 1) / ws
        s = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
        q = (x * s).round().clamp(-128, 127) / s
        return torch.nn.functional.linear(q, wq)


def test_torch_dynamo_hf_autobitlinear():
    module = _AutoBitLinear().eval()
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}
    program = torch.onnx.export(
        module, (torch.randn(2, 3, K),), dynamo=True, dynamic_shapes=(dims,), verbose=False
    )
    m, _ = _match(program.model_proto)
    w = module.weight.detach().numpy()
    ws = np.float32(1.0) / np.maximum(np.abs(w).mean(dtype=np.float32), np.float32(1e-5))
    assert m.alpha == pytest.approx(float(np.float32(1.0) / ws), rel=1e-6)
    np.testing.assert_array_equal(m.q_w, np.clip(np.round(w * ws), -1, 1).astype(np.int8))
    act = m.act.act
    assert (act.method, act.bits, act.eps_mode) == (QuantMethod.ABSMAX, 8, EpsMode.CLAMP)
    assert act.eps == pytest.approx(1e-5, rel=1e-6)
