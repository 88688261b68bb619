"""The publisher lock: one writer per repository at a time.

An ``fcntl`` lock on ``data/txn/publish.lock`` (inside the repository, so every publisher of that
directory sees it). The kernel drops it when the holder dies, so a killed publish never leaves a
stale lock; the file records the holder's pid for the error message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from .. import fsutil
from ..errors import CvmfsError
from ..fsutil import reclaim_stale_in

LOCK_NAME = "publish.lock"
#: the repository's working state (this lock, a replicator's scratch, staging, caches): never served
#: (``cvmfs serve``, nginx-config) nor pushed to S3 -- the lock names its holder's pid
TXN_DIR = "data/txn"


def is_working_state(parts: Sequence[str]) -> bool:
    """Whether the path ``parts`` (relative to the Stratum directory) lies in ``TXN_DIR``."""
    return list(parts[:2]) == TXN_DIR.split("/")


class RepositoryLocked(CvmfsError):
    """Another publisher holds the repository."""


def lock_path(stratum: Path) -> Path:
    return stratum / TXN_DIR / LOCK_NAME


@contextlib.contextmanager
def publish_lock(stratum: Path, what: str = "publish") -> Iterator[None]:
    """Hold the repository's publish lock, or raise RepositoryLocked naming the holder pid. Holding
    it, the temporaries of a killed writer's top files (``..cvmfsreflog.<pid>.0.tmp``, ...) go: the
    re-run rewrites those files, and nothing else would ever remove their halves."""
    with held_lock(lock_path(stratum), what, f"{stratum}: repository is locked by another publisher"):
        reclaim_stale_in(stratum)
        yield


@contextlib.contextmanager
def held_lock(path: Path, what: str, busy: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (the file records our pid and ``what``), or
    RepositoryLocked: ``busy`` and the holder."""

    def refuse(holder: str) -> None:
        raise RepositoryLocked(
            f"{busy} ({holder})",
            hint="wait for that process to finish; the lock is released when it exits",
        )

    with fsutil.held_lock(path, what, refuse):
        yield
