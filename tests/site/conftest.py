"""Fixtures for the site tests: a private copy of the real site/ and a private build cache."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build.paths import data_dir


@pytest.fixture(autouse=True)
def site_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of the project's site/, safe to edit."""
    dest = tmp_path / "site"
    shutil.copytree(data_dir("site"), dest, ignore=shutil.ignore_patterns(".*"))
    return dest


@pytest.fixture
def edit() -> Callable[[Path, str, str], None]:
    def do(path: Path, old: str, new: str) -> None:
        text = path.read_text()
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1))

    return do


# The S3 servers for `site publish` (moto, Ceph RGW, target, s3env) come from tests/conftest.py.
