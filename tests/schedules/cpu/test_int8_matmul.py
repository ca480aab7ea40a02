"""int8_matmul (the INT8 LM head): operator + CPU rule equal reference.int8_matmul exactly."""

import numpy as np
import pytest
import tvm

from bitnet_tvm import reference
from bitnet_tvm.schedules.cpu import Int8Matmul, Int8MatmulKnobs, cpu_rules
from bitnet_tvm.schedules.operators.int8_matmul import int8_matmul


@pytest.mark.parametrize(
    "n, k, knobs",
    [
        (13, 67, Int8MatmulKnobs()),  # odd K: serial dot product, N prime
        (70, 96, Int8MatmulKnobs()),  # lanes reduced to 32, rows to 14
        (256, 320, Int8MatmulKnobs(lanes=16, rows_per_task=4, unroll=4)),
    ],
)
def test_scheduled_int8_matmul_is_exact(threads, cpu_target, built, n, k, knobs):
    rng = np.random.default_rng(n + k)
    sch = Int8Matmul(knobs).apply(int8_matmul(n, k), cpu_target, False)
    ex = built(sch)
    w = rng.standard_normal((n, k)).astype(np.float32)
    q_w, w_scale = reference.quantize_weights_int8_rows(w)
    for m in (1, 3, 17):
        x_q, x_s = reference.quantize_act_int8(rng.standard_normal((m, k)).astype(np.float32))
        out = tvm.runtime.tensor(np.zeros((m, n), np.float32))
        ex["main"](*[tvm.runtime.tensor(a) for a in (x_q, x_s, q_w, w_scale)], out)
        assert np.array_equal(out.numpy(), reference.int8_matmul(x_q, x_s, q_w, w_scale))


def test_rule_is_in_the_cpu_list_and_declines_others(cpu_target, foreign):
    assert any(isinstance(rule, Int8Matmul) for rule in cpu_rules())
    func = int8_matmul(16, 64)
    assert Int8Matmul().apply(foreign, cpu_target, False) is None
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    assert Int8Matmul().apply(func, cuda, False) is None
    others = [r for r in cpu_rules() if not isinstance(r, Int8Matmul)]
    assert all(rule.apply(func, cpu_target, False) is None for rule in others)


def test_operator_and_reference_checks():
    with pytest.raises(ValueError, match="n must be a positive int"):
        int8_matmul(0, 8)
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]], np.float32)
    q, scale = reference.quantize_weights_int8_rows(w)
    assert q.tolist() == [[64, -127, 32], [0, 0, 0]]
    np.testing.assert_array_equal(scale, np.float32([1.0 / 127, 1e-5 / 127]))
    with pytest.raises(ValueError, match="w_scale must have shape"):
        reference.int8_matmul(q[:, :2].copy(), np.ones((2, 1), np.float32), q[:, :2], scale[:1])
