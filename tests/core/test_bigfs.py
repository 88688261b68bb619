"""The session's loop-mounted file system (``tests.support.bigfs``): one a killed run left mounted is
unmounted and its image deleted by the next session's sweep; one a live run holds stays."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import bigfs, runlock

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mkfs.ext4"), reason="needs root and mkfs.ext4"),
]


def _mount(where: Path) -> Path:
    """A small loop-mounted ext4 laid out as ``loop_ext4`` lays it out, its run lock not held."""
    where.mkdir()
    (where / "mnt").mkdir()
    os.close(os.open(where / runlock.LOCK, os.O_CREAT | os.O_RDWR, 0o600))
    subprocess.run(["truncate", "-s", "8M", where / "fs.img"], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", where / "fs.img"], check=True)
    subprocess.run(["mount", "-o", "loop", where / "fs.img", where / "mnt"], check=True)
    return where / "mnt"


def test_the_sweep_unmounts_a_killed_runs_file_system_only(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "theirs").mkdir()
    dead, live = _mount(tmp_path / "mine" / "bigfs0"), _mount(tmp_path / "mine" / "bigfs1")
    # unheld, as another suite's test of the sweep makes it (or a killed run leaves it): not this test's
    elsewhere = _mount(tmp_path / "theirs" / "bigfs0")
    lock = runlock.hold(live.parent)
    try:
        assert bigfs.sweep(within=tmp_path / "mine") == [dead]
        assert not dead.is_mount() and not (dead.parent / "fs.img").exists()
        assert live.is_mount() and elsewhere.is_mount()
    finally:
        os.close(lock)
        for mnt in (dead, live, elsewhere):
            subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)
