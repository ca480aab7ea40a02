"""Test-wide configuration: GPU tests run only where an NVIDIA GPU is present."""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest


@functools.cache
def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (none found by nvidia-smi)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
