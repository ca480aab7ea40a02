"""Elementwise / injective ops on CPU: reshape, transpose, concat, slices, RoPE, take, masks.

Takes a PrimFunc whose blocks are all spatial (``LegalizeOps`` output of an injective Relax op;
producers are inlined into the last block first) and gives it the loop nest::

    parallel-or-serial for outer in fused(all loops but the innermost, inner_outer):
      vectorized for lane in range(lanes):          # lanes divides the static innermost extent
        out[...] = f(in[...])

``lanes`` is the largest divisor of the innermost extent that fits ``vector_bytes`` (a short
extent with no good divisor, e.g. 37, is one odd-width vector, which LLVM splits); TVM's
vectorizer then turns the (often ``//``/``%``-heavy) reshape and transpose indices into ramps
or gathers once.  A symbolic innermost extent is left a serial loop: TVM scalarizes a
vectorized loop with a predicated tail (seen in its assembly: 16 scalar moves), while LLVM's
loop vectorizer turns the plain contiguous loop into zmm code by itself.

The outer loop runs in parallel only when the static part of the iteration space (symbolic
extents counted as 1: one token, decode) has at least ``parallel_min`` elements: a thread-pool
launch costs microseconds, more than a one-token elementwise op.  Declines reductions, and
functions without loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.target import Target

from bitnet_tvm.schedules.rule import BitnetRule, split_factor

__all__ = ["Injective", "InjectiveKnobs"]


@dataclass(frozen=True)
class InjectiveKnobs:
    """Tunable choices of :class:`Injective`.

    Attributes
    ----------
    vector_bytes : int
        Widest vector in bytes (64: one AVX-512 register; LLVM splits wider ones).
    parallel_min : int
        Static elements from which the outer loop runs in parallel.
    """

    vector_bytes: int = 64
    parallel_min: int = 1 << 16


class Injective(BitnetRule):
    """Parallel outer loop + vectorized inner loop for injective PrimFuncs on CPU."""

    target_kind = "llvm"
    Knobs = InjectiveKnobs

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """An unscheduled PrimFunc of spatial blocks with at least one loop, for llvm."""
        if not (
            isinstance(func, tirx.PrimFunc)
            and target is not None
            and target.kind.name == self.target_kind
            and "tirx.is_scheduled" not in func.attrs
        ):
            return False
        return self._main_block(s_tir.Schedule(func)) is not None

    @staticmethod
    def _main_block(sch: s_tir.Schedule):
        """Inline every block into the last one; that block, or None if not injective."""
        try:
            infos = normalize_prim_func(sch)
        except Exception:  # an unanalysable function is simply not ours
            return None
        if not infos or not all(info.is_injective() for info in infos):
            return None
        for info in infos[:-1]:
            try:
                sch.compute_inline(info.block_rv)
            except s_tir.ScheduleError:
                return None
        block = infos[-1].block_rv
        return block if sch.get_loops(block) else None

    def schedule(self, sch: s_tir.Schedule, knobs: InjectiveKnobs) -> None:
        """Vectorize the innermost loop, fuse the rest, parallelize when large."""
        block = self._main_block(sch)
        loops = sch.get_loops(block)
        extents = [sch.get(loop).extent for loop in loops]
        static = prod(int(e) for e in extents if isinstance(e, tirx.IntImm))
        *outer, inner = loops
        if isinstance(extents[-1], tirx.IntImm):
            bits = _dtype_bits(sch, block)
            most = max(1, knobs.vector_bytes * 8 // bits)
            lanes = split_factor(int(extents[-1]), most)
            if lanes < most // 4 and int(extents[-1]) <= 4 * most:
                lanes = int(extents[-1])  # e.g. 37: one odd-width vector beats 37 scalars
            if lanes > 1:
                if lanes < int(extents[-1]):
                    rest, inner = sch.split(inner, [None, lanes])
                    outer.append(rest)
                sch.vectorize(inner)
        if outer and static >= knobs.parallel_min:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Vector widths and the parallel threshold."""
        return {"vector_bytes": (16, 32, 64, 128), "parallel_min": (1 << 12, 1 << 16, 1 << 20)}


def _dtype_bits(sch: s_tir.Schedule, block) -> int:
    """Bits of the element type the block writes (bool counts as 8)."""
    return max(8, sch.get(block).writes[0].source.dtype.bits)
