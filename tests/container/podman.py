"""Running images with the real podman on this machine (root, cgroup v1 with an empty v2 hierarchy).

What works here, found by trying: crun refuses ``hybrid`` cgroups (v1 controllers plus a cgroup2 mount
at ``/sys/fs/cgroup/unified``) even with ``--cgroups=disabled``, so podman runs in a private mount
namespace where that mount is gone; the container gets no cgroup (``--cgroups=disabled``), no network,
and rlimits at or below the host's hard ones (podman's defaults exceed them: EPERM). Storage is a
fresh ``vfs`` store per test, so nothing touches the host's images.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

needs_podman = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("unshare"),
    reason="running containers needs root, podman and unshare",
)


@pytest.fixture
def store() -> Iterator[Path]:
    """A podman store of the test's own, under a short path (podman refuses a runroot over 50 chars)."""
    path = Path(tempfile.mkdtemp(prefix="podman-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def podman_argv(store: Path, *args: str) -> list[str]:
    return [
        "podman", "--cgroup-manager=cgroupfs", "--storage-driver=vfs", "--events-backend=none",
        "--root", str(store / "root"), "--runroot", str(store / "run"), *args,
    ]  # fmt: skip


def podman(store: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` in its own mount namespace without the cgroup2 mount (see the module's text)."""
    inner = shlex.join(podman_argv(store, *args))
    script = "if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi; exec " + inner
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, check=check, timeout=300,
    )  # fmt: skip


RUN = ("run", "--rm", "--network=none", "--cgroups=disabled", "--ulimit", "nofile=1024:1024",
       "--ulimit", "nproc=1024:1024")  # fmt: skip


def run(store: Path, image: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``podman run --rm IMAGE ARGV`` (``image`` as podman names transports: ``oci-archive:PATH``...)."""
    return podman(store, *RUN, image, *argv)
