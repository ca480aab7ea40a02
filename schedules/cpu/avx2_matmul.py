"""AVX2 decode kernel of the dense ternary matmul (``2bit`` layout, M up to a few rows).

Without AVX-512 VNNI there is no ``vpdpbusd``, but its 4-byte dot product takes two AVX2
instructions: ``vpmaddubsw`` (unsigned codes times signed activations, byte pairs summed to int16)
and ``vpmaddwd`` by ones (int16 pairs to int32).  ``vpmaddubsw`` saturates, but a pair of ternary
codes ``c = W + 1 <= 2`` by int8 activations is at most ``2 * 2 * 128 = 512`` in magnitude, so
every step is exact.

The kernel is :func:`~bitnet_tvm.schedules.cpu.vnni_matmul.vnni_matmul`'s formulation (lane-ordered
``x_pack`` once per call, ``sum(c x) - sum(x)``, the ``K % 64`` tail added directly, the
reference's epilogue order, so results equal :func:`bitnet_tvm.reference.ternary_matmul` bit for
bit) and its schedule, tensorized with
:data:`~bitnet_tvm.schedules.cpu.intrin_x86.AVX2_TERNARY_2BIT_INTRIN`: the same description (16
int32 sums per 64 codes) on two ymm halves.  Each 16-byte weight piece is broadcast to both
128-bit halves of a ymm register, shifted per 32-bit lane (``vpsrlvd``) and masked: AVX2 has no
byte permute or byte shift.  With 16 ymm registers the register tile is a few weight rows (two
accumulators each), not VNNI's 16.

Only decode calls (``bitnet.m_hint`` absent or at most ``max_decode_m``) are taken; prefill and
targets without AVX2 keep the generic :class:`~bitnet_tvm.schedules.cpu.gemv.TernaryGemv` /
:class:`~bitnet_tvm.schedules.cpu.gemm.TernaryGemm`.  In ``cpu_rules()`` this rule follows
:class:`~bitnet_tvm.schedules.cpu.vnni_matmul.VnniMatmul`, so VNNI targets are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cpu.common import BitnetCPURule
from bitnet_tvm.schedules.cpu.intrin_x86 import AVX2_TERNARY_2BIT_INTRIN
from bitnet_tvm.schedules.cpu.vnni_matmul import VnniTile, schedule_vnni_tiles, vnni_matmul
from bitnet_tvm.schedules.layouts import WeightLayout
from bitnet_tvm.schedules.target import has_llvm_features

__all__ = ["Avx2Knobs", "Avx2Matmul"]

_BLOCK = 64  # codes per application of the intrinsic (16 packed bytes)
_DENSE = (attrs.OpName.TERNARY_INT4_MATMUL, attrs.OpName.TERNARY_INT8_MATMUL)


@dataclass(frozen=True)
class Avx2Knobs:
    """Tunable choices of :class:`Avx2Matmul` (defaults: best measured on Zen 4, AVX2 target).

    Rows 2/4/6/8 gave 580/351/330/462 µs for 13824x2560 and 277/151/136/144 µs for 2560x6912
    (M = 1, 2 threads, cold weights; 6 means 5 rows of N = 2560; 8 rows spill the 16 ymm
    registers; a noisy shared machine).

    Attributes
    ----------
    rows : int
        Weight rows per register tile (two int32x8 accumulators each); the largest divisor of N
        up to this is used.
    max_decode_m : int
        Largest ``bitnet.m_hint`` the rule takes (larger ones are prefill: declined).
    """

    rows: int = 6
    max_decode_m: int = 8

    def __post_init__(self) -> None:
        VnniTile(self.rows, 1)  # validates rows
        if (
            isinstance(self.max_decode_m, bool)
            or not isinstance(self.max_decode_m, int)
            or self.max_decode_m < 0
        ):
            raise ValueError(
                f"Avx2Knobs.max_decode_m must be an int >= 0, got {self.max_decode_m!r}"
            )


class Avx2Matmul(BitnetCPURule):
    """``ternary_int{4,8}_matmul`` decode calls on AVX2 CPUs, ``2bit`` layout, ``K >= 64``.

    Declines (returns None) for targets without AVX2, other layouts, ``K < 64``, prefill calls
    (``bitnet.m_hint > max_decode_m``) and every other PrimFunc.  INT4 and INT8 activations run
    the same kernel (both are int8 codes).
    """

    ops = _DENSE
    Knobs = Avx2Knobs

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """A dense ``2bit`` ternary decode matmul with ``K >= 64``, for an AVX2 target."""
        if not self.matches(func, target) or not has_llvm_features(target, "avx2"):
            return False
        if str(func.attrs[attrs.LAYOUT]) != WeightLayout.TWO_BIT:
            return False
        m_hint = attrs.get_int(func, attrs.M_HINT)
        if m_hint is not None and m_hint > self.knobs.max_decode_m:
            return False
        return attrs.get_int(func, attrs.K) >= _BLOCK

    def prepare(self, func: tirx.PrimFunc, knobs: Avx2Knobs) -> tirx.PrimFunc:
        """The lane-ordered formulation of ``func`` (one activation row per tile)."""
        n, k = attrs.get_int(func, attrs.N), attrs.get_int(func, attrs.K)
        act_bits = attrs.get_int(func, attrs.ACT_BITS)
        return vnni_matmul(n, k, 1, WeightLayout.TWO_BIT, act_bits).with_attrs(dict(func.attrs))

    def schedule(self, sch: s_tir.Schedule, knobs: Avx2Knobs) -> None:
        """Tile, tensorize with the AVX2 intrinsic and parallelize the formulation in ``sch``."""
        schedule_vnni_tiles(sch, VnniTile(rows=knobs.rows, mt=1), AVX2_TERNARY_2BIT_INTRIN)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Weight rows per register tile."""
        return {"rows": (6, 4, 8, 2), "max_decode_m": (8,)}
