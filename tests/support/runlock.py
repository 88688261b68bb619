"""Which of the suite's leftovers belong to a run that is dead: a folder a run makes outside its own
temporary folder (a launch home in /var/tmp, the loop-mounted file system) is locked (``flock``) by
that run for as long as it lives. The kernel drops the lock when the process dies, however it dies
(SIGKILL, a CI timeout), so a folder nobody holds is a killed run's and may be swept, whereas another
suite running on the same host right now holds its own and is left alone."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK = ".run.lock"


def hold(folder: Path) -> int:
    """Lock ``folder`` for this process's lifetime (or until the returned descriptor is closed)."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def abandoned(folder: Path) -> bool:
    """No live process holds ``folder`` (gone counts; one made before the lock existed has none and
    stays: its run cannot be told dead from alive)."""
    if not folder.exists():
        return True
    try:  # read-only: flock needs no more, and another user's run's lock is 0600
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):  # not ours to judge: left alone
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
