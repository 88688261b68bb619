"""The plain cache's disk found full, and when the prefetcher tries it again.

A full cache disk makes the prefetcher stop making objects ahead (each would be made in memory,
dropped at once and fetched again by its reader: ``store.ObjectStore.fetch_ahead_many``). That stop
was for good: once the size limit evicted, or the user deleted files, the mount still made nothing
ahead until it was restarted. Now the mark clears when a write to the disk succeeds again (a
reader's object kept), and the prefetcher looks at the disk's free room (one ``statvfs``) after
every ``RECHECK_EVERY`` objects it skipped, or at once after an eviction: with room for the smallest
of its next objects, it makes them again (a wrong guess costs one object's failed write, which marks
the disk full again).

Standard library only: it runs in the μCernVM initrd.
"""

from __future__ import annotations

import os

#: objects the prefetcher skips on a disk known full before it looks at the disk's room again
RECHECK_EVERY = 64
#: room kept free beyond the object itself (the trailer, a block's rounding, the directory entry)
SLACK = 8 << 10


class FullDisk:
    """Whether the plain cache's disk is known full, for the prefetcher."""

    __slots__ = ("_evicted", "_skipped", "checks", "full")

    def __init__(self) -> None:
        self.full = False
        #: objects skipped since the last look at the disk's room
        self._skipped = 0
        #: the size limit's evictions when the disk was last looked at (a new one: look again)
        self._evicted = 0
        #: looks at the disk's room taken (the tests count them)
        self.checks = 0

    def found(self, evicted: int) -> None:
        """A write to the disk failed for want of room; ``evicted``: the size limit's evictions so far."""
        self.full, self._skipped, self._evicted = True, 0, evicted

    def wrote(self) -> None:
        """A write to the disk succeeded: it has room."""
        self.full = False

    def skip(self, folder: str, count: int, need: int, evicted: int) -> bool:
        """Whether the prefetcher is to skip its next ``count`` objects (the smallest ``need`` bytes)
        for a full disk (``folder``'s); ``evicted``: the size limit's evictions so far."""
        if not self.full:
            return False
        self._skipped += count
        if self._skipped < RECHECK_EVERY and evicted == self._evicted:
            return True
        self._skipped, self._evicted = 0, evicted
        self.checks += 1
        if _room(folder) < need + SLACK:
            return True
        self.full = False
        return False


def _room(folder: str) -> int:
    """The bytes an unprivileged writer may still put in ``folder``'s file system (0 without a free
    inode, or when it cannot be asked: then the disk stays full until a reader's write succeeds)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    if st.f_files and not st.f_favail:
        return 0
    return st.f_bavail * st.f_frsize
