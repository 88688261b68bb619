"""Where the toolkit finds its data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

#: The source tree (profiles/, bootloader/, launch/, site/ live beside the package).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """A top-level data folder of the project: ``profiles``, ``bootloader``, ``launch`` or ``site``."""
    return PROJECT_ROOT / name


def cache_dir(*parts: str) -> Path:
    """The cache root: ``$CERNVM_CACHE_DIR``, else ``$XDG_CACHE_HOME/cernvm-build``."""
    root = os.environ.get("CERNVM_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(xdg) / "cernvm-build"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_date_epoch(default: int = 0) -> int:
    """``SOURCE_DATE_EPOCH`` for reproducible outputs (timestamps, ISO dates)."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    return int(value) if value and value.isdigit() else default
