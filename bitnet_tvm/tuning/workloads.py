"""The distinct operator workloads of a model, and their per-bucket tuning instances.

A workload is one of our fused operators (a PrimFunc with a ``bitnet.op`` attribute); the same
operator used by several layers (same shapes, same attributes) is one workload, found by
structural hash.  A tuning *instance* is a workload for one M bucket: ``bitnet.m_hint`` set to
the bucket's ``tune_m`` and the symbolic M replaced by it, so that MetaSchedule can build and
measure it with concrete arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import tirx

from bitnet_tvm.schedules import attrs

__all__ = [
    "Workload",
    "extract_workloads",
    "hinted",
    "instance_module",
    "specialize_m",
    "symbolic_m",
    "workload_key",
]


@dataclass(frozen=True)
class Workload:
    """A distinct operator of a model.

    Attributes
    ----------
    func : tirx.PrimFunc
        The operator, unscheduled, M symbolic.
    names : tuple of str
        The model's functions with this body.
    """

    func: tirx.PrimFunc
    names: tuple[str, ...]

    @property
    def op(self) -> str:
        """The ``bitnet.op`` name."""
        return str(attrs.get_op(self.func))

    def describe(self) -> str:
        """``op n=.. k=..`` for reports."""
        parts = [self.op]
        for key, label in ((attrs.N, "n"), (attrs.K, "k")):
            value = attrs.get_int(self.func, key)
            if value is not None:
                parts.append(f"{label}={value}")
        return " ".join(parts)


def workload_key(func: tirx.PrimFunc) -> int:
    """Structural hash of ``func`` without its symbol name."""
    if func.attrs is not None and "global_symbol" in func.attrs:
        func = func.without_attr("global_symbol")
    return int(tvm_ffi.structural_hash(func))


def extract_workloads(mod: tvm.IRModule) -> list[Workload]:
    """Our operators of ``mod`` (after the graph passes), deduplicated, in module order."""
    found: dict[int, tuple[tirx.PrimFunc, list[str]]] = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or attrs.get_op(func) is None:
            continue
        if func.attrs is not None and "tirx.is_scheduled" in func.attrs:
            continue
        key = workload_key(func)
        found.setdefault(key, (func, []))[1].append(gv.name_hint)
    return [Workload(func, tuple(sorted(names))) for func, names in found.values()]


def symbolic_m(func: tirx.PrimFunc) -> tirx.Var | None:
    """The symbolic token count of ``func`` (the one free Var of its parameter shapes), if any."""
    found = []
    for param in func.params:
        for dim in getattr(param, "shape", None) or ():
            if isinstance(dim, tirx.Var) and not any(dim.same_as(v) for v in found):
                found.append(dim)
    if len(found) > 1:
        names = ", ".join(v.name for v in found)
        raise ValueError(f"operator has several symbolic dimensions ({names}); expected only M")
    return found[0] if found else None


def hinted(func: tirx.PrimFunc, m: int) -> tirx.PrimFunc:
    """``func`` with ``bitnet.m_hint = m``."""
    return func.with_attr(attrs.M_HINT, m)


def specialize_m(func: tirx.PrimFunc, m: int) -> tirx.PrimFunc:
    """``func`` with its symbolic M replaced by the constant ``m`` everywhere."""
    var = symbolic_m(func)
    if var is None:
        return func
    value = tirx.IntImm(str(var.ty.dtype), m)

    def substitute(node: tirx.Var) -> tirx.Expr:
        return value if node.same_as(var) else node

    return tvm_ffi.structural_map(func, (tirx.Var, substitute))


def instance_module(func: tirx.PrimFunc, m: int) -> tvm.IRModule:
    """The module a bucket instance is tuned as and stored under: ``func`` (prepared, hinted)
    with M = ``m``, as the public function ``main`` (the builder exports it by that name)."""
    return tvm.IRModule({"main": specialize_m(func, m).with_attr("global_symbol", "main")})
