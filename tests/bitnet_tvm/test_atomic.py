"""atomic_open: readers see the old file or the whole new one, never a partial write."""

from __future__ import annotations

import pytest

from bitnet_tvm.atomic import atomic_open


def test_replaces_the_file_on_success(tmp_path):
    path = tmp_path / "sub" / "result.json"
    with atomic_open(path) as f:
        f.write("new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_keeps_the_old_file_and_no_temp_on_error(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(path) as f:
        f.write("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_rejects_append_and_read_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must be"), atomic_open(tmp_path / "x", "a"):
        pass
