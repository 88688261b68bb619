"""When the real tools cannot run, the suite says what to install (and fails rather than skips)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .real import ENV, RealToolsMissing, find_tools, real_dir


def test_missing_tools_and_libraries_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "nowhere"))
    with pytest.raises(RealToolsMissing, match=r"not at .*nowhere \(hint: .*CERNVM_CVMFS_REAL="):
        find_tools(tmp_path / "scratch")
    # a copy of the real tools without one of the client's libraries' dependencies on the path
    monkeypatch.delenv(ENV)
    fake = tmp_path / "cvmfs-real"
    shutil.copytree(real_dir() / "bin", fake / "bin")
    (fake / "lib").mkdir()
    real_lib = real_dir() / "lib"
    for f in real_lib.glob("*.so.*"):
        if "crypto" not in f.name:  # cvmfs_swissknife needs libcvmfs_crypto: now missing
            os.symlink(f, fake / "lib" / f.name)
    monkeypatch.setenv(ENV, str(fake))
    with pytest.raises(
        RealToolsMissing, match=r"cannot run: missing libcvmfs_crypto\.so\.2\.11\.5.*apt-get install"
    ):
        find_tools(tmp_path / "scratch2")
