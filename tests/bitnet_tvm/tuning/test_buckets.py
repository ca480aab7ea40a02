"""M buckets and run-time dispatch: one stitched PrimFunc, bit-exact for every M."""

from __future__ import annotations

import pytest
import tvm
from targets import ICELAKE as VNNI

from bitnet_tvm.schedules.dispatch import bitnet_rules
from bitnet_tvm.schedules.target import has_avx512_vnni, host_target
from bitnet_tvm.tuning.apply import bucket_dispatch
from bitnet_tvm.tuning.buckets import BUCKETS, bucket_for, get_buckets


def test_buckets_cover_every_m_once():
    for m in range(1, 300):
        assert sum(b.contains(m) for b in BUCKETS) == 1, m
    assert [bucket_for(m).name for m in (1, 5, 9, 15, 64, 65, 130)] == [
        "decode", "small", "medium", "medium", "medium", "prefill", "prefill"
    ]  # fmt: skip
    assert all(b.contains(b.tune_m) for b in BUCKETS)


def test_bad_bucket_names_and_m():
    assert get_buckets("decode, prefill") == (BUCKETS[0], BUCKETS[3])
    with pytest.raises(ValueError, match="unknown"):
        get_buckets("huge")
    with pytest.raises(ValueError, match="positive int"):
        bucket_for(0)


@pytest.mark.skipif(not has_avx512_vnni(host_target()), reason="host has no AVX-512 VNNI")
def test_vnni_dispatch_on_m_is_bit_exact(op_module, check):
    """The VNNI rule's decode and prefill tiles (structurally different functions) stitched."""
    with VNNI:
        mod = bucket_dispatch(bitnet_rules(VNNI), VNNI)(op_module)
    assert "if M <= T.int64(8)" in mod["op"].script()
    check(tvm.compile(mod, target=VNNI), "op", [1, 5, 16, 130])


def test_dispatch_on_m_is_bit_exact(op_module, cpu, check):
    with cpu:
        mod = bucket_dispatch(bitnet_rules(cpu), cpu)(op_module)
    func = mod["op"]
    assert func.attrs["tirx.is_scheduled"]
    script = func.script()
    # GEMV (decode, small) and GEMM (medium, prefill) branches: adjacent equal ones merged
    assert "if M <= T.int64(8)" in script and "T.int64(1)" in script
    assert "T.int64(64)" not in script.split("if M")[1].split(":")[0]
    executable = tvm.compile(mod, target=cpu)
    check(executable, "op", [1, 5, 16, 130])
