"""Shell scripts run as root of a user and a mount namespace, where they may mount a small tmpfs: the
full-disk tests fill one at a chosen size (pr28a). A script exits 99 when it cannot mount (a kernel
without unprivileged user namespaces): the test is skipped, not failed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")


def in_namespace(
    script: str, *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``sh -c script args...`` in the namespaces, this checkout's package on its ``PYTHONPATH``."""
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    if done.returncode == 99:
        pytest.skip(f"no tmpfs in a mount namespace here: {done.stderr.strip()}")
    return done


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder for ``mount_tmpfs`` in this process's namespace (the tests that need root), unmounted
    after the test."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def mount_tmpfs(where: Path, options: str) -> None:
    """A tmpfs of ``options`` (``size=64k``, ``nr_inodes=16``) at ``where``: a full or inode-less disk."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "none", str(where)], check=True)
