"""Host target detection from /proc/cpuinfo text."""

import pytest

from bitnet_tvm.schedules.target import host_mcpu, host_target

ZEN4 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_2 popcnt avx2 fma bmi2 avx512f avx512bw "
ZEN4 += "avx512vl avx512dq avx512_vnni avx512_bf16 avx512vbmi\n"


@pytest.mark.parametrize(
    "text, mcpu",
    [
        (ZEN4, "znver4"),
        (ZEN4.replace("AuthenticAMD", "GenuineIntel"), "sapphirerapids"),
        ("vendor_id : GenuineIntel\nflags : sse4_2 popcnt avx2 fma bmi2\n", "x86-64-v3"),
        ("flags : sse4_2 popcnt\n", "x86-64-v2"),
        ("processor : 0\nFeatures : fp asimd\n", "generic"),
        ("", "generic"),
    ],
)
def test_host_mcpu(text, mcpu):
    assert host_mcpu(text) == mcpu


def test_host_target():
    target = host_target(3)
    assert target.kind.name == "llvm"
    assert int(target.attrs["num-cores"]) == 3
    with pytest.raises(ValueError, match="num_cores"):
        host_target(0)
