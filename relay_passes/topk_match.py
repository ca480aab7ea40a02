"""Recognize a per-token TopK mask: ``x0`` with all but the ``k`` largest ``|x0|`` of a row zeroed.

Accepted spellings of the masking, with ``cond`` a boolean (or 0/1) tensor::

    where(cond, x0, 0)        multiply(x0, cond)        multiply(x0, astype(cond))

``cond`` is accepted as TopK when it is computed (within a few ops) from
``topk(abs(x0), k, axis=-1, largest=True)``: a threshold compare (``|x0| >= kth``), a
tie-break by index (our exporter: ``cumsum`` of the ties against the room left), or the
indices scattered into zeros.  The fused kernel keeps exactly ``k`` entries with ties at the
threshold going to the lower index (``reference.topk_sparsify``); that is what every accepted
spelling computes wherever no two entries tie at the threshold.
"""

from __future__ import annotations

from tvm import relax, tirx

from .graph_view import GraphView

__all__ = ["match_topk_mask"]

_SEARCH_DEPTH = 12


def _find_topk(g: GraphView, cond: relax.Expr, x0: relax.Expr) -> int | None:
    """``k`` of a ``topk(abs(x0), k, axis=-1, largest)`` that ``cond`` derives from."""
    frontier, seen = [cond], set()
    for _ in range(_SEARCH_DEPTH):
        nxt = []
        for expr in frontier:
            value = g.value(expr)
            if isinstance(value, relax.TupleGetItem):  # topk's (values, indices)
                nxt.append(value.tuple_value)
                continue
            if not isinstance(value, relax.Call) or id(value) in seen:
                continue
            seen.add(id(value))
            topk = g.call(value, "topk")
            if topk is not None:
                absx = g.call(topk.args[0], "abs")
                rank = len(topk.args[0].ty.shape)
                if (
                    absx is not None
                    and g.same(absx.args[0], x0)
                    and int(topk.attrs.axis) in (-1, rank - 1)
                    and bool(topk.attrs.largest)
                ):
                    return int(topk.attrs.k)
                continue
            nxt.extend(a for a in value.args if isinstance(a, relax.Expr))
            nxt.extend(f for a in value.args if isinstance(a, relax.Tuple) for f in a.fields)
        frontier = nxt
    return None


def match_topk_mask(g: GraphView, expr: relax.Expr) -> tuple[relax.Expr, float] | None:
    """``(x0, keep_ratio)`` if ``expr`` is TopK-masked ``x0``, else None."""
    candidates = []
    where = g.call(expr, "where")
    if where is not None and g.scalar(g.unbroadcast(where.args[2])) == 0.0:
        candidates.append((where.args[1], where.args[0]))
    if (mul := g.call(expr, "multiply")) is not None:
        candidates += [(mul.args[0], mul.args[1]), (mul.args[1], mul.args[0])]
    for x0, cond in candidates:
        shape = getattr(x0.ty, "shape", None)
        if shape is None or not isinstance(shape[-1], tirx.IntImm):
            continue  # the row width must be static to turn k into a ratio
        k = _find_topk(g, cond, x0)
        if k is not None:
            return x0, k / int(shape[-1])
    return None
