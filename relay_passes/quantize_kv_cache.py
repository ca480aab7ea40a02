"""QuantizeKVCache: the KV cache stored packed (3/4-bit), attention dequantizes it in the kernel.

Runs after the BitLinear phase (it only touches attention) on the with-past export of
:mod:`bitnet_tvm.export`.  Before, per layer ``i`` (``kn`` the new keys after RoPE, ``vn`` the
new values, both ``[B, Hkv, T, D]``; ``fq_b`` the KV fake quantizer of ``b`` bits, spelled
``round(x * (L / (max|x| + eps)))`` clipped to ``[-L, L]`` times ``(max|x| + eps) / L``)::

    kq = fq_3(kn)  or  where(positions == 0, fq_4(kn), fq_3(kn))  (BOS kept at 4 bits)
    kc = concat((past_key_i, kq), axis=2)                        # output present_key.i
    kr = reshape(broadcast_to(expand_dims(kc, 2)), [B, Hq, S, D])  # GQA repeat (absent if MHA)
    p  = softmax(where(not causal, -inf, matmul(q, permute_dims(kr, [0, 1, 3, 2])) * c), -1)
    o  = matmul(p, vr)                                           # vr: v's kc/kr likewise

After (``kv_append`` / ``kv_attention`` of :mod:`bitnet_tvm.schedules.operators.attention`)::

    kc = call_tir(kv_append, (kn, past_key_i, past_key_scale_i[, past_key_bos_i]))
    vc = call_tir(kv_append, (vn, past_value_i, past_value_scale_i[, past_value_bos_i]))
    o  = call_tir(kv_attention, (q, kc[0], kc[1][, kc[2]], vc[0], vc[1][, vc[2]]))

``main``'s signature changes: each fp32 ``past_key_i [B, Hkv, P, D]`` becomes ``past_key_i``
uint8 codes ``[B, Hkv, P, W]``, ``past_key_scale_i`` float32 ``[B, Hkv, P]`` and, with a BOS
width, ``past_key_bos_i`` uint8 ``[B, Hkv, Wb]``; each present output likewise (the new
tokens' codes appended).  The layout is :func:`bitnet_tvm.reference.quantize_kv_cache`'s;
``W = D / 2`` (4-bit) or ``3 D / 8`` (3-bit), ``Wb = D / 2``.  The facts go to ``main``'s
``bitnet.kv_cache`` attribute (JSON), which :func:`packed_kv_io` turns into artifact I/O specs.

Bytes per (token, KV head) of K or V: ``W + 4`` (the float32 scale is kept: the reference's
``codes * scale`` is float32, and the cache must decode to exactly what the fake quantizer
gives).  For head_dim 128 (BitNet 2B4T): 3-bit 48 + 4 = 52 B vs 256 B in fp16 (4.92x; 5.33x
without the scales, which are 7.7 % of the bytes), 4-bit 64 + 4 = 68 B (3.76x).  The BOS slot
adds ``D / 2`` bytes per head once per sequence; position 0's row of 3-bit codes is unused.

Bits: with ``scheme`` None those of the graph's fake quantizers (all layers must agree; a
graph without them is left as is).  A ``scheme`` with ``kv.bits`` quantizes the cache at its
widths whether the graph fake-quantizes K/V or not (``kn`` is then the quantizer's input, or
the concatenated value itself); a ``scheme`` without ``kv.bits`` leaves the graph as is.
Assumptions taken from our export, not re-derived: the mask is causal over absolute positions
``past + t`` and the ``where`` of the fake quantizers tests ``position == 0``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import tvm
from tvm import relax

from bitnet_tvm.reference import EPS, kv_packed_width
from bitnet_tvm.schedules.operators.attention import check_kv_bits, kv_append, kv_attention
from bitnet_tvm.schemes import QuantScheme

from .emit import emit_like
from .fuse_bitlinear import users_of
from .graph_view import GraphView

__all__ = ["KV_ATTR", "KVCacheInfo", "QuantizeKVCache", "packed_kv_io"]

#: ``main`` attribute holding :class:`KVCacheInfo` as JSON.
KV_ATTR = "bitnet.kv_cache"
_LEVELS_TO_BITS = {3.0: 3, 7.0: 4}


@dataclass(frozen=True)
class KVCacheInfo:
    """What the packed cache of a compiled model looks like (``main``'s ``bitnet.kv_cache``).

    ``inputs`` / ``outputs`` are the positions, in the original signature, of the fp32 cache
    tensors that each became ``codes, scale[, bos]``.
    """

    bits: int
    bos_bits: int | None
    kv_heads: int
    head_dim: int
    layers: int
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    @property
    def width(self) -> int:
        """Bytes of one (token, head) row of codes."""
        return kv_packed_width(self.bits, self.head_dim)

    @property
    def bos_width(self) -> int | None:
        """Bytes of one head's BOS slot, or None when there is none."""
        return None if self.bos_bits is None else kv_packed_width(self.bos_bits, self.head_dim)

    def bytes_per_token(self) -> dict[str, float]:
        """Cache bytes per token (all layers, K and V), packed vs fp16/fp32, and the ratios.

        The float32 scale of each (token, head) row is counted; the one-off BOS slot is not (it
        is ``Wb`` bytes per head and sequence, see ``bos_bytes_per_sequence``).
        """
        rows = 2 * self.layers * self.kv_heads
        packed = rows * (self.width + 4)
        fp16 = rows * 2 * self.head_dim
        return {
            "packed": packed,
            "fp16": fp16,
            "fp32": 2 * fp16,
            "vs_fp16": fp16 / packed,
            "vs_fp16_without_scales": fp16 / (rows * self.width),
            "scale_share": 4 / (self.width + 4),
            "bos_bytes_per_sequence": rows * (self.bos_width or 0),
        }

    def to_metadata(self) -> dict:
        """Plain-JSON description for the artifact's ``metadata["kv_cache"]``."""
        return {
            "format": "packed",
            "bits": self.bits,
            "bos_bits": self.bos_bits,
            "layers": self.layers,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "codes_bytes_per_row": self.width,
            "bos_bytes_per_head": self.bos_width,
            "bytes_per_token": self.bytes_per_token(),
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KVCacheInfo:
        return cls(**json.loads(text))


@dataclass
class _FakeQuant:
    x: relax.Expr  # the quantizer's float input
    bits: int
    bos_bits: int | None
    eps: float


@dataclass
class _Cache:
    concat: relax.Var
    past: relax.Var
    new: relax.Expr  # the float values appended (pre-quantization)
    quant: _FakeQuant | None


@dataclass
class _Site:
    out: relax.Var  # the attention output (p @ v)
    q: relax.Expr
    scale: float
    k: _Cache
    v: _Cache
    drop: list[relax.Var]


def _fake_quant_of(g: GraphView, expr: relax.Expr) -> _FakeQuant | None:
    """``expr`` as ``codes * scale`` of one KV fake quantizer, else None."""
    mul = g.call(expr, "multiply")
    if mul is None:
        return None
    for codes, scale in (mul.args, mul.args[::-1]):
        div = g.call(scale, "divide")
        levels = g.scalar(div.args[1]) if div is not None else None
        if levels not in _LEVELS_TO_BITS:
            continue
        guard = g.call(div.args[0], "add")
        eps = g.scalar(guard.args[1]) if guard is not None else None
        amax = g.call(guard.args[0], "max") if guard is not None else None
        absx = g.call(amax.args[0], "abs") if amax is not None else None
        if eps is None or absx is None or not amax.attrs.keepdims:
            continue
        x = absx.args[0]
        clipped = g.clip(codes)
        if clipped is None or (clipped[1], clipped[2]) != (-levels, levels):
            continue
        rounded = g.call(clipped[0], "round")
        prod = g.call(rounded.args[0], "multiply") if rounded is not None else None
        mult = g.call(prod.args[1], "divide") if prod is not None else None
        if mult is None or not g.same(prod.args[0], x) or not g.same(mult.args[1], div.args[0]):
            continue
        if g.scalar(mult.args[0]) != levels:
            continue
        return _FakeQuant(x, _LEVELS_TO_BITS[levels], None, eps)
    return None


def _is_bos_test(g: GraphView, cond: relax.Expr) -> bool:
    while (call := g.call(cond, "expand_dims", "reshape", "broadcast_to")) is not None:
        cond = call.args[0]
    eq = g.call(cond, "equal")
    return eq is not None and g.scalar(eq.args[1]) == 0


def _kv_quant_of(g: GraphView, expr: relax.Expr) -> _FakeQuant | None:
    """The KV fake quantization producing ``expr`` (one width, or BOS ``where``), else None."""
    where = g.call(expr, "where")
    if where is None:
        return _fake_quant_of(g, expr)
    first, rest = (_fake_quant_of(g, a) for a in where.args[1:])
    if first is None or rest is None or not g.same(first.x, rest.x) or first.eps != rest.eps:
        return None
    if not _is_bos_test(g, where.args[0]):
        return None
    return _FakeQuant(rest.x, rest.bits, first.bits, rest.eps)


def _unrepeat(g: GraphView, expr: relax.Expr, drop: list) -> relax.Expr:
    """The ``[B, Hkv, S, D]`` tensor below the export's GQA repeat, or ``expr`` (MHA)."""
    reshape = g.call(expr, "reshape")
    bcast = g.call(reshape.args[0], "broadcast_to") if reshape is not None else None
    expand = g.call(bcast.args[0], "expand_dims") if bcast is not None else None
    if expand is None or [int(a) for a in expand.attrs.axis] != [2]:
        return expr
    drop.extend(v for v in (expr, reshape.args[0], bcast.args[0]) if isinstance(v, relax.Var))
    return expand.args[0]


def _cache_of(g: GraphView, expr: relax.Expr, params: set) -> _Cache | None:
    concat = g.call(expr, "concat")
    if concat is None or int(concat.attrs.axis) not in (2, -2) or not isinstance(expr, relax.Var):
        return None
    fields = concat.args[0].fields
    if len(fields) != 2 or not isinstance(fields[0], relax.Var) or fields[0] not in params:
        return None
    quant = _kv_quant_of(g, fields[1])
    return _Cache(expr, fields[0], quant.x if quant else fields[1], quant)


def _match(g: GraphView, var: relax.Var, params: set) -> _Site | None:
    """The attention whose output is ``var``, reading concatenated past caches, else None."""
    pv = g.call(var, "matmul")
    soft = g.call(pv.args[0], "nn.softmax") if pv is not None else None
    if soft is None or int(soft.attrs.axis) not in (-1, 3):
        return None
    where = g.call(soft.args[0], "where")
    if where is None or g.scalar(where.args[1]) != -math.inf:
        return None
    mul = g.call(where.args[2], "multiply")
    scale = g.scalar(mul.args[1]) if mul is not None else None
    qk = g.call(mul.args[0], "matmul") if mul is not None else None
    kt = g.call(qk.args[1], "permute_dims") if qk is not None else None
    if scale is None or kt is None or [int(a) for a in kt.attrs.axes] != [0, 1, 3, 2]:
        return None
    drop = [a for a in (soft.args[0], where.args[2], mul.args[0], qk.args[1], pv.args[0])]
    k = _cache_of(g, _unrepeat(g, kt.args[0], drop), params)
    v = _cache_of(g, _unrepeat(g, pv.args[1], drop), params)
    if k is None or v is None:
        return None
    return _Site(var, qk.args[0], scale, k, v, [d for d in drop if isinstance(d, relax.Var)])


def _private(site: _Site, users: dict) -> bool:
    """Whether the replaced chain (repeat, scores, softmax) feeds only this attention."""
    inside = {*site.drop, site.out}
    return all(set(users.get(v, [])) <= inside for v in site.drop)


def _widths(sites: list[_Site], scheme: QuantScheme | None) -> tuple[int, int | None, float]:
    """(bits, bos_bits, eps) for every site: from ``scheme`` or the graph's quantizers."""
    if scheme is not None:
        bits, bos = check_kv_bits(scheme.kv.bits, scheme.kv.bos_bits)
        return bits, bos, EPS
    found = {
        (c.quant.bits, c.quant.bos_bits, c.quant.eps)
        for s in sites
        for c in (s.k, s.v)
        if c.quant is not None
    }
    if len(found) != 1 or any(c.quant is None for s in sites for c in (s.k, s.v)):
        raise ValueError(
            "QuantizeKVCache: the KV fake quantizers of the layers differ or are missing in "
            f"some layers ({sorted(found, key=str)}); one cache format is needed for all"
        )
    bits, bos, eps = found.pop()
    return (*check_kv_bits(bits, bos), eps)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod, sites, new_params, info, eps, out_positions) -> None:
        super().__init__(mod)
        self.sites = {s.out: s for s in sites}
        self.caches = {c.concat: c for s in sites for c in (s.k, s.v)}
        self.drop = {d for s in sites for d in s.drop}
        self.new_params = new_params  # old past param -> [codes, scale(, bos)]
        self.info = info
        self.eps = eps
        self.appended: dict[relax.Var, list[relax.Var]] = {}
        self.out_positions = out_positions

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        var = binding.var
        if var in self.drop:
            return
        if var in self.caches:
            self._append(self.caches[var])
        elif var in self.sites:
            self._attend(self.sites[var])
        elif isinstance(binding.value, relax.Tuple) and any(
            f in self.caches for f in binding.value.fields
        ):
            self._outputs(binding)
        else:
            super().visit_var_binding_(binding)

    def _append(self, cache: _Cache) -> None:
        info, bb = self.info, self.builder_
        func = kv_append(
            info.kv_heads, info.head_dim, bits=info.bits, bos_bits=info.bos_bits, eps=self.eps
        )
        gvar = bb.add_func(func.without_attr("global_symbol"), "kv_append")
        params = self.new_params[cache.past]
        b, h = cache.past.ty.shape.values[:2]
        s = cache.concat.ty.shape[2]
        out_ty = [
            relax.TensorType([b, h, s, info.width], "uint8"),
            relax.TensorType([b, h, s], "float32"),
        ]
        if info.bos_width is not None:
            out_ty.append(relax.TensorType([b, h, info.bos_width], "uint8"))
        args = relax.Tuple([self.visit_expr(cache.new), *params])
        call = bb.emit(relax.call_tir(gvar, args, out_ty), f"{cache.past.name}_append")
        names = ("codes", "scale", "bos")
        self.appended[cache.concat] = [
            bb.emit(relax.TupleGetItem(call, i), f"{cache.past.name}_{names[i]}")
            for i in range(len(out_ty))
        ]

    def _attend(self, site: _Site) -> None:
        info = self.info
        heads = int(site.out.ty.shape[1])
        func = kv_attention(
            heads,
            info.kv_heads,
            info.head_dim,
            bits=info.bits,
            bos_bits=info.bos_bits,
            scale=site.scale,
        )
        gvar = self.builder_.add_func(func.without_attr("global_symbol"), "kv_attention")
        args = relax.Tuple(
            [self.visit_expr(site.q), *self.appended[site.k.concat], *self.appended[site.v.concat]]
        )
        out = relax.call_tir(gvar, args, relax.TensorType(site.out.ty.shape, "float32"))
        self.set_var_remap(site.out, emit_like(self.builder_, site.out, out))

    def _outputs(self, binding: relax.VarBinding) -> None:
        fields = []
        for i, f in enumerate(binding.value.fields):
            if f in self.caches:
                self.out_positions.append(i)
                fields.extend(self.appended[f])
            else:
                fields.append(self.visit_expr(f))
        new = emit_like(self.builder_, binding.var, relax.Tuple(fields))
        self.set_var_remap(binding.var, new)


@tvm.transform.module_pass(opt_level=0, name="bitnet.QuantizeKVCache")
class QuantizeKVCache:
    """Store ``main``'s KV cache packed and fuse attention over it (see the module docstring).

    Parameters
    ----------
    scheme : QuantScheme or None
        Cache widths to use (``scheme.kv``); None takes the graph's KV fake quantizers.
    """

    def __init__(self, scheme: QuantScheme | None = None) -> None:
        self.scheme = scheme

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if self.scheme is not None and self.scheme.kv.bits is None:
            return mod
        gvar = next((gv for gv in mod.get_global_vars() if gv.name_hint == "main"), None)
        if gvar is None or not isinstance(mod[gvar], relax.Function):
            return mod
        func = mod[gvar]
        g = GraphView.of(mod, func)
        params = set(func.params)
        users = users_of(g)
        sites = [
            s
            for var in g.var2val
            if (s := _match(g, var, params)) is not None and _private(s, users)
        ]
        if not sites or (self.scheme is None and all(s.k.quant is None for s in sites)):
            return mod
        bits, bos, eps = _widths(sites, self.scheme)
        _, kv_heads, _, head_dim = sites[0].k.past.ty.shape
        info = KVCacheInfo(bits, bos, int(kv_heads), int(head_dim), len(sites))
        new_params, param_list, positions = {}, [], []
        for index, p in enumerate(func.params):
            if not any(p.same_as(c.past) for s in sites for c in (s.k, s.v)):
                param_list.append(p)
                continue
            positions.append(index)
            b, h, past, _ = p.ty.shape
            stem, _, layer = p.name.rpartition("_")
            made = [
                relax.Var(p.name, relax.TensorType([b, h, past, info.width], "uint8")),
                relax.Var(f"{stem}_scale_{layer}", relax.TensorType([b, h, past], "float32")),
            ]
            if info.bos_width is not None:
                made.append(
                    relax.Var(
                        f"{stem}_bos_{layer}", relax.TensorType([b, h, info.bos_width], "uint8")
                    )
                )
            new_params[p] = made
            param_list.extend(made)
        out_positions: list[int] = []
        rewriter = _Rewriter(mod, sites, new_params, info, eps, out_positions)
        body = rewriter.visit_expr(func.body)
        info = KVCacheInfo(**{**asdict(info), "inputs": positions, "outputs": out_positions})
        new = relax.Function(param_list, body, None, func.is_pure, func.attrs)
        if func.attrs is not None and "num_input" in func.attrs:
            added = len(param_list) - len(func.params)
            new = new.with_attr("num_input", int(func.attrs["num_input"]) + added)
        new = relax.analysis.remove_all_unused(new.with_attr(KV_ATTR, info.to_json()))
        rewriter.builder_.update_func(gvar, new)
        return rewriter.builder_.get()


def packed_kv_io(
    mod: tvm.IRModule, inputs: list[dict], outputs: list[dict]
) -> tuple[list[dict], list[dict], KVCacheInfo | None]:
    """Artifact I/O specs after :class:`QuantizeKVCache`: each fp32 ``past_key.i`` spec becomes
    ``past_key.i`` (codes), ``past_key_scale.i`` and ``past_key_bos.i`` with ``main``'s shapes
    and dtypes, likewise the ``present_*`` outputs.  Unchanged (and None) without the rewrite.
    """
    func = mod["main"]
    if func.attrs is None or KV_ATTR not in func.attrs:
        return inputs, outputs, None
    info = KVCacheInfo.from_json(str(func.attrs[KV_ATTR]))
    parts = ["", "_scale", "_bos"][: 3 if info.bos_width is not None else 2]

    def expand(specs: list[dict], positions: list[int]) -> list[dict]:
        out = []
        for i, spec in enumerate(specs):
            if i not in positions:
                out.append(spec)
                continue
            stem, _, layer = spec["name"].rpartition(".")
            out.extend({**spec, "name": f"{stem}{part}.{layer}"} for part in parts)
        return out

    new_inputs = expand(inputs, info.inputs)
    params = list(func.params)
    for spec, param in zip(new_inputs, params, strict=False):
        spec["shape"] = [
            int(d) if isinstance(d, tvm.tirx.IntImm) else str(d) for d in param.ty.shape
        ]
        spec["dtype"] = str(param.ty.dtype)
    return new_inputs, expand(outputs, info.outputs), info
