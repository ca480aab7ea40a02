"""The roof probes: they run, check their own results, and give plausible numbers.

Only loose bounds are asserted (the machine is shared; the probes are a lower bound): a read
bandwidth above 1 GB/s and below 10 TB/s, and a VNNI throughput of at least one ``vpdpbusd``
every 100 cycles of a 1 GHz core (the probes raise when their kernels compute a wrong result).
"""

from __future__ import annotations

import pytest

from bitnet_tvm.bench import roofline


def test_read_bandwidth_is_plausible():
    gbs = roofline.read_bandwidth(1, mib=64, repeat=2)
    assert 1 < gbs < 10_000


@pytest.mark.skipif(not roofline._has_vnni(), reason="needs AVX-512 VNNI")
def test_peak_int8_ops_is_plausible():
    ops = roofline.peak_int8_ops(1, repeat=2)
    assert 128 * 1e9 / 100 < ops < 1e15


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"threads": True}, {"mib": 8}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        roofline.read_bandwidth(**kwargs)
