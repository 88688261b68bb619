"""A tree as every writer sees it: a sorted stream of ``Entry`` objects plus a way to read contents.

Sources (a local directory, a CernVM-FS snapshot, small trees in memory) produce entries; the two
writers consume them: ``treewrite`` (a directory on disk) and ``tarwrite`` (a tar stream). Keeping
one model means one mapping of file types and one policy for dangerous files, whatever the output.

Order is part of the contract: depth-first, children sorted by their UTF-8 bytes, parents before
children. Writers rely on it for reproducible output and for hard links (the first path of a link
group in this order is the one that carries the content).

``TreeReport`` is what a writer tells its user besides the tree itself: entries it did not write
(with why) and the entries that deserve a look because they carry power (setuid/setgid bits,
extended attributes such as file capabilities). Such entries are kept (OS trees need them) and
listed, so nobody finds them by surprise.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

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
FMT_OF_KIND = {kind: fmt for fmt, kind in _KIND_OF_FMT.items()}

#: why a socket is never written: it is a live endpoint of a process, meaningless as a copy, and a
#: tar cannot carry it (one old writer turned it into a FIFO). Every writer skips it and says so.
SOCKET_REASON = "sockets are not copied (a socket only means something to the process that made it)"


def kind_of_mode(mode: int) -> str:
    kind = _KIND_OF_FMT.get(stat.S_IFMT(mode))
    if kind is None:
        raise ValueError(f"unknown file type in mode {mode:o}")
    return kind


def sort_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def depth_first(top: Iterator[Entry], children: Callable[[Entry], Iterator[Entry]]) -> Iterator[Entry]:
    """Entries in the contract's order: each directory's entry, then its subtree (``children``).

    An explicit stack of directory iterators, not recursion: a 1,500-deep tree must not hit Python's
    recursion limit, and a wide directory is never a list.
    """
    stack = [top]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        yield entry
        if entry.kind == DIR:
            stack.append(children(entry))


@dataclass(frozen=True)
class Entry:
    """One node of a tree, as the writers need it."""

    path: str  # relative to the tree root, '/'-separated, no leading './'; "" is the root itself
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
    #: nanoseconds past ``mtime`` (0..999,999,999), when the source knows them
    mtime_nsec: int = 0

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def setid(self) -> bool:
        return self.kind != SYMLINK and bool(self.mode & (stat.S_ISUID | stat.S_ISGID))


class TreeSource(Protocol):
    """A sorted stream of entries and a way to read file contents."""

    #: human description for messages, e.g. ``cvmfs://repo.example/el9@tag`` or a directory path
    description: str

    def entries(self) -> Iterator[Entry]: ...

    def open(self, entry: Entry) -> BinaryIO: ...


#: at most this many paths are listed per kind in a report (the counts stay exact): a hostile tree of
#: a million setuid files must not turn the report into the memory problem
REPORT_LIMIT = 10_000


@dataclass
class TreeReport:
    """Entries skipped (path, reason) and entries kept that carry power: setuid/setgid files (path,
    mode) and files with extended attributes (path, attribute names)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    setid: list[tuple[str, int]] = field(default_factory=list)
    xattrs: list[tuple[str, list[str]]] = field(default_factory=list)
    skipped_count: int = 0
    setid_count: int = 0
    xattrs_count: int = 0

    def skip(self, path: str, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < REPORT_LIMIT:
            self.skipped.append((path, reason))

    def note(self, entry: Entry) -> None:
        """Record ``entry`` if it is setuid/setgid or carries xattrs (it is written all the same)."""
        if entry.setid:
            self.setid_count += 1
            if len(self.setid) < REPORT_LIMIT:
                self.setid.append((entry.path, entry.mode & 0o7777))
        if entry.xattrs:
            self.xattrs_count += 1
            if len(self.xattrs) < REPORT_LIMIT:
                self.xattrs.append((entry.path, sorted(entry.xattrs)))

    def to_json(self) -> dict[str, Any]:
        return {
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "skipped_count": self.skipped_count,
            "setid": [{"path": p, "mode": f"{m:04o}"} for p, m in self.setid],
            "setid_count": self.setid_count,
            "xattrs": [{"path": p, "names": n} for p, n in self.xattrs],
            "xattrs_count": self.xattrs_count,
        }

    def summary(self) -> str:
        """E.g. ``3 setuid/setgid kept, 12 with xattrs kept, 2 skipped`` ("" when nothing to say)."""
        parts = []
        if self.setid_count:
            parts.append(f"{self.setid_count} setuid/setgid kept")
        if self.xattrs_count:
            parts.append(f"{self.xattrs_count} with xattrs kept")
        if self.skipped_count:
            parts.append(f"{self.skipped_count} skipped")
        return ", ".join(parts)


def bad_name(name: str) -> str | None:
    """Why ``name`` cannot be one component of a path in a tree, or None when it can."""
    if name in ("", ".", ".."):
        return f"the name {name!r} is not allowed"
    if "/" in name:
        return "the name contains '/'"
    if "\0" in name:
        return "the name contains a NUL byte"
    return None


def bad_path(path: str) -> str | None:
    """Why ``path`` (relative, '/'-separated; "" is the root) is not a path inside a tree, or None."""
    if path == "":
        return None
    for part in path.split("/"):
        why = bad_name(part)
        if why is not None:
            return why
    return None
