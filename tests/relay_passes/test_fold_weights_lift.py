"""FoldWeights (weight ternarization folded, STE leftovers stripped) and lift_params: golden IR."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from bitnet_tvm.relay_passes.fold_weights import FoldWeights
from bitnet_tvm.relay_passes.fuse_bitlinear import find_bitlinears
from bitnet_tvm.relay_passes.graph_view import GraphView
from bitnet_tvm.relay_passes.lift_params import lift_params

K, N = 8, 4
# Master weight [N, K]: mean|W| = 0.5 exactly and W / 0.5 has no rounding ties, so folding
# is exact: codes [0, -1, 0, 1] (-1.75 and 2.125 clip to -1 and 1), times 0.5, transposed.
W_MASTER = np.tile(np.array([0.0625, -0.875, 0.0, 1.0625], np.float32), (N, 2))
W_FOLDED = np.tile(np.array([0.0, -0.5, 0.0, 0.5], np.float32), (N, 2)).T.copy()


def test_fold_absmean_ternarization(rx):
    """``clip(round(W / mean|W|), -1, 1) * mean|W|``, transposed, folds to one constant."""

    def body(bb, x):
        w = rx.const(W_MASTER)
        a = bb.emit(relax.op.mean(bb.emit(relax.op.abs(w))))
        wq = bb.emit(relax.op.clip(bb.emit(relax.op.round(bb.emit(relax.op.divide(w, a)))), -1, 1))
        wt = bb.emit(relax.op.permute_dims(bb.emit(relax.op.multiply(wq, a))))
        return relax.op.matmul(x, wt)

    x = rx.sym_var("x", K)
    after = FoldWeights()(rx.module([x], body))
    x2 = rx.sym_var("x", K)
    expected = rx.module([x2], lambda bb, x: relax.op.matmul(x, rx.const(W_FOLDED)))
    tvm.ir.assert_structural_equal(after, expected)


def test_strip_straight_through_estimator(rx):
    """``y + (q - y)`` (STE leftover) becomes ``q`` so the quantizer behind it is found."""
    w = rx.ternary_weight(K, N)

    def body(bb, x, ste: bool):
        qz = rx.emit_quantizer(bb, x)
        q = bb.emit(qz.q)  # expected: the STE add is replaced by its value (an alias binding)
        if ste:
            y = bb.emit(relax.op.multiply(x, qz.mult))
            q = bb.emit(relax.op.add(y, bb.emit(relax.op.subtract(qz.q, y))))
        scale = bb.emit(relax.op.divide(qz.guard, rx.const(127.0)))
        return relax.op.matmul(bb.emit(relax.op.multiply(q, scale)), rx.const(w))

    before = rx.module([rx.sym_var("x", K)], lambda bb, x: body(bb, x, True))
    assert find_bitlinears(GraphView.of(before, before["main"])) == []
    after = FoldWeights()(before)
    (m,) = find_bitlinears(GraphView.of(after, after["main"]))
    assert m.act.act.bits == 8
    # Golden: the STE add is gone, replaced by the value it stood for.
    values = relax.analysis.get_var2val(after["main"]).values()
    body_ops = [v.op.name if isinstance(v, relax.Call) else type(v).__name__ for v in values]
    assert body_ops.count("relax.add") == 1  # the eps guard only
    clean = relax.transform.DeadCodeElimination()(after)
    expected = rx.module([rx.sym_var("x", K)], lambda bb, x: body(bb, x, False))
    tvm.ir.assert_structural_equal(clean, expected)


def test_lift_params_golden(rx):
    big = np.arange(K * N, dtype=np.float32).reshape(K, N)
    small = np.ones(N, np.float32)

    def body(bb, x):
        c = rx.const(big)  # one constant object used twice -> one parameter
        y = bb.emit(relax.op.add(relax.op.matmul(x, c), rx.const(small)))
        return relax.op.add(y, relax.op.matmul(x, c))

    x = rx.sym_var("x", K)
    lifted, params = lift_params(rx.module([x], body), min_size=16)
    assert list(params) == ["param_0"]
    np.testing.assert_array_equal(params["param_0"], big)

    x2 = rx.sym_var("x", K)
    p = relax.Var("param_0", relax.TensorType([K, N], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x2, p]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.matmul(x2, p), rx.const(small)))
            out = bb.emit_output(relax.op.add(y, relax.op.matmul(x2, p)))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(lifted, bb.get())


def test_lift_params_threshold(rx):
    x = rx.sym_var("x", K)
    mod = rx.module([x], lambda bb, x: relax.op.matmul(x, rx.const(np.ones((K, N), "float32"))))
    lifted, params = lift_params(mod, min_size=K * N + 1)
    assert params == {}
    tvm.ir.assert_structural_equal(lifted, mod)
