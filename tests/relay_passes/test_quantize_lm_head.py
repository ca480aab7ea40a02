"""QuantizeLMHead: the INT8 LM head rewrite, the final RMSNorm folded into its quantizer, and
the compiled result against the numpy reference.

Tolerance of the compiled logits: ``1e-5 * max|logits|`` against ``reference.int8_matmul`` of
the reference quantizers (integer accumulation is exact; what differs is float rounding of the
norm and of the ``acc * x_scale * w_scale`` epilogue, and an activation code flipping at a
rounding tie would cost ~1e-2 here).
"""

import numpy as np
import pytest
import tvm
from tvm import relax

from bitnet_tvm import reference
from bitnet_tvm.relay_passes.emit import QuantizeSpec, read_spec
from bitnet_tvm.relay_passes.fuse_norm_quantize import FuseNormQuantize
from bitnet_tvm.relay_passes.graph_view import GraphView
from bitnet_tvm.relay_passes.pipeline import graph_phases, lowering_pipeline
from bitnet_tvm.relay_passes.quantize_lm_head import (
    LM_HEAD_ACT,
    QuantizeLMHead,
    require_lm_head,
)
from bitnet_tvm.schedules.target import host_target

K, V, EPS = 24, 37, 1e-5
DCE = relax.transform.DeadCodeElimination


def _head_module(rx, w: np.ndarray, gamma: np.ndarray, transposed: bool) -> tvm.IRModule:
    h = rx.sym_var("h", K)

    def body(bb, h):
        mean = bb.emit(relax.op.mean(bb.emit(relax.op.multiply(h, h)), axis=[-1], keepdims=True))
        inv = bb.emit(
            relax.op.divide(rx.const(1.0), relax.op.sqrt(relax.op.add(mean, rx.const(EPS))))
        )
        normed = bb.emit(relax.op.multiply(bb.emit(relax.op.multiply(h, inv)), rx.const(gamma)))
        weight = relax.op.permute_dims(rx.const(w.T.copy())) if transposed else rx.const(w)
        logits = bb.emit(relax.op.matmul(normed, bb.emit(weight)))
        return relax.Tuple([logits, h])

    return rx.module([h], body)


def _ops(mod: tvm.IRModule) -> list[str]:
    return sorted(
        str(f.attrs["bitnet.op"])
        for f in mod.functions.values()
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "bitnet.op" in f.attrs
    )


@pytest.mark.parametrize("transposed", [False, True], ids=["KxV", "permuted_VxK"])
def test_rewrite_and_norm_fusion(rx, transposed):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((K, V)).astype(np.float32)
    mod = _head_module(rx, w, rng.random(K).astype(np.float32) + 0.5, transposed)
    mod = tvm.transform.Sequential([QuantizeLMHead(), FuseNormQuantize(), DCE()])(mod)
    assert _ops(mod) == ["int8_matmul", "norm_quantize"]
    g = GraphView.of(mod, mod["main"])
    specs = [found[0] for var in g.var2val if (found := read_spec(g, var)) is not None]
    assert specs == [QuantizeSpec(K, LM_HEAD_ACT, norm_eps=pytest.approx(EPS), has_weight=True)]
    # the int8 weight constant is the per-row quantization of W^T
    (call,) = [
        v
        for v in g.var2val.values()
        if isinstance(v, relax.Call)
        and isinstance(v.op, tvm.ir.Op)
        and v.op.name == "relax.call_tir"
        and "int8_matmul" in v.args[0].name_hint
    ]
    q_w, w_scale = (g.constant(field) for field in call.args[1].fields[2:])
    want_q, want_scale = reference.quantize_weights_int8_rows(w.T)
    assert np.array_equal(q_w, want_q) and np.array_equal(w_scale, want_scale)


def test_compiled_int8_head_equals_reference(rx):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((K, V)).astype(np.float32)
    gamma = (rng.random(K) + 0.5).astype(np.float32)
    mod = _head_module(rx, w, gamma, transposed=False)
    mod = tvm.transform.Sequential([QuantizeLMHead(), FuseNormQuantize(), DCE()])(mod)
    target = host_target()
    ex = tvm.compile(mod, target=target, relax_pipeline=lowering_pipeline(target))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    h = rng.standard_normal((2, 5, K)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(h))[0].numpy()
    x_q, x_s = reference.quantize_act(reference.rmsnorm(h, gamma, EPS), LM_HEAD_ACT)
    q_w, w_s = reference.quantize_weights_int8_rows(w.T)
    want = reference.int8_matmul(x_q, x_s, q_w, w_s)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # and close to the float head: the int8 cost on random data
    fp = reference.rmsnorm(h, gamma, EPS) @ w
    assert 10 * np.log10(np.sum(fp**2) / np.sum((fp - got) ** 2)) > 30


def test_missing_head_and_bad_option_are_clear_errors(rx):
    h = rx.sym_var("h", K)
    mod = rx.module([h], lambda bb, h: relax.op.add(h, h))
    with pytest.raises(ValueError, match="has no LM head"):
        require_lm_head(mod)
    with pytest.raises(ValueError, match="lm_head must be one of"):
        graph_phases(host_target(), None, lm_head="int4")
    names = [
        type(p).__name__ for _, passes in graph_phases(host_target(), None, "int8") for p in passes
    ]
    assert names.index("QuantizeLMHead") < names.index("FuseNormQuantize")
