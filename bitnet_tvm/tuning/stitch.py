"""One PrimFunc that branches on the symbolic token count M over per-bucket scheduled variants.

TVM 0.27 offers no M-dispatch of its own for a PrimFunc, and Relax-level dispatch would need
control flow outside the dataflow blocks, so the variants are merged in TIR::

    if M <= 1:   <decode variant>
    elif M <= 8: <small variant>
    ...
    else:        <last variant>

Each variant is a scheduled copy of the same operator.  Its definitions are renewed
(``s_tir.RenewDefs``: the copies share no buffer or loop variable), and its parameters are
rebound to the stitched function's: ``Bind(M_variant, M)`` and
``DeclBuffer(param_variant, data=param.data)`` in front of the variant's body.  Adjacent buckets
whose variants are structurally equal share one branch.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx

from bitnet_tvm.schedules.attrs import M_HINT
from bitnet_tvm.tuning.buckets import Bucket
from bitnet_tvm.tuning.workloads import symbolic_m

__all__ = ["stitch"]

_SCHEDULED = "tirx.is_scheduled"


def _rebound_body(variant: tirx.PrimFunc, func: tirx.PrimFunc, m: tirx.Var) -> tirx.Stmt:
    variant = tvm.get_global_func("s_tir.RenewDefs")(variant)
    if len(variant.params) != len(func.params):
        raise ValueError(
            f"variant has {len(variant.params)} parameters, the operator {len(func.params)}"
        )
    binds: list[tirx.Stmt] = []
    variant_m = symbolic_m(variant)
    if variant_m is not None:
        binds.append(tirx.Bind(variant_m, m))
    for mine, theirs in zip(variant.params, func.params, strict=True):
        binds.append(tirx.DeclBuffer(mine, data=theirs.data))
    return tirx.SeqStmt([*binds, variant.body])


def _same(a: tirx.PrimFunc, b: tirx.PrimFunc) -> bool:
    """Structurally equal schedules (the ``bitnet.m_hint`` attribute aside)."""
    return bool(tvm_ffi.structural_equal(a.without_attr(M_HINT), b.without_attr(M_HINT)))


def stitch(func: tirx.PrimFunc, variants: list[tuple[Bucket, tirx.PrimFunc]]) -> tirx.PrimFunc:
    """Merge ``variants`` (ascending buckets, scheduled copies of ``func``) into one PrimFunc.

    Parameters
    ----------
    func : tirx.PrimFunc
        The unscheduled operator (its parameters and attributes are kept).
    variants : list of (Bucket, PrimFunc)
        Scheduled variants; the last one also serves every M above its bucket.
    """
    if not variants:
        raise ValueError("stitch needs at least one variant")
    groups: list[list] = []
    for bucket, variant in variants:
        if groups and _same(groups[-1][1], variant):
            groups[-1][0] = bucket  # extend the previous branch to this bucket
        else:
            groups.append([bucket, variant])
    if len(groups) == 1:
        return groups[0][1]
    m = symbolic_m(func)
    if m is None:
        raise ValueError("stitch needs an operator with a symbolic M")
    body = _rebound_body(groups[-1][1], func, m)
    for bucket, variant in reversed(groups[:-1]):
        bound = tirx.IntImm(str(m.ty.dtype), bucket.high)
        body = tirx.IfThenElse(m <= bound, _rebound_body(variant, func, m), body)
    return func.with_body(body).with_attr(_SCHEDULED, True)
