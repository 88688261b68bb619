"""A cpio "newc" archive (what the kernel unpacks as initramfs), written in Python.

Members are sorted by path, owned by root, stamped with one fixed time and numbered in order, so the
same tree gives the same bytes. Members are declared (file from the host, inline bytes, symlink,
folder, device node) instead of copied into a staging folder first: no root is needed for /dev/console.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO


@dataclass(frozen=True)
class Member:
    path: str  # inside the archive, without a leading slash
    mode: int  # full st_mode (type + permission bits)
    source: Path | None = None  # file contents from the host
    data: bytes = b""  # or inline contents / symlink target
    rdev: tuple[int, int] = (0, 0)

    def payload(self) -> bytes:
        if self.source is not None:
            return self.source.read_bytes()
        return self.data


class Tree:
    """The set of members of an archive; later additions replace earlier ones at the same path."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}

    def _parents(self, path: str) -> None:
        for parent in reversed(PurePosixPath(path).parents):
            p = str(parent)
            if p not in (".", "") and p not in self.members:
                self.members[p] = Member(p, stat.S_IFDIR | 0o755)

    def add(self, m: Member) -> None:
        path = m.path.strip("/")
        self._parents(path)
        self.members[path] = Member(path, m.mode, m.source, m.data, m.rdev)

    def dir(self, path: str, perm: int = 0o755) -> None:
        self.add(Member(path, stat.S_IFDIR | perm))

    def file(self, path: str, source: Path, perm: int | None = None) -> None:
        if perm is None:
            perm = 0o755 if source.stat().st_mode & 0o111 else 0o644
        self.add(Member(path, stat.S_IFREG | perm, source=source))

    def data(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self.add(Member(path, stat.S_IFREG | perm, data=data))

    def symlink(self, path: str, target: str) -> None:
        self.add(Member(path, stat.S_IFLNK | 0o777, data=target.encode()))

    def chardev(self, path: str, major: int, minor: int, perm: int = 0o600) -> None:
        self.add(Member(path, stat.S_IFCHR | perm, rdev=(major, minor)))

    def tree(self, dest: str, src: Path) -> None:
        """Add the host folder ``src`` (files, folders, symlinks) below ``dest``."""
        for p in sorted(src.rglob("*")):
            rel = f"{dest.strip('/')}/{p.relative_to(src).as_posix()}"
            if p.is_symlink():
                self.symlink(rel, str(p.readlink()))
            elif p.is_dir():
                self.dir(rel)
            elif p.is_file():
                self.file(rel, p)

    def size(self) -> int:
        return sum(
            (m.source.stat().st_size if m.source is not None else len(m.data)) for m in self.members.values()
        )


#: the last time (and size) a newc header's 8 hex digits hold: 2106-02-07T06:28:15Z
MAX_FIELD = 0xFFFFFFFF


def _header(ino: int, m: Member, size: int, mtime: int, namesize: int) -> bytes:
    fields = (ino, m.mode, 0, 0, 2 if stat.S_ISDIR(m.mode) else 1, mtime, size, 0, 0, *m.rdev, namesize, 0)
    if not all(0 <= f <= MAX_FIELD for f in fields):
        # '%08X' of 2**32 is 9 digits: the header shifted and the kernel unpacked junk (callers check
        # the build time first, with a message; this is the last guard)
        raise ValueError(f"{m.path}: a cpio newc field is out of range: {fields}")
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_newc(members: Iterable[Member], out: BinaryIO, mtime: int) -> int:
    """Write ``members`` sorted by path; returns the number of bytes written."""
    total = 0

    def emit(b: bytes) -> None:
        nonlocal total
        out.write(b)
        total += len(b)

    for ino, m in enumerate(sorted(members, key=lambda m: m.path.encode()), start=1):
        name = m.path.encode() + b"\0"
        body = b"" if stat.S_ISDIR(m.mode) or stat.S_ISCHR(m.mode) else m.payload()
        head = _header(ino, m, len(body), mtime, len(name))
        emit(head + name + _pad(len(head) + len(name)))
        emit(body + _pad(len(body)))
    trailer = b"TRAILER!!!\0"
    head = _header(0, Member("", 0), 0, 0, len(trailer))
    emit(head + trailer + _pad(len(head) + len(trailer)))
    return total
