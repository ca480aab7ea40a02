"""Float GEMV/GEMM on CPU: the high-precision LM head and the attention batched matmuls.

These are the ``matmul`` PrimFuncs TVM's ``LegalizeOps`` makes from ``R.matmul`` (not our
operators: the rule matches structure, not the ``bitnet.op`` attribute).  It takes one block

    C[S..., I..., J...] += A[S..., I..., K...] * B[S..., K..., J...]      (float, "NN")

whose axes dlight's GEMM analysis (``detect_iter_traits``) classifies as batch ``S`` (in A, B
and C), rows ``I`` (A and C), columns ``J`` (B and C) and reduction ``K`` (A and B), with J the
innermost index of B and C: the layout of the LM head after constant folding (weight
``[K, vocab]``), of ``q @ k^T`` (k transposed in the graph) and of ``p @ v``.  Any extent may be
symbolic (batch, sequence, past).

Loop nest (one register tile of ``rows x cols`` accumulators per step)::

    parallel for s, j_outer:                 # batch x column tiles (when large enough)
      for i_outer:                           # row tiles of `rows` (tail predicated)
        acc[rows, cols] = 0                  # cache_write "local": rows*cols/16 zmm registers
        for k:
          for i_inner (unrolled): acc[i_inner, :] += A[i, k] * B[k, j_outer*cols : +cols]
        C[...] = acc

A column tile of B (``K x cols``) is read once per row tile: for decode (one row) the weight
streams once, ``cols`` contiguous floats per K row; for prefill it stays in L2 across row
tiles and each B vector load feeds ``rows`` FMAs (``rows`` = 1 by default: see the knobs).
The ``cols`` lanes are one vector loop; when J is static and not a multiple of ``cols`` the
tile shrinks to a divisor of J, when J is symbolic the tail is predicated.  The outer loop is
parallel only for large static work (``parallel_min``).  Returns None for anything else
(transposed B, integer types, epilogues, more than one block): dlight's rules or others then
take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from tvm import ir, s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.gpu.matmul import IterKind, detect_iter_traits
from tvm.target import Target

from bitnet_tvm.schedules.rule import BitnetRule, split_factor

__all__ = ["FloatMatmul", "MatmulFpKnobs", "matmul_axes"]


@dataclass(frozen=True)
class MatmulFpKnobs:
    """Tunable choices of :class:`FloatMatmul`.

    Attributes
    ----------
    rows : int
        Rows (I) per register tile; the tail is predicated.  The default is 1, for decode: with
        4 rows, one-token GEMVs (LM head, attention) ran 2x slower (three predicated-off row
        updates per K step), while 4 rows made M = 64 GEMMs ~1.6x faster (32000 x 2560 LM
        head, noisy machine).  The tuner can pick rows per token-count bucket.
    cols : int
        Columns (J) per register tile, the vector loop (64 float32 = four zmm registers).
    unroll : int
        ``pragma_auto_unroll_max_step`` on the K loop (0: none).
    parallel_min : int
        Static multiply-adds (symbolic extents counted as 1) from which the outer loop runs in
        parallel: a thread-pool launch costs more than a small attention matmul of one token
        (the tiny model's decode step was ~15% slower with every matmul parallel).
    """

    rows: int = 1
    cols: int = 64
    unroll: int = 0
    parallel_min: int = 1 << 16


_FLOATS = ("float32", "float16", "bfloat16")


def matmul_axes(func: tirx.PrimFunc) -> dict[IterKind, list[int]] | None:
    """Positions of the S/I/J/K block iterators of an "NN" float matmul PrimFunc, or None.

    Parameters
    ----------
    func : tirx.PrimFunc
        A PrimFunc with a single ``C += A * B`` block as TVM's ``LegalizeOps`` writes it.

    Returns
    -------
    dict or None
        ``{IterKind.kIter_S: [...], kIter_I: [...], kIter_J: [...], kIter_K: [...]}`` (iterator
        positions in block order; extent-1 iterators are left out), or None when ``func`` is not
        such a matmul.
    """
    block = _single_block(func)
    if block is None:
        return None
    if len(block.reads) != 2 or len(block.writes) != 1 or block.init is None:
        return None
    if any(str(r.source.dtype) not in _FLOATS for r in (*block.reads, *block.writes)):
        return None
    if not _is_multiply_add(block):
        return None
    traits = detect_iter_traits(block)
    if traits is None:
        return None
    kinds = [trait.kind for trait in traits[3]]
    positions: dict[IterKind, list[int]] = {k: [] for k in IterKind if k != IterKind.kIter_T}
    for index, kind in enumerate(kinds):
        if kind != IterKind.kIter_T:
            positions[kind].append(index)
    # "NN": the innermost index of B and of C is the innermost J iterator, of A a K iterator;
    # C is indexed by the innermost I iterator (the row tile).
    ivars = [iv.var for iv in block.iter_vars]
    j_inner = ivars[positions[IterKind.kIter_J][-1]]
    i_inner = ivars[positions[IterKind.kIter_I][-1]]
    k_vars = {ivars[p] for p in positions[IterKind.kIter_K]}
    a, b = block.reads
    c_index = [r.min for r in block.writes[0].region]
    if not (
        _last_index_var(b) is not None
        and _last_index_var(b).same_as(j_inner)
        and c_index[-1].same_as(j_inner)
        and any(index.same_as(i_inner) for index in c_index)
        and _last_index_var(a) in k_vars
    ):
        return None
    return positions


def _single_block(func: tirx.PrimFunc) -> s_tir.SBlock | None:
    if not isinstance(func, tirx.PrimFunc):
        return None
    try:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
    except Exception:  # an unanalysable function is simply not ours
        return None
    if infos is None or len(infos) != 1:
        return None
    return sch.get(infos[0].block_rv)


def _last_index_var(region) -> tirx.Var | None:
    index = region.region[-1].min
    return index if isinstance(index, tirx.Var) else None


def _is_multiply_add(block: s_tir.SBlock) -> bool:
    """``C[...] = C[...] + A[...] * B[...]`` (either operand order)."""
    store = block.body
    if not isinstance(store, tirx.BufferStore) or not isinstance(store.value, tirx.Add):
        return False
    acc, prod = store.value.a, store.value.b
    if isinstance(prod, ir.TensorLoad):
        acc, prod = prod, acc
    return (
        isinstance(acc, ir.TensorLoad)
        and acc.source.same_as(store.buffer)
        and isinstance(prod, tirx.Mul)
        and isinstance(prod.a, ir.TensorLoad)
        and isinstance(prod.b, ir.TensorLoad)
    )


class FloatMatmul(BitnetRule):
    """Register-tiled float GEMV/GEMM for legalized ``matmul`` PrimFuncs on CPU."""

    target_kind = "llvm"
    Knobs = MatmulFpKnobs

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """A not yet scheduled "NN" float matmul, for an llvm target."""
        return (
            isinstance(func, tirx.PrimFunc)
            and target is not None
            and target.kind.name == self.target_kind
            and "tirx.is_scheduled" not in func.attrs
            and matmul_axes(func) is not None
        )

    def schedule(self, sch: s_tir.Schedule, knobs: MatmulFpKnobs) -> None:
        """Tile, register-block and parallelize the matmul block of ``sch``.

        Only the innermost I and J loops are tiled (other I/J loops stay whole, outside), so
        the accumulator tile is a rectangle of C and ``cache_write`` can keep it local.
        """
        positions = matmul_axes(sch.mod["main"])
        block = normalize_prim_func(sch)[0].block_rv
        loops = sch.get_loops(block)
        extents = [sch.get(loop).extent for loop in loops]
        stmt = sch.get(block)
        i_var = stmt.iter_vars[positions[IterKind.kIter_I][-1]].var
        i_pos = [r.min.same_as(i_var) for r in stmt.writes[0].region].index(True)

        def at(kind: IterKind) -> list:
            return [loops[p] for p in positions[kind]]

        *j_rest, j = at(IterKind.kIter_J)
        *i_rest, i = at(IterKind.kIter_I)
        k = sch.fuse(*at(IterKind.kIter_K))
        j_extent = sch.get(j).extent
        cols = knobs.cols
        if isinstance(j_extent, tirx.IntImm):
            cols = split_factor(int(j_extent), cols)
        j_outer, j_inner = sch.split(j, [None, cols])
        i_outer, i_inner = sch.split(i, [None, knobs.rows])
        outer = [*at(IterKind.kIter_S), *j_rest, j_outer]
        sch.reorder(*outer, *i_rest, i_outer, k, i_inner, j_inner)
        static = prod(int(e) for e in extents if isinstance(e, tirx.IntImm))
        if static >= knobs.parallel_min:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else j_outer)
        acc = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(acc, i_outer)
        # The row tail is predicated, which keeps CompactBufferAllocation from bounding the
        # tile by `rows`: index the tile modulo its shape instead (a rows x cols buffer).
        rank = len(stmt.writes[0].region)
        rows, tile = knobs.rows, cols
        sch.transform_layout(
            block,
            ("write", 0),
            tirx.IndexMap.from_func(lambda *idx: [idx[i_pos] % rows, idx[-1] % tile], ndim=rank),
            assume_injective_transform=True,
        )
        sch.vectorize(sch.get_loops(acc)[-1])
        sch.unroll(i_inner)
        sch.vectorize(j_inner)  # before decompose_reduction: the update block alone is not
        init = sch.decompose_reduction(block, k)  # "compact dataflow" for vectorize
        sch.vectorize(sch.get_loops(init)[-1])
        if knobs.unroll:
            sch.annotate(k, "pragma_auto_unroll_max_step", knobs.unroll)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Register tile shapes and K unrolling."""
        return {
            "rows": (1, 2, 4, 6, 8),
            "cols": (16, 32, 64, 128),
            "unroll": (0, 4, 16),
            "parallel_min": (1, 1 << 16, 1 << 20),
        }
