"""int8 weight codes: FoldWeights keeps them int8, the recognizers read them through the cast."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

from bitnet_tvm.relay_passes.fold_weights import FoldWeights
from bitnet_tvm.relay_passes.fuse_bitlinear import find_bitlinears
from bitnet_tvm.relay_passes.graph_view import GraphView
from bitnet_tvm.relay_passes.quant_match import ternary_codes, weight_codes

K, N = 64, 48  # 3072 codes: above FoldWeights' default min_int_size


def _codes(n: int = N, k: int = K, seed: int = 0) -> np.ndarray:
    codes = np.random.default_rng(seed).integers(-1, 2, size=(n, k)).astype(np.int8)
    codes.flat[:3] = (-1, 0, 1)
    return codes


def _int8_bitlinear(rx, codes: np.ndarray, alpha: float = 0.25):
    """``matmul(q, permute_dims(astype(C))) * (guard / L) * alpha``, as an int8 export imports."""

    def body(bb, x):
        qz = rx.emit_quantizer(bb, x)
        w = bb.emit(relax.op.astype(relax.const(codes), "float32"))
        y = bb.emit(relax.op.matmul(qz.q, bb.emit(relax.op.permute_dims(w, [1, 0]))))
        scale = bb.emit(relax.op.divide(qz.guard, rx.const(127.0)))
        return relax.op.multiply(bb.emit(relax.op.multiply(y, scale)), rx.const(alpha))

    return rx.module([rx.sym_var("x", codes.shape[1])], body)


def _constants(mod) -> list[np.ndarray]:
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call):
            for arg in expr.args:
                if hasattr(arg, "value") and hasattr(arg.value, "numpy"):
                    found.append(arg.value.numpy())

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


def test_fold_keeps_int8_codes_unwidened(rx):
    codes = _codes()
    after = FoldWeights()(_int8_bitlinear(rx, codes))
    consts = _constants(after)
    big = [c for c in consts if c.size == codes.size]
    assert len(big) == 1 and big[0].dtype == np.int8 and np.array_equal(big[0], codes)
    assert not any(c.dtype == np.float32 and c.size >= codes.size for c in consts)
    assert "bitnet_fold_keep" not in after["main"].script()  # the stand-in params are gone
    assert len(after["main"].params) == 1
    (m,) = find_bitlinears(GraphView.of(after, after["main"]))
    assert np.array_equal(m.q_w, codes) and m.alpha == 0.25 and m.act.act.bits == 8


def test_fold_widens_small_int_constants(rx):
    """Below ``min_int_size`` the old behaviour stays: the cast is folded to a float constant."""
    codes = _codes()
    after = FoldWeights(min_int_size=codes.size + 1)(_int8_bitlinear(rx, codes))
    consts = _constants(after)
    assert not any(c.dtype == np.int8 for c in consts)
    (folded,) = [c for c in consts if c.size == codes.size]
    assert folded.dtype == np.float32 and np.array_equal(folded, codes.T.astype(np.float32))
    (m,) = find_bitlinears(GraphView.of(after, after["main"]))
    assert np.array_equal(m.q_w, codes)


def test_fold_still_folds_float_subgraphs_next_to_kept_codes(rx):
    """Other weight arithmetic in the same function is folded as before."""
    codes = _codes()

    def body(bb, x):
        w = bb.emit(relax.op.permute_dims(bb.emit(relax.op.astype(relax.const(codes), "float32"))))
        y = bb.emit(relax.op.matmul(x, w))
        bias = bb.emit(relax.op.multiply(rx.const(np.ones(N)), rx.const(2.0)))
        return relax.op.add(y, bias)

    after = FoldWeights()(rx.module([rx.sym_var("x", K)], body))
    consts = _constants(after)
    assert any(c.dtype == np.int8 for c in consts)
    assert any(c.shape == (N,) and np.all(c == 2.0) for c in consts)
    assert "R.multiply" not in after["main"].script()


def _weight_expr(bb, codes, *, cast=True, transpose=True):
    w = relax.const(codes)
    if cast:
        w = bb.emit(relax.op.astype(w, "float32"))
    if transpose:
        w = bb.emit(relax.op.permute_dims(w, [1, 0]))
    return w


def _read(rx, build):
    bb = relax.BlockBuilder()
    x = rx.sym_var("x", K)
    with bb.function("main", [x]):
        with bb.dataflow():
            w = build(bb)
            out = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(out)
    mod = bb.get()
    g = GraphView.of(mod, mod["main"])
    return weight_codes(g, g.var2val[out].args[1])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint8])
def test_weight_codes_through_cast_and_transpose(rx, dtype):
    codes = _codes()
    if dtype is np.uint8:  # unsigned codes: only {0, 1}
        codes = np.abs(codes)
    q, alpha = _read(rx, lambda bb: _weight_expr(bb, codes.astype(dtype)))
    assert q.dtype == np.int8 and alpha == 1.0 and np.array_equal(q, codes)


def test_weight_codes_int8_without_transpose_is_k_by_n(rx):
    codes_kn = _codes(K, N)  # [K, N] already: the codes of the [N, K] weight are its transpose
    # [K, N] consumed directly: x @ astype(C)
    bb = relax.BlockBuilder()
    x = rx.sym_var("x", N)
    with bb.function("main", [x]):
        with bb.dataflow():
            w = _weight_expr(bb, codes_kn.T.copy(), transpose=False)
            out = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(out)
    mod = bb.get()
    g = GraphView.of(mod, mod["main"])
    q, alpha = weight_codes(g, g.var2val[out].args[1])
    assert np.array_equal(q, codes_kn) and alpha == 1.0


def test_weight_codes_float_constants_as_before(rx):
    w = rx.ternary_weight(K, N, alpha=0.5)  # [K, N] float of {-0.5, 0, 0.5}
    q, alpha = _read(rx, lambda bb: relax.const(w))
    assert np.array_equal(q, np.sign(w.T).astype(np.int8)) and alpha == 0.5
    # a transposed float constant [N, K]
    q, alpha = _read(rx, lambda bb: bb.emit(relax.op.permute_dims(relax.const(w.T.copy()))))
    assert np.array_equal(q, np.sign(w.T).astype(np.int8)) and alpha == 0.5


def test_weight_codes_rejects_non_codes(rx):
    codes = _codes()
    codes[5, 7] = 2
    assert _read(rx, lambda bb: _weight_expr(bb, codes)) is None
    # float -> int -> float is a rounding, not an identity: not read as codes
    w = rx.ternary_weight(N, K, alpha=0.5)

    def rounded(bb):
        as_int = bb.emit(relax.op.astype(relax.const(w), "int8"))
        return bb.emit(relax.op.permute_dims(bb.emit(relax.op.astype(as_int, "float32"))))

    assert _read(rx, rounded) is None
    # a 3-D permutation is not a weight transpose
    assert weight_codes(GraphView(None, {}), relax.const(np.zeros((2, 2, 2), np.int8))) is None


def test_ternary_codes_sample_check_is_only_a_shortcut():
    """The quick sample rejection never changes the answer: ternary entries past the sample
    are still checked, and a zero sample does not reject."""
    w = np.zeros((128, 64), np.float32)
    w[100:, :] = 0.5  # all past the first 4096 entries
    w[127, 3] = -0.5
    q, alpha = ternary_codes(w)
    assert alpha == 0.5 and np.array_equal(q, np.sign(w.T).astype(np.int8))
    w[120, 5] = 0.25
    assert ternary_codes(w) is None
    w = np.full((64, 64), 0.5, np.float32)
    w[0, 1] = 0.3  # inside the sample
    assert ternary_codes(w) is None
