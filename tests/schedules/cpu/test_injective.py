"""Injective: legalized elementwise / data-movement ops, scheduled, equal numpy.

Data movement (transpose, reshape, concat, take) is compared exactly; float elementwise math
(RoPE-style multiply-add, exp) to ``1e-6`` relative, the difference of one LLVM FMA contraction.
"""

import numpy as np
import pytest
import tvm
from tvm import relax, te

from bitnet_tvm.schedules.cpu.injective import Injective, InjectiveKnobs

F32 = "float32"


def _sym(name):
    return tvm.tirx.Var(name, "int64")


def _schedule(func, target, knobs=None):
    sch = Injective(knobs).apply(func, target, False)
    assert sch is not None
    return sch


@pytest.mark.parametrize("knobs", [InjectiveKnobs(), InjectiveKnobs(parallel_min=1)])
def test_transpose_reshape_concat_take(legalized, built, run, cpu_target, knobs):
    rng = np.random.default_rng(0)
    s = _sym("s")
    x = rng.standard_normal((2, 7, 3, 13)).astype(np.float32)
    func = legalized(lambda a: relax.op.permute_dims(a, [0, 2, 1, 3]), ([2, s, 3, 13], F32))
    sch = _schedule(func, cpu_target, knobs)
    script = sch.mod.script()
    assert "T.vectorized(" in script
    assert ("T.parallel(" in script) == (knobs.parallel_min == 1)
    assert np.array_equal(run(built(sch), [x], (2, 3, 7, 13)), x.transpose(0, 2, 1, 3))

    func = legalized(lambda a: relax.op.reshape(a, [2, s, 39]), ([2, s, 3, 13], F32))
    got = run(built(_schedule(func, cpu_target, knobs)), [x], (2, 7, 39))
    assert np.array_equal(got, x.reshape(2, 7, 39))

    y = rng.standard_normal((2, 5, 3, 13)).astype(np.float32)
    t = _sym("t")
    func = legalized(
        lambda a, b: relax.op.concat([a, b], axis=1), ([2, s, 3, 13], F32), ([2, t, 3, 13], F32)
    )
    got = run(built(_schedule(func, cpu_target, knobs)), [x, y], (2, 12, 3, 13))
    assert np.array_equal(got, np.concatenate([x, y], axis=1))

    table = rng.standard_normal((50, 24)).astype(np.float32)
    ids = rng.integers(0, 50, (3, 7)).astype(np.int64)
    func = legalized(lambda w, i: relax.op.take(w, i, axis=0), ([50, 24], F32), ([3, s], "int64"))
    got = run(built(_schedule(func, cpu_target, knobs)), [table, ids], (3, 7, 24))
    assert np.array_equal(got, table[ids])


def test_float_elementwise_blocks_are_inlined(built, run, cpu_target):
    rng = np.random.default_rng(1)
    s = _sym("s")
    a = te.placeholder((s, 37), name="a")
    b = te.placeholder((s, 37), name="b")
    prod = te.compute((s, 37), lambda i, j: a[i, j] * b[i, j], name="prod")
    expb = te.compute((s, 37), lambda i, j: te.exp(b[i, j]), name="expb")
    out = te.compute((s, 37), lambda i, j: prod[i, j] + expb[i, j], name="out")
    sch = _schedule(te.create_prim_func([a, b, out]), cpu_target)
    assert "T.vectorized(" in sch.mod.script()
    x, c = (rng.standard_normal((9, 37)).astype(np.float32) for _ in range(2))
    got = run(built(sch), [x, c], (9, 37))
    np.testing.assert_allclose(got, x * c + np.exp(c), rtol=1e-6, atol=1e-6)


def test_declines_reductions_scheduled_and_foreign_targets(legalized, cpu_target, foreign):
    rule = Injective()
    reduction = legalized(lambda a: relax.op.sum(a, axis=1), ([4, 8], F32))
    assert rule.apply(reduction, cpu_target, False) is None
    assert rule.apply(foreign.with_attr("tirx.is_scheduled", True), cpu_target, False) is None
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    assert rule.apply(foreign, cuda, False) is None
    assert rule.apply(foreign, cpu_target, False) is not None  # a plain elementwise add


def test_knob_space_lists_the_defaults(cpu_target, foreign):
    space = Injective().knob_space(foreign, cpu_target)
    defaults = InjectiveKnobs()
    assert all(getattr(defaults, name) in values for name, values in space.items())
