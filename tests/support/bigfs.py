"""A file system of its own for the tests that write a million files.

This machine kind's root file system is ext4 without a journal. There, ext4 passes over inodes
deleted in the last seconds when it allocates new ones (``recently_deleted`` in ``ialloc.c`` is
checked only when there is no journal), so a tree created after another was removed costs several
times the CPU of the same tree in a fresh folder: the million-entry export took 237 s of wall time in
CI after the container cases had removed their own million-file trees, against 62 CPU-s alone.

As root, the session gets a sparse, loop-mounted ext4 *with* a journal and with ``inline_data`` (the
cases' files are a few bytes: they live in their inodes, so a million of them need no data blocks).
It is dropped whole at the end: no million-file ``rm`` either. Anywhere a loop mount cannot be made
(not root, no loop device, no ``mkfs.ext4``), the tests use their own temporary folder as before.

A run killed before that end leaves its file system mounted (and pytest can then never delete that
run's temporary folder); each session first unmounts those of dead runs (``sweep``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support import runlock

# Sparse: only what the tests write takes space. Four million inodes: two million-file trees (the
# export and the Apptainer sandbox) and room to spare.
SIZE = "16G"
INODES = 4_000_000


@contextlib.contextmanager
def loop_ext4(where: Path) -> Iterator[Path | None]:
    """Yield the mount point of a fresh journaled ext4 below ``where``, or None where none can be made."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        yield None
        return
    sweep()
    image, mnt = where / "fs.img", where / "mnt"
    mnt.mkdir(parents=True)
    lock = runlock.hold(where)  # before the mount: another run's sweep must never see it unheld
    try:
        subprocess.run(["truncate", "-s", SIZE, str(image)], check=True, capture_output=True)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-N", str(INODES), "-O", "inline_data",
             "-E", "lazy_itable_init=1,lazy_journal_init=1", str(image)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            ["mount", "-o", "loop,noatime", str(image), str(mnt)], check=True, capture_output=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        image.unlink(missing_ok=True)
        os.close(lock)
        yield None
        return
    try:
        yield mnt
    finally:
        _drop(mnt)
        os.close(lock)


def _drop(mnt: Path) -> None:
    # lazy: a daemon a failed test left behind may still hold a file there
    subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True, timeout=120)
    (mnt.parent / "fs.img").unlink(missing_ok=True)


def sweep(within: Path | None = None) -> list[Path]:
    """Unmount the file systems killed earlier runs left, delete their images; returns their mount
    points. Only a loop-mounted ext4 at ``…/bigfs<N>/mnt`` whose folder has a run lock nobody holds
    is taken (``tests.support.runlock``): another live run's, or anything else, is left alone.
    ``within``: only below that folder (a test of the sweep must not take another run's mounts)."""
    swept = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        tail = fields[fields.index("-") + 1 :]
        mnt = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4]))
        if tail[:1] != ["ext4"] or not tail[1].startswith("/dev/loop") or mnt.name != "mnt":
            continue
        where = mnt.parent
        if within is not None and not where.is_relative_to(within):
            continue
        ours = re.fullmatch(r"bigfs\d+", where.name) and (where / runlock.LOCK).exists()
        if ours and runlock.abandoned(where):
            _drop(mnt)
            swept.append(mnt)
    return swept
