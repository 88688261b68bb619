"""Where a container's root tree comes from: a uniform, sorted stream of entries plus an opener.

Two sources implement it: a local directory (tests, already-exported trees) and a CernVM-FS
repository snapshot (the real thing). Writers only see ``Entry`` objects, so every output format is
tested the same way against both.

Order is part of the contract: depth-first, children sorted by their UTF-8 bytes, parents before
children. Every writer relies on it for reproducible output and for hard links (the first path of a
link group in this order is the one that carries the content).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import BuildError

DIR = "dir"
FILE = "file"
SYMLINK = "symlink"
CHAR = "char"
BLOCK = "block"
FIFO = "fifo"
SOCKET = "socket"

_KIND_OF_FMT = {
    stat.S_IFDIR: DIR,
    stat.S_IFREG: FILE,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFCHR: CHAR,
    stat.S_IFBLK: BLOCK,
    stat.S_IFIFO: FIFO,
    stat.S_IFSOCK: SOCKET,
}


def kind_of_mode(mode: int) -> str:
    kind = _KIND_OF_FMT.get(stat.S_IFMT(mode))
    if kind is None:
        raise ValueError(f"unknown file type in mode {mode:o}")
    return kind


@dataclass(frozen=True)
class Entry:
    """One node of a tree, as the writers need it."""

    path: str  # relative to the tree root, '/'-separated, never empty, no leading './'
    kind: str  # DIR, FILE, SYMLINK, CHAR, BLOCK, FIFO or SOCKET
    mode: int  # permission bits including setuid/setgid/sticky (0o7777)
    size: int = 0
    mtime: int = 0
    uid: int = 0
    gid: int = 0
    target: str = ""  # symlink target, verbatim
    #: identity shared by all hard links to one inode (None when the file is not hard-linked)
    link_id: object | None = None
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    rdev: tuple[int, int] = (0, 0)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class TreeSource(Protocol):
    """A sorted stream of entries and a way to read file contents."""

    #: human description for messages, e.g. ``cvmfs://repo.example/el9@tag`` or a directory path
    description: str

    def entries(self) -> Iterator[Entry]: ...

    def open(self, entry: Entry) -> BinaryIO: ...


def sort_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


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
        yield from self._walk(self.root, "")

    def _walk(self, directory: Path, prefix: str) -> Iterator[Entry]:
        try:
            names = sorted(os.listdir(directory), key=sort_key)
        except OSError as e:
            raise BuildError(f"cannot list {directory}: {e.strerror}") from e
        for name in names:
            rel = f"{prefix}{name}"
            if rel in self.exclude:
                continue
            full = directory / name
            entry = self._entry(full, rel)
            yield entry
            if entry.kind == DIR:
                yield from self._walk(full, rel + "/")

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
            mtime=int(st.st_mtime),
            uid=st.st_uid,
            gid=st.st_gid,
            target=os.readlink(full) if kind == SYMLINK else "",
            link_id=(st.st_dev, st.st_ino) if kind == FILE and st.st_nlink > 1 else None,
            xattrs=xattrs,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in (CHAR, BLOCK) else (0, 0),
        )

    def open(self, entry: Entry) -> BinaryIO:
        return open(self.root / entry.path, "rb")
