"""Prefill (large M) CUDA schedule of the dense ternary matmul on INT8 tensor cores (WMMA).

Taken when the PrimFunc's ``bitnet.m_hint`` is at least ``GemmKnobs.min_m``; decode calls (no
hint, or a small one) stay on :class:`~bitnet_tvm.schedules.cuda.gemv.TernaryGemv`.  Built on
TVM 0.27's registered ``wmma_*_16x16x16_s8*`` tensor intrinsics (``nvcuda::wmma`` fragments of
16x16x16 int8 -> int32, ``mma.sync`` on sm_80 and sm_90; wgmma would need sm_90a).  INT4
activations are stored as int8, so ``act_bits = 4`` runs the same int8 MMA (sm_90 has no INT4
MMA).  Loop nest, with ``BM = 16 * warps_m * frag_m``, ``BN = 16 * warps_n * frag_n``,
``BK = 16 * k_frags``::

    pad M, N, K up to BM, BN, BK (pad_einsum: zero activations / zero weights past the edge)
    for by in blockIdx.y (M / BM), bx in blockIdx.x (N / BN):
      for ty in threadIdx.y (warps_m * warps_n):          # one warp: frag_m x frag_n fragments
        fill_fragment(acc[frag_m][frag_n], 0)
        for k0 in K / BK:
          x_sh[BM, BK] = x_q[...]                         # 32-bit loads, 0 where m >= M
          w_sh[BN, BK] = int8(((int32(w[n, k/4]) >> 2(k%4)) & 3) - 1)   # decode in int32
          for k1 in k_frags:
            load_matrix_sync(a[i], x_sh); load_matrix_sync(b[j], w_sh)  # b col-major: W^T
            mma_sync(acc[i][j], a[i], b[j], acc[i][j])
        store_matrix_sync(acc_sh, acc)                    # per warp tile, shared memory
        y[m, n] = float32(acc_sh[m, n]) * x_scale[m] * alpha[n]   if m < M, n < N

The weights are decoded once per ``(block, K step)`` into shared memory (each block reads its
``BN x BK / 4`` packed bytes from global memory), the int32 sums are exact, and the epilogue is
the reference's expression in its order, so results equal
:func:`bitnet_tvm.reference.ternary_matmul` bit for bit.

The fused gate/up runs the same loop nest over a (gate, up) pair axis (``_schedule(pairs=True)``,
:mod:`.gemm_gate_up`).  Not here yet: cp.async multi-stage pipelining (TVM 0.27's
software-pipeline pass fails on WMMA fragments), ldmatrix / mma.sync fragments in registers, and
wgmma.  Default knobs are unmeasured: no GPU has run this.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.tensor_intrin.cuda import get_wmma_intrin_group
from tvm.target import Target

from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.cuda.common import DENSE, BitnetCUDARule

__all__ = ["GemmKnobs", "TernaryGemm", "schedule_gemm"]

_FRAG = 16  # WMMA int8 fragment edge (m16n16k16)
_WARP = 32
_GLU_THREADS = 256  # threads per block of the gate/up GLU kernel


@dataclass(frozen=True)
class GemmKnobs:
    """Tunable choices of :class:`TernaryGemm`.

    Attributes
    ----------
    warps_m, warps_n : int
        Warps of a thread block along M and N (``threadIdx.y`` = their product).
    frag_m, frag_n : int
        16x16 accumulator fragments per warp along M and N.
    k_frags : int
        16-deep K fragments per shared-memory stage (``BK = 16 * k_frags``).
    min_m : int
        Smallest ``bitnet.m_hint`` this rule takes.
    """

    warps_m: int = 2
    warps_n: int = 2
    frag_m: int = 2
    frag_n: int = 2
    k_frags: int = 2
    min_m: int = 64

    def __post_init__(self) -> None:
        for name in ("warps_m", "warps_n", "frag_m", "frag_n", "k_frags", "min_m"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GemmKnobs.{name} must be a positive int, got {value!r}")
        if self.warps_m * self.warps_n * _WARP > 1024:
            raise ValueError("GemmKnobs: warps_m * warps_n must be at most 32 (1024 threads)")

    @property
    def tile(self) -> tuple[int, int, int]:
        """The block tile ``(BM, BN, BK)``."""
        return (
            _FRAG * self.warps_m * self.frag_m,
            _FRAG * self.warps_n * self.frag_n,
            _FRAG * self.k_frags,
        )


class TernaryGemm(BitnetCUDARule):
    """Prefill GEMM of ``ternary_int{4,8}_matmul`` (2-bit layout) on INT8 tensor cores."""

    ops = DENSE
    Knobs = GemmKnobs

    def accepts(self, func: tirx.PrimFunc, target: Target | None) -> bool:
        """A dense 2-bit ternary matmul for CUDA whose ``bitnet.m_hint >= min_m``."""
        if not self.matches(func, target) or str(func.attrs[attrs.LAYOUT]) != "2bit":
            return False
        m_hint = attrs.get_int(func, attrs.M_HINT)
        return m_hint is not None and m_hint >= self.knobs.min_m

    def schedule(self, sch: s_tir.Schedule, knobs: GemmKnobs) -> None:
        """Tile, stage and tensorize ``sch`` (see the module docstring)."""
        _schedule(sch, knobs, bind_threads=True)

    def knob_space(self, func: tirx.PrimFunc, target: Target) -> dict[str, tuple]:
        """Warp grid, fragments per warp and K depth; ``min_m`` is not tuned.  Tiles stay
        within 128 x 256, so the int32 output staging (``BM x (BN + 4) x 4`` bytes of shared
        memory) fits a block's 227 KB on sm_90 (163 KB on sm_80)."""
        return {
            "warps_m": (1, 2, 4),
            "warps_n": (1, 2, 4),
            "frag_m": (1, 2),
            "frag_n": (1, 2, 4),
            "k_frags": (1, 2, 4),
        }


def schedule_gemm(
    func: tirx.PrimFunc, knobs: GemmKnobs, *, bind_threads: bool = True
) -> s_tir.Schedule:
    """The GEMM schedule of a dense ternary matmul PrimFunc.

    ``bind_threads=False`` builds the same tiling, padding, staging and epilogue with the
    staging buffers in ``global`` / ``local`` scope, serial thread loops and plain int32
    multiply-adds instead of WMMA (a loop nest an LLVM CPU target can build and run): the tests
    use it to check everything but the tensor-core instructions against the reference.
    """
    sch = s_tir.Schedule(func)
    _schedule(sch, knobs, bind_threads=bind_threads)
    return sch


def _schedule(
    sch: s_tir.Schedule, knobs: GemmKnobs, *, bind_threads: bool, pairs: bool = False
) -> None:
    """Schedule a ``matmul`` block ``acc[m, n] += x[m, k] * w[n, k]`` followed by an
    ``epilogue`` block.  With ``pairs`` the block is ``acc[t, m, n] += x[m, k] * w[t, n, k]``
    (``t`` in {0, 1}: the gate/up pair of :mod:`~bitnet_tvm.schedules.cuda.gemm_gate_up`), each
    warp computes both halves of its tile, the ``pair_scale`` block is the shared -> global copy
    and the ``epilogue`` (the GLU product of the pair) is a second, elementwise kernel."""
    k_total = attrs.get_int(sch.mod["main"], attrs.K)
    shared = "shared.dyn" if bind_threads else "global"
    frag_a, frag_b, frag_c = (
        ("wmma.matrix_a", "wmma.matrix_b", "wmma.accumulator")
        if bind_threads
        else ("local", "local", "local")
    )

    def bind(loop, thread: str) -> None:
        if bind_threads:
            sch.bind(loop, thread)

    warps = knobs.warps_m * knobs.warps_n
    matmul = sch.get_sblock("matmul")
    sch.pad_einsum(matmul, [1] * pairs + list(knobs.tile))
    *pair, m, n, k = sch.get_loops(matmul)
    m, mi = sch.split(m, [None, _FRAG])
    n, ni = sch.split(n, [None, _FRAG])
    k, ki = sch.split(k, [None, _FRAG])
    sch.reorder(m, n, k, mi, ni, ki)
    outer = sch.blockize(mi)
    m0, m1, m2 = sch.split(m, [None, knobs.warps_m, knobs.frag_m])
    n0, n1, n2 = sch.split(n, [None, knobs.warps_n, knobs.frag_n])
    k0, k1 = sch.split(k, [None, knobs.k_frags])
    sch.reorder(m0, n0, m1, n1, k0, k1, m2, *pair, n2)
    bind(m0, "blockIdx.y")
    bind(n0, "blockIdx.x")
    ty = sch.fuse(m1, n1)
    bind(ty, "threadIdx.y")

    def stage(index: int, vec: int):
        """Stage operand ``index`` of the MMA in shared memory, ``vec`` bytes per thread."""
        block = sch.cache_read(outer, index, shared)
        sch.compute_at(block, k0)
        ndim = len(sch.get(block).writes[0].region)
        fused = sch.fuse(*sch.get_loops(block)[-ndim:])
        _, f_y, f_x, f_v = sch.split(fused, [None, warps, _WARP, vec])
        bind(f_x, "threadIdx.x")
        bind(f_y, "threadIdx.y")
        sch.vectorize(f_v)
        if bind_threads:  # rows 16 bytes off a 32-byte multiple: fewer bank conflicts
            sch.storage_align(block, 0, axis=-2, factor=32, offset=16)
        return block

    # 4 codes per packed byte; activations in 32-bit words when rows stay 4-byte aligned
    # (wider int8 vectors of the zero padding hit a TVM 0.27 CUDA codegen bug: make_int4 of
    # 16 chars).
    stage(0, 4 if k_total % 4 == 0 else 1)
    stage(1, 4)
    for name in ("x_q_pad", "decode", "w_tern_pad"):  # decode (and zero pads) into the staging
        block = _find(sch, name)
        if block is not None:
            sch.compute_inline(block)
    a_frag = sch.cache_read(outer, 0, frag_a)
    b_frag = sch.cache_read(outer, 1, frag_b)
    sch.compute_at(a_frag, k1)
    sch.compute_at(b_frag, k1)
    acc_shared = sch.cache_write(outer, 0, shared)
    store = sch.cache_write(outer, 0, frag_c)
    if bind_threads:
        sch.storage_align(acc_shared, 0, -2, 16, 4)
    sch.reverse_compute_at(store, ty)
    sch.reverse_compute_at(acc_shared, ty)
    _split_fragments(sch, store)
    init = sch.decompose_reduction(outer, k0)
    # unpad + rescale: the shared -> global copy
    for block in ("acc_pad", "pair_scale" if pairs else "epilogue"):
        found = _find(sch, block)
        if found is not None:
            sch.reverse_compute_inline(found)
    _, lanes = sch.split(sch.fuse(*sch.get_loops(acc_shared)[-2:]), [None, _WARP])
    bind(lanes, "threadIdx.x")
    if pairs:  # the GLU product: a second, elementwise kernel
        bx, tx = sch.split(
            sch.fuse(*sch.get_loops(sch.get_sblock("epilogue"))), [None, _GLU_THREADS]
        )
        bind(bx, "blockIdx.x")
        bind(tx, "threadIdx.x")
    if not bind_threads:
        return
    group = get_wmma_intrin_group(
        load_scope="shared.dyn",
        store_scope="shared.dyn",
        in_dtype="int8",
        out_dtype="int32",
        trans_b=True,
    )
    for frag, key in ((a_frag, "load_a"), (b_frag, "load_b")):
        inner = _split_fragments(sch, frag)
        sch.tensorize(inner, group[key])
    sch.tensorize(sch.get_loops(sch.get_child_blocks(init)[0])[-2], group["init"])
    sch.tensorize(sch.get_loops(store)[-2], group["store"])
    sch.tensorize(sch.get_loops(matmul)[-3], group["compute"])


def _split_fragments(sch: s_tir.Schedule, block):
    """Split the last two loops of ``block`` into 16x16 fragments (outer loops unrolled);
    return the first loop inside a fragment."""
    i, j = sch.get_loops(block)[-2:]
    i0, i1 = sch.split(i, [None, _FRAG])
    j0, j1 = sch.split(j, [None, _FRAG])
    sch.reorder(i0, j0, i1, j1)
    sch.unroll(i0)
    sch.unroll(j0)
    return i1


def _find(sch: s_tir.Schedule, name: str):
    """The block called ``name``, or None (pad blocks exist only where a dim was padded)."""
    try:
        return sch.get_sblock(name)
    except s_tir.ScheduleError:
        return None
