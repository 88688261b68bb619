"""Where a container's root tree comes from: a uniform, sorted stream of entries plus an opener.

Two sources implement it: a local directory (tests, already-exported trees) and a CernVM-FS
repository snapshot (the real thing). Writers only see ``Entry`` objects, so every output format is
tested the same way against both.

Order is part of the contract: depth-first, children sorted by their UTF-8 bytes, parents before
children. Every writer relies on it for reproducible output and for hard links (the first path of a
link group in this order is the one that carries the content).
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from ..errors import BuildError

if TYPE_CHECKING:
    from ..cvmfs.catalog import DirEntry
    from ..cvmfs.repository import Repository

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
    #: the source's own record of this node (saves a second lookup when the content is read)
    ref: object = field(default=None, compare=False, repr=False)

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


_SMALL = 256 * 1024


class CvmfsTree:
    """The subtree at ``path`` of an opened CernVM-FS repository snapshot.

    Hard links are recognised by (catalog, hard-link group), as CernVM-FS scopes groups to one
    catalog. Entries hidden by the server (the ``/.cvmfs`` virtual snapshot directory) are left out.
    """

    def __init__(self, repo: Repository, path: str = "/") -> None:
        from ..cvmfs.catalog import FLAG_HIDDEN
        from ..cvmfs.catalog import DirEntry as _DirEntry

        self._hidden = FLAG_HIDDEN
        self._dir_entry = _DirEntry
        self.repo = repo
        where = f"{repo.fqrn}@{repo.tag or 'revision ' + str(repo.revision)}"
        top = repo.lookup(path)
        if top is None or not top.is_dir:
            what = "does not exist" if top is None else "is not a directory"
            raise BuildError(
                f"{where}: {path} {what} in the repository",
                hint="check the profile's cvmfs.path (list it with 'cernvm-build cvmfs ls')",
            )
        self.base = top.path
        self.description = f"cvmfs://{repo.fqrn}{self.base}@{repo.tag or repo.root_hash}"

    def entries(self) -> Iterator[Entry]:
        yield from self._walk(self.base)

    def _walk(self, directory: str) -> Iterator[Entry]:
        children = sorted(self.repo.listdir(directory), key=lambda d: sort_key(d.name))
        for d in children:
            if d.flags & self._hidden:
                continue
            entry = self._entry(d)
            yield entry
            if entry.kind == DIR:
                yield from self._walk(d.path)

    def _entry(self, d: DirEntry) -> Entry:
        kind = kind_of_mode(d.mode)
        rel = d.path[len(self.base) :].lstrip("/")
        return Entry(
            path=rel,
            kind=kind,
            mode=stat.S_IMODE(d.mode),
            size=d.size if kind == FILE else 0,
            mtime=d.mtime,
            uid=d.uid,
            gid=d.gid,
            target=d.symlink if kind == SYMLINK else "",
            link_id=(d.catalog_prefix, d.hardlink_group) if kind == FILE and d.hardlink_group else None,
            xattrs=dict(sorted(d.xattrs.items())),
            rdev=(os.major(d.rdev), os.minor(d.rdev)) if kind in (CHAR, BLOCK) else (0, 0),
            ref=d,
        )

    def open(self, entry: Entry) -> BinaryIO:
        full = self.base.rstrip("/") + "/" + entry.path
        ref = entry.ref
        if isinstance(ref, self._dir_entry) and ref.path == full:
            if ref.size <= _SMALL:  # one read, no buffered file object: most files are small
                return io.BytesIO(self.repo.read(ref))
            return self.repo.open(ref)
        return self.repo.open(full)


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


def memory_dir(path: str, *, mtime: int, mode: int = 0o755) -> tuple[Entry, bytes]:
    return Entry(path=path, kind=DIR, mode=mode, mtime=mtime), b""


class Prefixed:
    """``source`` seen below ``prefix`` (a directory entry for the prefix itself comes first)."""

    def __init__(self, source: TreeSource, prefix: str, *, mtime: int, mode: int = 0o755) -> None:
        self.source, self.prefix = source, prefix.strip("/")
        self.description = source.description
        self._top = Entry(path=self.prefix, kind=DIR, mode=mode, mtime=mtime)

    def entries(self) -> Iterator[Entry]:
        yield self._top
        for e in self.source.entries():
            yield replace(e, path=f"{self.prefix}/{e.path}")

    def open(self, entry: Entry) -> BinaryIO:
        return self.source.open(replace(entry, path=entry.path[len(self.prefix) + 1 :]))


class Chained:
    """Several sources one after the other; a later top-level name already seen is left out with
    everything below it (the first source wins), so additions never overwrite the tree."""

    def __init__(self, *sources: TreeSource) -> None:
        self.sources = sources
        self.description = " + ".join(s.description for s in sources)
        self._owner: dict[str, TreeSource] = {}

    def entries(self) -> Iterator[Entry]:
        seen_top: set[str] = set()
        for i, src in enumerate(self.sources):
            mine: set[str] = set()
            for e in src.entries():
                top = e.path.split("/", 1)[0]
                if top in seen_top and top not in mine:
                    continue
                mine.add(top)
                if i > 0 and e.kind == FILE:
                    self._owner[e.path] = src
                yield e if i == 0 else replace(e, link_id=(i, e.link_id) if e.link_id else None)
            seen_top |= mine

    def open(self, entry: Entry) -> BinaryIO:
        return self._owner.get(entry.path, self.sources[0]).open(entry)
