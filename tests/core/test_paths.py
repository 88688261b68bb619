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


@pytest.mark.parametrize("value", ["", "rel"])
def test_an_empty_or_relative_home_is_not_used(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `env HOME= cernvm-build site build` put the cache in /.cache (as root: made it there), and
    # `HOME=rel` in ./rel/.cache/cernvm-build of the working folder (pr28b finding 3): the password
    # database's home instead, as Python uses when $HOME is unset
    import pwd

    for variable in ("CERNVM_CACHE_DIR", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", value)
    own = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert paths.home() == own
    assert paths.cache_root() == ("HOME", own / ".cache" / "cernvm-build")
    assert paths.data_root("cernvm-launch") == ("HOME", own / ".local" / "share" / "cernvm-launch")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert paths.home() == tmp_path / "h"


@pytest.mark.parametrize("value", ["", "rel"])
def test_a_launch_home_under_tilde_takes_the_same_home(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CERNVM_LAUNCH_HOME='~/vms' was expanded by os.path.expanduser, which takes any $HOME: with an
    # empty one it was /vms (an absolute path, accepted), with HOME=rel the relative rel/vms (refused)
    import pwd

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", value)
    monkeypatch.setenv("CERNVM_LAUNCH_HOME", "~/vms")
    own = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert paths.launch_root() == ("CERNVM_LAUNCH_HOME", own / "vms")
    monkeypatch.setenv("CERNVM_LAUNCH_HOME", "~")
    assert paths.launch_root() == ("CERNVM_LAUNCH_HOME", own)
    monkeypatch.setenv("CERNVM_LAUNCH_HOME", str(tmp_path / "l"))
    assert paths.launch_root() == ("CERNVM_LAUNCH_HOME", tmp_path / "l")
