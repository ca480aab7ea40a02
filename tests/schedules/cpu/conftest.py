"""Fixtures of the CPU rule tests: thread counts, and TVM-legalized (non-bitnet) PrimFuncs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tvm
from targets import AVX2 as CPU
from tvm import relax


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Run the test on a TVM thread pool of 1, then 2 workers (restored to 2 afterwards)."""
    config = tvm.get_global_func("runtime.config_threadpool")
    config(0, request.param)
    yield request.param
    config(0, 2)


def legalize(op: Callable, *params: tuple[list, str]) -> tvm.tirx.PrimFunc:
    """The PrimFunc ``LegalizeOps`` makes for ``op(*vars)`` over ``(shape, dtype)`` params."""
    bb = relax.BlockBuilder()
    args = [relax.Var(f"p{i}", relax.TensorType(s, d)) for i, (s, d) in enumerate(params)]
    with bb.function("main", args):
        bb.emit_func_output(bb.emit(op(*args)))
    mod = relax.transform.LegalizeOps()(bb.get())
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    return func


def build(sch) -> tvm.runtime.Executable:
    """Build a schedule's PrimFunc for :data:`CPU` as ``main``."""
    func = sch.mod["main"].with_attr("global_symbol", "main")
    return tvm.compile(tvm.IRModule({"main": func}), target=CPU)


def call(ex, inputs: list[np.ndarray], out_shape, dtype="float32") -> np.ndarray:
    """Run ``main(*inputs, out)`` and return ``out``."""
    out = tvm.runtime.tensor(np.zeros(out_shape, dtype))
    ex["main"](*[tvm.runtime.tensor(a) for a in inputs], out)
    return out.numpy()


@pytest.fixture
def cpu_target() -> tvm.target.Target:
    return CPU


@pytest.fixture
def legalized():
    return legalize


@pytest.fixture
def built():
    return build


@pytest.fixture
def run():
    return call
