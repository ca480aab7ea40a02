"""Fixtures shared by the schedule-rule tests."""

from __future__ import annotations

import pytest
from tvm.script import tirx as T


@T.prim_func(s_tir=True)
def _foreign(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
    for i in range(8):
        with T.sblock("b"):
            vi = T.axis.spatial(8, i)
            b[vi] = a[vi] + T.float32(1)


@pytest.fixture
def foreign():
    """A PrimFunc that is not one of our operators: every rule must decline it."""
    return _foreign
