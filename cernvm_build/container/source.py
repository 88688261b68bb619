"""Where a container's root tree comes from: a uniform, sorted stream of entries plus an opener.

The model (``Entry``, the kinds, ``TreeSource``) lives in ``cernvm_build.tree``, shared with the
writers and ``cvmfs export``; this module holds the sources: a local directory (tests, already
exported trees), a CernVM-FS repository snapshot (the real thing, ``cvmfs.tree``), small trees in
memory, and ``Clamped`` (mtimes capped for reproducible builds). Writers only see ``Entry`` objects,
so every output format is tested the same way against every source.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..cvmfs.tree import RepositoryTree
from ..errors import BuildError, CernVMError
from ..tree import (
    BLOCK,
    CHAR,
    DIR,
    FIFO,
    FILE,
    SOCKET,
    SYMLINK,
    Entry,
    TreeSource,
    depth_first,
    kind_of_mode,
    sort_key,
)

if TYPE_CHECKING:
    from ..cvmfs.repository import Repository

__all__ = [
    "BLOCK",
    "CHAR",
    "DIR",
    "FIFO",
    "FILE",
    "SOCKET",
    "SYMLINK",
    "Clamped",
    "CvmfsTree",
    "Entry",
    "LocalTree",
    "MemoryTree",
    "TreeSource",
    "kind_of_mode",
    "sort_key",
]


class LocalTree:
    """A directory on this machine. Hard links are recognised by (device, inode)."""

    def __init__(self, root: Path, *, exclude: frozenset[str] = frozenset()) -> None:
        if not root.is_dir():
            raise BuildError(
                f"source directory does not exist: {root}",
                hint="give an existing directory, or a CernVM-FS repository URL",
            )
        self.root = root
        self.exclude = exclude
        self.description = str(root)

    def entries(self) -> Iterator[Entry]:
        return depth_first(
            self._children(self.root, ""), lambda d: self._children(self.root / d.path, d.path + "/")
        )

    def _children(self, directory: Path, prefix: str) -> Iterator[Entry]:
        try:
            names = sorted(os.listdir(directory), key=sort_key)
        except OSError as e:
            raise BuildError(f"cannot list {directory}: {e.strerror}") from e
        for name in names:
            rel = f"{prefix}{name}"
            if rel not in self.exclude:
                yield self._entry(directory / name, rel)

    def _entry(self, full: Path, rel: str) -> Entry:
        st = os.lstat(full)
        kind = kind_of_mode(st.st_mode)
        xattrs: dict[str, bytes] = {}
        if kind != SYMLINK:
            try:
                for key in sorted(os.listxattr(full, follow_symlinks=False)):
                    xattrs[key] = os.getxattr(full, key, follow_symlinks=False)
            except OSError:
                pass  # file systems without xattr support simply have none
        return Entry(
            path=rel,
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            size=st.st_size if kind == FILE else 0,
            mtime=st.st_mtime_ns // 1_000_000_000,
            mtime_nsec=st.st_mtime_ns % 1_000_000_000,
            uid=st.st_uid,
            gid=st.st_gid,
            target=os.readlink(full) if kind == SYMLINK else "",
            link_id=(st.st_dev, st.st_ino) if kind == FILE and st.st_nlink > 1 else None,
            xattrs=xattrs,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in (CHAR, BLOCK) else (0, 0),
        )

    def open(self, entry: Entry) -> BinaryIO:
        return open(self.root / entry.path, "rb")


class CvmfsTree(RepositoryTree):
    """The subtree at ``path`` of an opened CernVM-FS repository snapshot (see ``cvmfs.tree``); a
    path that is not a directory is a build error that points at the profile."""

    def __init__(self, repo: Repository, path: str = "/") -> None:
        try:
            super().__init__(repo, path)
        except CernVMError as e:
            raise BuildError(
                e.message, hint="check the profile's cvmfs.path (list it with 'cernvm-build cvmfs ls')"
            ) from e


class MemoryTree:
    """A few small files and directories held in memory (metadata files, markers, thin.json)."""

    def __init__(self, description: str, entries: list[tuple[Entry, bytes]]) -> None:
        self.description = description
        self._items = entries
        self._data = {e.path: data for e, data in entries}

    def entries(self) -> Iterator[Entry]:
        for e, _ in self._items:
            yield e

    def open(self, entry: Entry) -> BinaryIO:
        return io.BytesIO(self._data[entry.path])


def memory_file(path: str, data: bytes, *, mtime: int, mode: int = 0o644) -> tuple[Entry, bytes]:
    return Entry(path=path, kind=FILE, mode=mode, size=len(data), mtime=mtime), data


class Clamped:
    """``source`` with every mtime capped at ``at`` (reproducible builds' clamping: files newer than
    the image's date get that date, older ones keep theirs)."""

    def __init__(self, source: TreeSource, at: int) -> None:
        self.source, self.at = source, at
        self.description = source.description

    def entries(self) -> Iterator[Entry]:
        at = self.at
        for e in self.source.entries():
            yield replace(e, mtime=at, mtime_nsec=0) if e.mtime >= at else e

    def open(self, entry: Entry) -> BinaryIO:
        return self.source.open(entry)
