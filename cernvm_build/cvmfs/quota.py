"""The cache's size limit (the real client's ``CVMFS_QUOTA_LIMIT``), one rule for the objects
(``<root>/data``) and the mount daemon's inflated files (``<root>/plain``, ``plaincache.py``) together:
least recently used files go first; catalogs (``C`` objects) and the signed files are never
evicted, so the mounted snapshot stays listable offline and a reboot on the pin finds its catalogs.

The order of use survives restarts through the files' mtimes: an object's mtime is set when it is
first used in a process (scanned at start, oldest first), so a reboot keeps evicting what was
least recently used before. Standard library only: it runs in the μCernVM initrd.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from .objects import fanned_out_files

#: After an eviction the cache is at most this fraction of the limit (fewer, larger cleanups).
CLEAN_TO = 0.75
MB = 1 << 20


def pinned(name: str) -> bool:
    """Catalogs are never evicted (the mounted snapshot's tree must stay readable offline)."""
    return name.endswith("C")


class Eviction:
    """What one eviction removed: files and bytes."""

    __slots__ = ("bytes", "files")

    def __init__(self, files: int, bytes: int) -> None:
        self.files = files
        self.bytes = bytes


class Quota:
    """Tracks the files under ``<root>/data`` and ``<root>/plain`` and evicts down to ``CLEAN_TO`` of
    ``limit`` bytes."""

    def __init__(self, root: Path, limit: int):
        self.dirs = (root / "data", root / "plain")
        self.limit = limit
        self.total = 0
        self._lru: OrderedDict[str, int] = OrderedDict()  # path -> size, oldest use first
        self._touched: set[str] = set()
        self._lock = threading.Lock()
        self.evicted = Eviction(0, 0)
        #: told of every file evicted (by path), e.g. to forget it in the caches' ``Holdings``
        self.on_evict: Callable[[str], None] | None = None

    def scan(self, *, sweep_before: float | None = None) -> Eviction:
        """Take stock of what the cache holds (oldest mtime first) and evict if it is over the limit;
        ``sweep_before``: remove crashed writers' temporaries older than that on the way."""
        found: list[tuple[int, str, int]] = []
        for base in self.dirs:
            for f in fanned_out_files(base, sweep_before=sweep_before):
                st = f.stat(follow_symlinks=False)
                found.append((st.st_mtime_ns, f.path, st.st_size))
        found.sort()
        with self._lock:
            self._lru = OrderedDict((path, size) for _, path, size in found)
            self.total = sum(size for _, _, size in found)
            return self._evict()

    def used(self, path: Path | str) -> None:
        """``path`` (an object in the cache) was just read or stored."""
        key = str(path)
        with self._lock:
            size = self._lru.pop(key, None)
            if size is None:
                try:
                    size = os.stat(key).st_size
                except FileNotFoundError:
                    return
                self.total += size
            self._lru[key] = size
            if key not in self._touched:
                self._touched.add(key)
                with contextlib.suppress(OSError):
                    os.utime(key)
            if self.total > self.limit:
                self._evict()

    def _evict(self) -> Eviction:
        """Drop least recently used objects (never catalogs) until at most CLEAN_TO of the limit."""
        if self.total <= self.limit:
            return Eviction(0, 0)
        goal = int(self.limit * CLEAN_TO)
        files = freed = 0
        for key in list(self._lru):
            if self.total <= goal:
                break
            if pinned(key):
                continue
            size = self._lru.pop(key)
            self._touched.discard(key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(key)
            if self.on_evict is not None:
                self.on_evict(key)
            self.total -= size
            files, freed = files + 1, freed + size
        self.evicted = Eviction(self.evicted.files + files, self.evicted.bytes + freed)
        return Eviction(files, freed)
