"""FloatMatmul: which legalized matmuls it takes, and float numerics on odd shapes.

Tolerance: float32 results within ``1e-5 * sqrt(K) * max|A| * max|B|`` of numpy's float64
product: the rule only reorders the K sum (one accumulator per output, FMAs), whose rounding
error grows like sqrt(K) ulps of the magnitude of the terms.
"""

import numpy as np
import pytest
import tvm
from tvm import relax, te

from bitnet_tvm.schedules.cpu.matmul_fp import FloatMatmul, MatmulFpKnobs, matmul_axes


def _var(name):
    return tvm.tirx.Var(name, "int64")


def _check(got, a, b):
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    bound = 1e-5 * np.sqrt(a.shape[-1]) * np.abs(a).max() * np.abs(b).max()
    assert np.abs(got - want).max() <= bound


@pytest.mark.parametrize("knobs", [MatmulFpKnobs(), MatmulFpKnobs(rows=3, cols=16, unroll=4)])
@pytest.mark.parametrize("n, k", [(13, 67), (256, 64), (200, 129)])
def test_lm_head_shape(legalized, built, run, cpu_target, knobs, n, k):
    m = _var("m")
    func = legalized(relax.op.matmul, ([1, m, k], "float32"), ([k, n], "float32"))
    ex = built(FloatMatmul(knobs).apply(func, cpu_target, False))
    rng = np.random.default_rng(n)
    b = rng.standard_normal((k, n)).astype(np.float32)
    for rows in (1, 5, 9):  # decode, and row tails of the 4-row tile
        a = rng.standard_normal((1, rows, k)).astype(np.float32)
        _check(run(ex, [a, b], (1, rows, n)), a, b)


def test_attention_shapes_with_symbolic_columns_and_reduction(legalized, built, run, cpu_target):
    b_, m, j = _var("b"), _var("m"), _var("j")
    rng = np.random.default_rng(0)
    # q @ k^T: J symbolic (past + seq), predicated column tail
    scores = legalized(relax.op.matmul, ([b_, 3, m, 16], "float32"), ([b_, 3, 16, j], "float32"))
    ex = built(FloatMatmul().apply(scores, cpu_target, False))
    q = rng.standard_normal((2, 3, 5, 16)).astype(np.float32)
    kt = rng.standard_normal((2, 3, 16, 37)).astype(np.float32)
    _check(run(ex, [q, kt], (2, 3, 5, 37)), q, kt)
    # p @ v: K symbolic
    pv = legalized(relax.op.matmul, ([b_, 3, m, j], "float32"), ([b_, 3, j, 16], "float32"))
    ex = built(FloatMatmul().apply(pv, cpu_target, False))
    p = rng.random((2, 3, 1, 37)).astype(np.float32)
    v = rng.standard_normal((2, 3, 37, 16)).astype(np.float32)
    _check(run(ex, [p, v], (2, 3, 1, 16)), p, v)


def test_declines_what_it_does_not_handle(legalized, cpu_target, foreign):
    rule = FloatMatmul()
    a = te.placeholder((4, 8), name="a")
    b = te.placeholder((16, 8), name="b")
    r = te.reduce_axis((0, 8), name="r")
    c = te.compute((4, 16), lambda i, j: te.sum(a[i, r] * b[j, r], axis=r), name="c")
    nt = te.create_prim_func([a, b, c])  # B transposed ("NT"): dlight's GEMV territory
    integer = legalized(relax.op.matmul, ([4, 8], "int32"), ([8, 16], "int32"))
    nn = legalized(relax.op.matmul, ([4, 8], "float32"), ([8, 16], "float32"))
    assert matmul_axes(nn) is not None
    assert rule.apply(integer, cpu_target, False) is None
    assert rule.apply(foreign, cpu_target, False) is None
    assert rule.apply(nt, cpu_target, False) is None
    assert rule.apply(nn.with_attr("tirx.is_scheduled", True), cpu_target, False) is None
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    assert rule.apply(nn, cuda, False) is None


def test_knob_space_lists_the_defaults(legalized, cpu_target):
    func = legalized(relax.op.matmul, ([4, 8], "float32"), ([8, 16], "float32"))
    space = FloatMatmul().knob_space(func, cpu_target)
    defaults = MatmulFpKnobs()
    assert all(getattr(defaults, name) in values for name, values in space.items())
