"""Sparse operators are measured with sparse activations, in the runner's worker process."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.s_tir import meta_schedule as ms

from bitnet_tvm.schedules.operators import sparse_int8_matmul
from bitnet_tvm.tuning.inputs import (
    MAX_COPIES,
    SPARSE_ZEROS,
    activation_zeros,
    alloc_local,
    run_rotating,
    sparse_activations,
    sparse_work,
)
from bitnet_tvm.tuning.rpc import Measurer
from bitnet_tvm.tuning.workloads import instance_module


def test_sparse_activations_have_the_share_of_zeros_per_row():
    x = sparse_activations(5, 101, 0.5)
    assert x.dtype == np.int8 and x.shape == (5, 101) and not x.flags.writeable
    assert (x == 0).sum(axis=1).tolist() == [50] * 5  # round(50.5) = 50 (half to even)
    assert np.abs(x.astype(np.int32)).max() <= 127
    assert len({tuple(np.flatnonzero(row)) for row in x}) == 5  # zeros at different places
    np.testing.assert_array_equal(x, sparse_activations.__wrapped__(5, 101, 0.5))  # seeded
    rows, nonzeros = sparse_work(5, 101, 0.5)
    assert nonzeros == 5 * 51 and rows == int(x.any(axis=0).sum()) and 51 <= rows <= 101
    with pytest.raises(ValueError, match="zeros"):
        sparse_activations(1, 8, 1.0)


def test_only_sparse_operators_get_sparse_activations():
    assert activation_zeros("sparse_int8_matmul") == SPARSE_ZEROS == 0.5
    assert activation_zeros("ternary_int4_matmul") is None and activation_zeros(None) is None


def test_alloc_local_overwrites_only_the_activations():
    mod = instance_module(sparse_int8_matmul(64, 96), 3)
    args_info = [a.as_json() for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"])]
    (args,) = alloc_local(tvm.cpu(), args_info, 1, zeros=0.25)
    np.testing.assert_array_equal(args[0].numpy(), sparse_activations(3, 96, 0.25))
    assert [tuple(a.shape) for a in args] == [(3, 96), (3, 1), (96, 16), (64,), (3, 64)]


def test_a_sparse_measurer_runs_in_the_worker(cpu):
    """The partial alloc function travels to MetaSchedule's runner process and runs there."""
    mod = instance_module(sparse_int8_matmul(64, 96), 2)
    sch = tvm.s_tir.Schedule(mod)
    measurer = Measurer(number=1, repeat=2, min_repeat_ms=0, zeros=0.5)
    secs = measurer.measure(sch.mod, cpu, "cpu", ms.arg_info.ArgInfo.from_prim_func(mod["main"]))
    assert len(secs) == 2 and all(s > 0 for s in secs)
    cold = measurer.variant(cache_flush=True)
    assert cold.zeros == 0.5 and cold.cache_flush and cold._builder is measurer._builder


def test_cold_allocation_copies_the_arguments_past_the_cache():
    mod = instance_module(sparse_int8_matmul(64, 96), 1)
    args_info = [a.as_json() for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"])]
    one = 96 + 4 + 96 * 16 + 4 * 64 + 4 * 64  # x, scale, weights, alpha, y
    assert len(alloc_local(tvm.cpu(), args_info, 1, cold_bytes=50 * one)) == 50
    assert len(alloc_local(tvm.cpu(), args_info, 1, cold_bytes=1 << 40)) == MAX_COPIES
    assert len(alloc_local(tvm.cpu(), args_info, 3)) == 3


def test_a_cold_measurement_rotates_through_copies(cpu):
    mod = instance_module(sparse_int8_matmul(64, 96), 1)
    cold = Measurer(repeat=3, cache_flush=True, zeros=0.5)
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    secs = cold.measure(tvm.s_tir.Schedule(mod).mod, cpu, "cpu", args)
    assert len(secs) == 3 and all(0 < s < 0.1 for s in secs)  # one median per round
    assert cold.runner.f_run_evaluator is run_rotating
