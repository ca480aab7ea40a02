"""Pieces shared by the CPU schedule rules: target check, op dispatch, split factors."""

from __future__ import annotations

from bitnet_tvm.schedules.rule import BitnetRule, split_factor

__all__ = ["BitnetCPURule", "split_factor"]


class BitnetCPURule(BitnetRule):
    """A rule for target kind ``llvm`` (see :class:`~bitnet_tvm.schedules.rule.BitnetRule`)."""

    target_kind = "llvm"
