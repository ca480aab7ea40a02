"""pyproject.toml: every source package is listed for setuptools, and the TVM pins hold."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _packages_on_disk() -> dict[str, Path]:
    """Dotted package name -> directory, following ``package-dir`` (e.g. schedules/ ->
    bitnet_tvm.schedules)."""
    found = {}
    for name, folder in SETUPTOOLS["package-dir"].items():
        top = ROOT / folder
        for init in top.rglob("__init__.py"):
            parts = init.parent.relative_to(top).parts
            if "__pycache__" not in parts:
                found[".".join((name, *parts))] = init.parent
    return found


def test_package_dir_maps_the_three_source_trees():
    assert SETUPTOOLS["package-dir"] == {
        "bitnet_tvm": "bitnet_tvm",
        "bitnet_tvm.relay_passes": "relay_passes",
        "bitnet_tvm.schedules": "schedules",
    }


@pytest.mark.parametrize("name", sorted(_packages_on_disk()))
def test_package_is_listed(name):
    folder = _packages_on_disk()[name].relative_to(ROOT)
    assert name in SETUPTOOLS["packages"], (
        f"{folder}/ has an __init__.py but {name!r} is missing from "
        "[tool.setuptools] packages in pyproject.toml"
    )


def test_every_directory_with_python_files_is_a_package():
    # a folder of modules without __init__.py would be silently left out of the wheel
    packages = _packages_on_disk()
    for folder in SETUPTOOLS["package-dir"].values():
        for py in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in py.parts:
                assert py.parent in packages.values(), f"{py.relative_to(ROOT)} is in no package"


@pytest.mark.parametrize(
    "pin", ["apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1", "torch==2.13.0"]
)
def test_pinned_dependencies(pin):
    assert pin in PYPROJECT["project"]["dependencies"]


def test_python_version():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_listed_packages_exist():
    on_disk = _packages_on_disk()
    missing = [name for name in SETUPTOOLS["packages"] if name not in on_disk]
    assert not missing, f"listed in pyproject.toml but no folder with __init__.py: {missing}"
