"""Recognize a per-token TopK mask: ``x0`` with all but the ``k`` largest ``|x0|`` of a row zeroed."""

from __future__ import annotations

from tvm import relax

from .graph_view import GraphView

__all__ = ["match_topk_mask"]


def match_topk_mask(g: GraphView, expr: relax.Expr) -> tuple[relax.Expr, float] | None:
    """``(x0, keep_ratio)`` if ``expr`` is TopK-masked ``x0``, else None."""
    return None
