"""The mount shows every file type the format has, on a repository the toolkit's publisher wrote."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and foreign owners need root"),
]

FQRN = "types.cernvm.test"


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path]:
    from cernvm_build.cvmfs import keys as keymod
    from cernvm_build.cvmfs.publish import create_repository, publish_tree

    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "bin" / "tool").chmod(0o755)
    os.link(src / "bin" / "tool", src / "bin" / "tool-hard")
    os.symlink("tool", src / "bin" / "alias")
    os.mkfifo(src / "fifo")
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (src / "owned").write_text("x")
    os.chown(src / "owned", 1234, 5678)
    os.setxattr(src / "owned", "user.origin", b"test")
    os.utime(src / "owned", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    keys = keymod.generate_keys(FQRN)
    keys.save(tmp_path / "keys")
    stratum = tmp_path / "stratum"
    create_repository(stratum, FQRN, keys, timestamp=int(time.time()))
    publish_tree(stratum, FQRN, keys, src)
    return stratum, tmp_path / "keys" / f"{FQRN}.pub"


@pytest.fixture
def mounted(published: tuple[Path, Path], tmp_path: Path) -> Iterator[Path]:
    stratum, pub = published
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", str(stratum)]
    cmd += ["--public-key", str(pub), str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    yield mnt
    subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60)


def test_every_file_type_through_fuse(mounted: Path) -> None:
    m = mounted
    a, b = (m / "bin/tool").stat(), (m / "bin/tool-hard").stat()
    assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2
    assert (m / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n" and a.st_mode & 0o111
    assert os.readlink(m / "bin/alias") == "tool" and (m / "bin/alias").lstat().st_size == 4
    assert stat.S_ISFIFO((m / "fifo").lstat().st_mode)
    null = (m / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    owned = (m / "owned").stat()
    assert (owned.st_uid, owned.st_gid) == (1234, 5678)
    assert owned.st_mtime_ns == 1_600_000_000_123_456_789
    assert os.getxattr(m / "owned", "user.origin") == b"test"
    assert {"user.origin", "user.fqrn", "user.hash"} <= set(os.listxattr(m / "owned"))
