"""mfusepy's high-level API over libfuse 2: the daemon's other front end, only where
``FUSE_LIBRARY_PATH`` names libfuse 2 (a host; the tests compare the two front ends' trees). Paths,
not inodes; an attribute dict per request."""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Any

import mfusepy

from ..errors import CernVMError
from .catalog import DirEntry
from .fuse import (
    ENOATTR,
    ENTRY_CACHE,
    Serving,
    _os_error,
    _target,
    children,
    dot_inode,
    shown_size,
    statfs_numbers,
    xattr_names,
    xattr_value,
)
from .repository import Repository


class CvmfsOperations(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(
        self,
        repo: Repository,
        *,
        on_ready: Callable[[], None] | None = None,
        serving: Serving = Serving(),
    ):
        self.repo = repo
        self.on_ready = on_ready
        self._files: dict[int, DirEntry] = {}
        self._fh = itertools.count(1)
        self._lock = threading.Lock()
        # A mounted revision never changes, so entries can be kept; readdir fills this too.
        self._entries: dict[str, DirEntry] = {}
        self._prefetch = serving.prefetcher(repo)
        self._magic = serving.magic_xattrs
        #: no attributes to show at all: ENOSYS, and the kernel stops asking (``Serving``)
        self._xattrs = serving.any_xattrs(repo)

    # -- life cycle ------------------------------------------------------------------------------
    def init(self, path: str) -> None:
        if self.on_ready is not None:
            self.on_ready()

    def destroy(self, path: str) -> None:
        self._prefetch.close()
        self.repo.close()

    # -- metadata --------------------------------------------------------------------------------
    def _remember(self, entry: DirEntry) -> None:
        if len(self._entries) >= ENTRY_CACHE:
            self._entries.clear()
        self._entries[entry.path] = entry

    def _entry(self, path: str) -> DirEntry:
        hit = self._entries.get(path)
        if hit is not None:
            return hit
        try:
            entry = self.repo.lookup(path)
        except CernVMError as e:
            raise _os_error(e) from e
        if entry is None:
            raise mfusepy.FuseOSError(errno.ENOENT)
        self._remember(entry)
        return entry

    @staticmethod
    def attrs(e: DirEntry) -> dict[str, Any]:
        size = shown_size(e)
        return {
            "st_mode": e.mode,
            "st_ino": e.inode,
            "st_nlink": e.linkcount,
            "st_size": size,
            "st_uid": e.uid,
            "st_gid": e.gid,
            "st_rdev": e.rdev,
            "st_mtime": e.mtime_ns,
            "st_ctime": e.mtime_ns,
            "st_atime": e.mtime_ns,
            "st_blksize": 1 << 16,
            "st_blocks": (size + 511) // 512,
        }

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        return self.attrs(self._entry(path))

    def readdir(self, path: str, fh: int) -> Iterator[Any]:
        for name, c in self.children(path):
            if c is None:
                yield name, {"st_mode": stat.S_IFDIR, "st_ino": dot_inode(path, name)}, 0
            else:
                yield name, {"st_mode": c.mode, "st_ino": c.inode}, 0

    def children(self, path: str) -> Iterator[tuple[str, DirEntry | None]]:
        return children(self.repo, path, self._prefetch, self._remember)

    def readlink(self, path: str) -> str:
        entry = self._entry(path)
        if not entry.is_symlink:
            raise mfusepy.FuseOSError(errno.EINVAL)
        return _target(entry)

    def statfs(self, path: str) -> dict[str, int]:
        return statfs_numbers(self.repo)

    # -- contents --------------------------------------------------------------------------------
    # raw_fi: these get libfuse's fuse_file_info, so open can ask the kernel to keep its page cache
    # across opens (contents of a mounted revision never change).
    def open(self, path: str, fi: Any) -> int:
        if fi.flags & os.O_ACCMODE != os.O_RDONLY:
            raise mfusepy.FuseOSError(errno.EROFS)
        entry = self._entry(path)
        if not stat.S_ISREG(entry.mode):
            raise mfusepy.FuseOSError(errno.EISDIR if entry.is_dir else errno.EINVAL)
        with self._lock:
            fh = next(self._fh)
            self._files[fh] = entry
        fi.fh = fh
        fi.keep_cache = 1
        self._prefetch.opened(entry)
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        entry = self._files.get(fi.fh) or self._entry(path)
        try:
            data = self.repo.read(entry, offset, size)
        except CernVMError as e:
            raise _os_error(e) from e
        if entry.is_chunked:
            self._prefetch.next_chunk(entry, offset + len(data))
        return data

    def release(self, path: str, fi: Any) -> int:
        with self._lock:
            self._files.pop(fi.fh, None)
        return 0

    # -- extended attributes ---------------------------------------------------------------------
    def listxattr(self, path: str) -> list[str]:
        if not self._xattrs:
            raise mfusepy.FuseOSError(errno.ENOSYS)
        return xattr_names(self._entry(path), self._magic)

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        if not self._xattrs:
            raise mfusepy.FuseOSError(errno.ENOSYS)
        value = xattr_value(self.repo, self._entry(path), name, self._magic)
        if value is None:
            raise mfusepy.FuseOSError(ENOATTR)
        return value


def run_libfuse2(
    repo: Repository,
    mountpoint: str,
    *,
    on_ready: Callable[[], None] | None,
    allow_other: bool,
    debug: bool,
    serving: Serving,
) -> None:
    options: dict[str, Any] = {
        "foreground": True,
        "ro": True,
        "default_permissions": True,
        "fsname": f"cvmfs2:{repo.fqrn}",
        "subtype": "cvmfs",
        "use_ino": True,
        "kernel_cache": True,
        "entry_timeout": 3600,
        "attr_timeout": 3600,
        "negative_timeout": 3600,
    }
    if allow_other:
        options["allow_other"] = True
    if debug:
        options["debug"] = True
    mfusepy.FUSE(
        CvmfsOperations(repo, on_ready=on_ready, serving=serving), mountpoint, raw_fi=True, **options
    )
