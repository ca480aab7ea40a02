"""Packed KV cache: append new keys/values (quantize + pack) and attention that reads it.

The cache layout is :func:`bitnet_tvm.reference.quantize_kv_cache`'s, per layer and for K and V
each: ``codes`` uint8 ``[B, Hkv, S, W]`` (:func:`~bitnet_tvm.reference.pack_kv` rows,
``W = kv_packed_width(bits, D)``), ``scale`` float32 ``[B, Hkv, S]``, and, when the BOS token
(position 0) keeps more bits than the rest (``bos_bits``), a ``bos`` slot uint8
``[B, Hkv, kv_packed_width(bos_bits, D)]`` holding position 0's codes (its row of ``codes``
holds the codes of zeros, unused).

``kv_append(...)`` -- ``(x, past_codes, past_scale[, past_bos]) -> (codes, scale[, bos])``:
quantizes the ``T`` new rows of ``x: float32[B, Hkv, T, D]`` (positions ``P .. P + T - 1``,
``P`` the past length) exactly as :func:`bitnet_tvm.reference.quantize_kv` (``d = max|x| +
eps``, ``q = clip(nearbyint(x * (L / d)), -L, L)``, scale ``d / L``, float32 step for step) and
writes the past rows followed by the new ones.  Blocks: ``kv_absmax``, ``kv_code`` (unsigned
codes, int32), ``kv_scale``, ``kv_codes`` and ``kv_bos``.

``kv_attention(...)`` -- ``(q, k_codes, k_scale[, k_bos], v_codes, v_scale[, v_bos]) -> o``:
``softmax(q k^T * scale, causal) @ v`` for ``q: float32[B, Hq, T, D]`` over the ``S`` cached
positions, query ``t`` seeing keys ``s <= S - T + t`` (prefill: ``S = T``; decode: ``T = 1``),
query head ``h`` reading KV head ``h // (Hq / Hkv)`` (GQA).  K and V are dequantized in the
kernel (``float32(code - 2**(bits-1)) * scale``).  Blocks: ``k_deq``, ``v_deq``, ``score``
(reduction over D), ``masked``, ``row_max``, ``row_exp``, ``row_sum``, ``prob``, ``out``
(reduction over S): the order of the reference's float operations.

B, T, P and S are symbolic int64 (one compiled function for prefill and decode, any batch).
"""

from __future__ import annotations

from typing import Any

from tvm import te, tirx

from bitnet_tvm.reference import EPS, _kv_levels, kv_packed_width
from bitnet_tvm.schedules import attrs
from bitnet_tvm.schedules.operators.common import check_dim

__all__ = ["check_kv_bits", "kv_append", "kv_attention", "unpack_code"]

_I64 = "int64"


def _i64(value: int) -> tirx.IntImm:
    return tirx.IntImm(_I64, value)


def _f32(value: float) -> tirx.FloatImm:
    return tirx.FloatImm("float32", value)


def check_kv_bits(bits: object, bos_bits: object) -> tuple[int, int | None]:
    """``(bits, bos_bits)`` validated; ``bos_bits`` is None unless it differs from ``bits``."""
    if isinstance(bits, bool) or bits not in (3, 4):
        raise ValueError(f"bits must be 3 or 4, got {bits!r}")
    if bos_bits is not None and (isinstance(bos_bits, bool) or bos_bits not in (3, 4)):
        raise ValueError(f"bos_bits must be 3, 4 or None, got {bos_bits!r}")
    return int(bits), (None if bos_bits in (None, bits) else int(bos_bits))


def unpack_code(codes: te.Tensor, bits: int, index: tuple, d: tirx.PrimExpr) -> tirx.PrimExpr:
    """Unsigned int32 code of element ``d`` of the packed row ``codes[index]`` (pack_kv layout)."""

    def byte(w):
        return tirx.Cast("int32", codes[(*index, w)])

    if bits == 4:
        shift = tirx.Cast("int32", d % _i64(2)) * 4
        return tirx.bitwise_and(tirx.shift_right(byte(d // _i64(2)), shift), 15)
    base = (d // _i64(8)) * _i64(3)
    word = byte(base) | (byte(base + _i64(1)) << 8) | (byte(base + _i64(2)) << 16)
    shift = tirx.Cast("int32", d % _i64(8)) * 3
    return tirx.bitwise_and(tirx.shift_right(word, shift), 7)


def _pack_byte(code, bits: int, head_dim: int, w: tirx.PrimExpr) -> tirx.PrimExpr:
    """Byte ``w`` of a pack_kv row whose unsigned int32 codes are ``code(d)`` (padding: q = 0)."""
    pad = 1 << (bits - 1)

    def c(d):
        return tirx.Select(d < _i64(head_dim), code(tirx.min(d, _i64(head_dim - 1))), pad)

    if bits == 4:
        return tirx.Cast("uint8", c(w * _i64(2)) | (c(w * _i64(2) + _i64(1)) << 4))
    first = (w // _i64(3)) * _i64(8)
    word = c(first)
    for i in range(1, 8):
        word = word | (c(first + _i64(i)) << (3 * i))
    shift = tirx.Cast("int32", w % _i64(3)) * 8
    return tirx.Cast("uint8", tirx.bitwise_and(tirx.shift_right(word, shift), 255))


def _kv_attrs(op: attrs.OpName, heads: int, head_dim: int, bits: int, bos: int | None) -> dict:
    out: dict[str, Any] = {
        attrs.OP: op.value,
        attrs.KV_BITS: bits,
        attrs.KV_HEADS: heads,
        attrs.HEAD_DIM: head_dim,
        # One schedule serves every T (no per-M buckets: T, S, B are all symbolic here).
        attrs.M_HINT: 1,
        "tirx.noalias": True,
    }
    if bos is not None:
        out[attrs.KV_BOS_BITS] = bos
    return out


def kv_append(
    kv_heads: int, head_dim: int, *, bits: int, bos_bits: int | None = None, eps: float = EPS
) -> tirx.PrimFunc:
    """Build the quantize-and-append PrimFunc of one K or V cache (see the module docstring).

    Returns
    -------
    PrimFunc
        ``(x: float32[B, H, T, D], past_codes: uint8[B, H, P, W], past_scale: float32[B, H, P]
        [, past_bos: uint8[B, H, Wb]], codes: uint8[B, H, P + T, W], scale: float32[B, H, P + T]
        [, bos: uint8[B, H, Wb]])``.
    """
    heads, dim = check_dim(kv_heads, "kv_heads"), check_dim(head_dim, "head_dim")
    bits, bos = check_kv_bits(bits, bos_bits)
    width = kv_packed_width(bits, dim)
    b_, t_, p_ = (tirx.Var(n, _I64) for n in ("B", "T", "P"))
    H, D = _i64(heads), _i64(dim)
    x = te.placeholder((b_, H, t_, D), "float32", name="x")
    past_codes = te.placeholder((b_, H, p_, _i64(width)), "uint8", name="past_codes")
    past_scale = te.placeholder((b_, H, p_), "float32", name="past_scale")
    rd = te.reduce_axis((_i64(0), D), name="rd")
    amax = te.compute(
        (b_, H, t_), lambda b, h, t: te.max(tirx.abs(x[b, h, t, rd]), axis=rd), name="kv_absmax"
    )

    def is_bos(t):
        return tirx.all(p_ + t == _i64(0)) if bos is not None else tirx.const(False, "bool")

    def levels(t):
        low = _f32(float(_kv_levels(bits)))
        return low if bos is None else tirx.Select(is_bos(t), _f32(float(_kv_levels(bos))), low)

    def offset(t):
        low = 1 << (bits - 1)
        return tirx.const(low, "int32") if bos is None else tirx.Select(is_bos(t), 8, low)

    def guarded(b, h, t):
        return amax[b, h, t] + _f32(float(eps))

    def code(b, h, t, d):
        level = levels(t)
        y = tirx.nearbyint(x[b, h, t, d] * (level / guarded(b, h, t)))
        q = tirx.min(tirx.max(y, -level), level)
        return tirx.Cast("int32", q) + offset(t)

    ucode = te.compute((b_, H, t_, D), code, name="kv_code")
    scale = te.compute(
        (b_, H, p_ + t_),
        lambda b, h, s: tirx.if_then_else(
            s < p_, past_scale[b, h, s], guarded(b, h, s - p_) / levels(s - p_)
        ),
        name="kv_scale",
    )

    def new_code(b, h, t, d):
        if bos is None:
            return ucode[b, h, t, d]
        return tirx.Select(is_bos(t), tirx.const(1 << (bits - 1), "int32"), ucode[b, h, t, d])

    codes = te.compute(
        (b_, H, p_ + t_, _i64(width)),
        lambda b, h, s, w: tirx.if_then_else(
            s < p_,
            past_codes[b, h, s, w],
            _pack_byte(lambda d: new_code(b, h, s - p_, d), bits, dim, w),
        ),
        name="kv_codes",
    )
    args = [x, past_codes, past_scale]
    outs = [codes, scale]
    if bos is not None:
        bos_width = _i64(kv_packed_width(bos, dim))
        past_bos = te.placeholder((b_, H, bos_width), "uint8", name="past_bos")
        bos_out = te.compute(
            (b_, H, bos_width),
            lambda b, h, w: tirx.if_then_else(
                p_ == _i64(0),
                _pack_byte(lambda d: ucode[b, h, _i64(0), d], bos, dim, w),
                past_bos[b, h, w],
            ),
            name="kv_bos",
        )
        args.append(past_bos)
        outs.append(bos_out)
    func = te.create_prim_func([*args, *outs])
    func_attrs = _kv_attrs(attrs.OpName.KV_APPEND, heads, dim, bits, bos)
    name = f"kv_append_{bits}bit{'_bos' if bos else ''}_h{heads}_d{dim}"
    return func.with_attrs({**func_attrs, "global_symbol": name})


def kv_attention(
    heads: int,
    kv_heads: int,
    head_dim: int,
    *,
    bits: int,
    bos_bits: int | None = None,
    scale: float,
) -> tirx.PrimFunc:
    """Build the causal GQA attention PrimFunc over a packed KV cache (module docstring).

    Parameters
    ----------
    heads, kv_heads, head_dim : int
        Query heads Hq, KV heads Hkv (a divisor of Hq) and D.
    bits, bos_bits : int
        Cache code widths (``bos_bits`` adds the BOS slots when it differs from ``bits``).
    scale : float
        Score multiplier, rounded to float32 (the export's ``1 / sqrt(D)`` constant).

    Returns
    -------
    PrimFunc
        ``(q: float32[B, Hq, T, D], k_codes: uint8[B, Hkv, S, W], k_scale: float32[B, Hkv, S]
        [, k_bos: uint8[B, Hkv, Wb]], v_codes, v_scale[, v_bos], o: float32[B, Hq, T, D])``.
    """
    hq, hkv = check_dim(heads, "heads"), check_dim(kv_heads, "kv_heads")
    dim = check_dim(head_dim, "head_dim")
    if hq % hkv:
        raise ValueError(f"heads ({hq}) must be a multiple of kv_heads ({hkv})")
    bits, bos = check_kv_bits(bits, bos_bits)
    groups = _i64(hq // hkv)
    b_, t_, s_ = (tirx.Var(n, _I64) for n in ("B", "T", "S"))
    HQ, HKV, D = _i64(hq), _i64(hkv), _i64(dim)
    width = _i64(kv_packed_width(bits, dim))
    q = te.placeholder((b_, HQ, t_, D), "float32", name="q")
    args = [q]

    def cache(prefix: str) -> te.Tensor:
        codes = te.placeholder((b_, HKV, s_, width), "uint8", name=f"{prefix}_codes")
        sc = te.placeholder((b_, HKV, s_), "float32", name=f"{prefix}_scale")
        args.extend([codes, sc])
        bos_buf = None
        if bos is not None:
            bos_width = _i64(kv_packed_width(bos, dim))
            bos_buf = te.placeholder((b_, HKV, bos_width), "uint8", name=f"{prefix}_bos")
            args.append(bos_buf)

        def deq(b, h, s, d):
            value = unpack_code(codes, bits, (b, h, s), d) - (1 << (bits - 1))
            if bos_buf is not None:
                first = unpack_code(bos_buf, bos, (b, h), d) - (1 << (bos - 1))
                value = tirx.Select(s == _i64(0), first, value)
            return tirx.Cast("float32", value) * sc[b, h, s]

        return te.compute((b_, HKV, s_, D), deq, name=f"{prefix}_deq")

    kf, vf = cache("k"), cache("v")
    rd = te.reduce_axis((_i64(0), D), name="rd")
    score = te.compute(
        (b_, HQ, t_, s_),
        lambda b, h, t, s: te.sum(q[b, h, t, rd] * kf[b, h // groups, s, rd], axis=rd),
        name="score",
    )
    masked = te.compute(
        (b_, HQ, t_, s_),
        lambda b, h, t, s: tirx.Select(
            s <= s_ - t_ + t, score[b, h, t, s] * _f32(scale), _f32(float("-inf"))
        ),
        name="masked",
    )
    rs = te.reduce_axis((_i64(0), s_), name="rs")
    row_max = te.compute(
        (b_, HQ, t_), lambda b, h, t: te.max(masked[b, h, t, rs], axis=rs), name="row_max"
    )
    row_exp = te.compute(
        (b_, HQ, t_, s_),
        lambda b, h, t, s: tirx.exp(masked[b, h, t, s] - row_max[b, h, t]),
        name="row_exp",
    )
    rs2 = te.reduce_axis((_i64(0), s_), name="rs2")
    row_sum = te.compute(
        (b_, HQ, t_), lambda b, h, t: te.sum(row_exp[b, h, t, rs2], axis=rs2), name="row_sum"
    )
    prob = te.compute(
        (b_, HQ, t_, s_), lambda b, h, t, s: row_exp[b, h, t, s] / row_sum[b, h, t], name="prob"
    )
    rs3 = te.reduce_axis((_i64(0), s_), name="rs3")
    out = te.compute(
        (b_, HQ, t_, D),
        lambda b, h, t, d: te.sum(prob[b, h, t, rs3] * vf[b, h // groups, rs3, d], axis=rs3),
        name="out",
    )
    func = te.create_prim_func([*args, out])
    func_attrs = _kv_attrs(attrs.OpName.KV_ATTENTION, hkv, dim, bits, bos)
    func_attrs[attrs.HEADS] = hq
    func_attrs[attrs.ATTN_SCALE] = float(scale)
    name = f"kv_attention_{bits}bit{'_bos' if bos else ''}_h{hq}_kv{hkv}_d{dim}"
    return func.with_attrs({**func_attrs, "global_symbol": name})
