"""CUDA schedule of ``norm_quantize``: one thread per row, rows across blocks.

The operator is one block per row holding the whole serial computation (NumPy's pairwise float
sums unrolled at build time, the TopK bisection, the quantizer; see
:mod:`bitnet_tvm.schedules.operators.norm_quantize`), which makes the codes and the scale
bit-identical to :mod:`bitnet_tvm.reference` provided nothing reassociates or contracts the
float arithmetic: compile with IEEE division/square root and without FMA contraction
(:mod:`bitnet_tvm.cuda_aot` does).  This first CUDA schedule keeps that per-row program and
runs ``rows`` rows per thread block, one per thread::

    for bx in blockIdx.x, tx in threadIdx.x:     # row m = bx * rows + tx, if m < M
      <the operator's per-row program, scratch buffers in registers / local memory>

That is correct for any M but leaves a decode step (M = 1) on one thread.  The parallel form
(warp or block per row: the 8-lane pairwise leaves and the order-free max/count passes of the
TopK bisection spread over lanes, the pairwise tree combined in NumPy's order through shared
memory) needs a reformulated operator and is the next step.

The row's scratch arrays (pairwise lanes and leaf sums, scale, TopK bounds) are allocated
inside the row block, in global scope as written; CUDA kernels cannot allocate global memory
and ``set_scope`` only reaches buffers a block writes to its parent, so :func:`local_scratch`
re-declares them ``local`` (thread registers / local memory) through a TVMScript round trip
(the printed form of these PrimFuncs parses back to a structurally equal function).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tvm.script
from tvm import s_tir, tirx
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cuda.common import BitnetCUDARule

__all__ = ["NormQuantize", "NormQuantizeKnobs", "local_scratch"]

_ALLOC = re.compile(r"^(\s*\w+ = T\.sblock_alloc_buffer\((?:(?!scope=).)*)\)$", re.MULTILINE)


def local_scratch(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with every block-allocated buffer that has no scope moved to ``local``."""
    source, count = _ALLOC.subn(r'\1, scope="local")', func.script())
    if count == 0:
        return func
    return tvm.script.from_source(source)


@dataclass(frozen=True)
class NormQuantizeKnobs:
    """Tunable choices of :class:`NormQuantize`.

    Attributes
    ----------
    rows : int
        Rows (threads) per thread block.
    """

    rows: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows <= 0:
            raise ValueError(f"NormQuantizeKnobs.rows must be a positive int, got {self.rows!r}")


class NormQuantize(BitnetCUDARule):
    """``norm_quantize`` on CUDA: a thread per row."""

    ops = (attrs.OpName.NORM_QUANTIZE,)
    Knobs = NormQuantizeKnobs

    def prepare(self, func: tirx.PrimFunc, knobs: NormQuantizeKnobs) -> tirx.PrimFunc:
        """``func`` with its per-row scratch buffers in ``local`` scope."""
        return local_scratch(func)

    def schedule(self, sch: s_tir.Schedule, knobs: NormQuantizeKnobs) -> None:
        """Rows over ``blockIdx.x`` x ``threadIdx.x``."""
        (m,) = sch.get_loops(sch.get_sblock("norm_quantize"))
        bx, tx = sch.split(m, [None, knobs.rows])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Rows (threads) per block."""
        return {"rows": (16, 32, 64, 128)}
