"""The cache root: where cernvm-build keeps what it may rebuild."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cernvm_build import paths


def test_a_relative_xdg_cache_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The XDG base directory spec: a relative $XDG_CACHE_HOME is invalid and to be ignored. It was used,
    # so `site build` wrote its cache into ./rel/cernvm-build of whatever folder it ran in (pr24b finding 5)
    monkeypatch.delenv("CERNVM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", "rel")
    assert paths.cache_dir("site") == tmp_path / "home" / ".cache" / "cernvm-build" / "site"
    assert not (tmp_path / "rel").exists()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "cernvm-build"
    assert os.path.isdir(tmp_path / "xdg" / "cernvm-build")
