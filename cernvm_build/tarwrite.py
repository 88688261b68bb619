"""The one tar writer: ``cvmfs export X.tar``, container layers, OCI archives and docker-archives.

PAX format, deterministic: members in the order given (sources are sorted), empty user and group
names, numeric owners as given, extended attributes as ``SCHILY.xattr.*`` PAX records (sorted),
PAX records for names and link targets over 100 bytes, and a PAX ``mtime`` with nanoseconds when
the mtime is kept and has them. The caller chooses one fixed mtime for every member, or keeps each
entry's own.

One mapping of file types, the same as the tree writer's: directories (``name/``), regular files,
hard links (the first path of a link group in the stream carries the content, later ones are
``LNKTYPE`` to it), symlinks, FIFOs, character and block devices (a tar is data: device entries are
carried, only writing them to disk is opt-in). Sockets are skipped, reported in the ``TreeReport``
and logged: a tar cannot carry them, and turning them into something else would be a lie.
Paths are checked again (no empty, ``.``, ``..`` or NUL components): a member like ``../x`` is never
written, whoever asks. The stream must also be a tree: every member's parent is a directory written
before it (on the stack of open directories, as in ``treewrite``), and a name never follows itself in
its directory. So "symlink ``x``, then ``x/file``" or "symlink ``x``, then file ``x``" are refused, not
left to the extractor to resolve (some follow the symlink).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from typing import BinaryIO

from .errors import CernVMError
from .tree import BLOCK, CHAR, DIR, FIFO, FILE, SOCKET, SOCKET_REASON, SYMLINK, Entry, TreeReport, bad_path

_TAR_TYPE = {
    DIR: tarfile.DIRTYPE,
    FILE: tarfile.REGTYPE,
    SYMLINK: tarfile.SYMTYPE,
    CHAR: tarfile.CHRTYPE,
    BLOCK: tarfile.BLKTYPE,
    FIFO: tarfile.FIFOTYPE,
}
_BLOCK = 1 << 20
_ZEROS = b"\0" * tarfile.BLOCKSIZE


def skip_reason(entry: Entry) -> str | None:
    """Why ``entry`` is never written to a tar (or, the same rule, to a tree on disk), or None."""
    return SOCKET_REASON if entry.kind == SOCKET else None


def tar_info(entry: Entry, *, mtime: int | None, hardlink_to: str | None = None) -> tarfile.TarInfo:
    """The tar header for ``entry`` (path "" is the root, ``./``); ``mtime`` None keeps the entry's."""
    name = entry.path or "."
    ti = tarfile.TarInfo(name + "/" if entry.kind == DIR else name)
    ti.mode = entry.mode & 0o7777
    ti.uid, ti.gid = entry.uid, entry.gid
    ti.uname = ti.gname = ""
    ti.mtime = entry.mtime if mtime is None else mtime
    if hardlink_to is not None:
        ti.type = tarfile.LNKTYPE
        ti.linkname = hardlink_to
        ti.size = 0
    else:
        ti.type = _TAR_TYPE[entry.kind]
        ti.size = entry.size if entry.kind == FILE else 0
        ti.linkname = entry.target if entry.kind == SYMLINK else ""
        if entry.kind in (CHAR, BLOCK):
            ti.devmajor, ti.devminor = entry.rdev
    pax = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in sorted(entry.xattrs.items())}
    if mtime is None and entry.mtime_nsec:
        pax["mtime"] = f"{entry.mtime}.{entry.mtime_nsec:09d}".rstrip("0")
    if pax:
        ti.pax_headers = pax
    return ti


_USTAR_TYPE: dict[str, bytes] = dict(_TAR_TYPE)
_OCTAL_8 = 8**7  # the most an 8-byte numeric field holds as 7 octal digits
_OCTAL_12 = 8**11
_EMPTY_DEVICE = b"\0" * 16


def header(entry: Entry, *, mtime: int | None, hardlink_to: str | None = None) -> bytes:
    """The tar header of ``entry``: the bytes ``tar_info(...).tobuf(PAX_FORMAT, "utf-8")`` gives,
    built directly when no PAX record is needed (ASCII names and targets of at most 100 bytes,
    numbers that fit, no xattrs, no sub-second mtime kept) -- most entries of an OS tree. tarfile
    spends about four times as long on a header, which shows on trees of small files."""
    name = entry.path or "."
    if entry.kind == DIR:
        name += "/"
    when = entry.mtime if mtime is None else mtime
    if hardlink_to is not None:
        kind, size, link = b"1", 0, hardlink_to
    else:
        kind = _USTAR_TYPE.get(entry.kind, b"")
        size = entry.size if entry.kind == FILE else 0
        link = entry.target if entry.kind == SYMLINK else ""
    if (
        not kind
        or entry.xattrs
        or (mtime is None and entry.mtime_nsec)
        or len(name) > 100
        or len(link) > 100
        or not name.isascii()
        or not link.isascii()
        or not (0 <= entry.uid < _OCTAL_8 and 0 <= entry.gid < _OCTAL_8)
        or not (0 <= size < _OCTAL_12 and 0 <= when < _OCTAL_12)
        or (entry.kind in (CHAR, BLOCK) and not all(0 <= n < _OCTAL_8 for n in entry.rdev))
    ):
        return tar_info(entry, mtime=mtime, hardlink_to=hardlink_to).tobuf(tarfile.PAX_FORMAT, "utf-8")
    if entry.kind in (CHAR, BLOCK) and hardlink_to is None:
        device = b"%07o\0%07o\0" % entry.rdev
    else:
        device = _EMPTY_DEVICE
    buf = b"".join(
        (
            name.encode("ascii").ljust(100, b"\0"),
            b"%07o\0%07o\0%07o\0%011o\0%011o\0        "
            % (entry.mode & 0o7777, entry.uid, entry.gid, size, when),
            kind,
            link.encode("ascii").ljust(100, b"\0"),
            tarfile.POSIX_MAGIC,
            b"\0" * 64,  # empty user and group names
            device,
            b"\0" * 167,  # empty prefix, and the block's padding
        )
    )
    return b"%s%06o\0%s" % (buf[:148], sum(buf), buf[155:])


class TarWriter:
    """Emit a tar stream of entries through ``emit``.

    ``add`` writes one entry (reading a regular file's content through ``open``); ``end`` writes the
    end-of-archive marker, padded to a whole 10 KiB record when ``whole_record`` (what ``tar`` and
    Python's tarfile write). The counters say what went in; ``report`` what was skipped and what
    carries power (setuid/setgid, xattrs).
    """

    def __init__(
        self,
        emit: Callable[[bytes | bytearray], object],
        *,
        mtime: int | None,
        where: str,
        error: type[CernVMError] = CernVMError,
        report: TreeReport | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._emit, self.mtime, self.where, self.error = emit, mtime, where, error
        self.report = report if report is not None else TreeReport()
        self.progress = progress
        self.offset = 0
        self.files = self.dirs = self.symlinks = self.hardlinks = self.specials = 0
        self.content_bytes = 0
        self._first_of_link: dict[object, str] = {}
        #: the open directories, root first: [path, name of the last child written in it]
        self._dirs: list[list[str | None]] = [["", None]]

    def emit(self, data: bytes | bytearray) -> None:
        self.offset += len(data)
        self._emit(data)

    def _refuse(self, entry: Entry, why: str) -> CernVMError:
        return self.error(
            f"{self.where}: {entry.path!r}: {why}",
            hint="the tree is inconsistent or hostile; the tar is not written",
        )

    def _check_place(self, entry: Entry) -> None:
        """``entry`` sits in a directory written before it, under a name not just written there."""
        if entry.path in ("", "."):  # the root itself (a single node, for the hub's small publishes)
            return
        why = bad_path(entry.path)
        if why is not None:
            raise self._refuse(entry, why)
        parent, _, name = entry.path.rpartition("/")
        dirs = self._dirs
        while len(dirs) > 1 and dirs[-1][0] != parent:
            dirs.pop()
        if dirs[-1][0] != parent:
            raise self._refuse(
                entry,
                f"its parent {parent!r} is not a directory written before it "
                "(a symlink, a file, or out of order)",
            )
        if dirs[-1][1] == name:
            raise self._refuse(entry, "the name appears twice in its directory (a duplicate entry)")
        dirs[-1][1] = name
        if entry.kind == DIR:
            dirs.append([entry.path, None])

    def add(self, entry: Entry, open_content: Callable[[Entry], BinaryIO]) -> None:
        self._check_place(entry)
        reason = skip_reason(entry)
        if reason is not None:
            self.report.skip(entry.path, reason)
            return
        self.report.note(entry)
        link_to = None
        if entry.kind == FILE and entry.link_id is not None:
            link_to = self._first_of_link.get(entry.link_id)
            if link_to is None:
                self._first_of_link[entry.link_id] = entry.path
        self.emit(header(entry, mtime=self.mtime, hardlink_to=link_to))
        if link_to is not None:
            self.hardlinks += 1
        elif entry.kind == FILE:
            self.files += 1
            self._copy(entry, open_content)
            self.content_bytes += entry.size
        elif entry.kind == DIR:
            self.dirs += 1
        elif entry.kind == SYMLINK:
            self.symlinks += 1
        else:
            self.specials += 1

    def _copy(self, entry: Entry, open_content: Callable[[Entry], BinaryIO]) -> None:
        if not entry.size:  # an empty file has nothing to read (a million of them add up)
            return
        remaining = entry.size
        with open_content(entry) as f:
            while remaining > 0:
                block = f.read(min(_BLOCK, remaining))
                if not block:
                    break
                self.emit(block)
                remaining -= len(block)
                if self.progress is not None:
                    self.progress(len(block))
            extra = f.read(1) if remaining == 0 else b""
        if remaining or extra:
            raise self.error(
                f"{self.where}: {entry.path}: content size differs from the listed size {entry.size}",
                hint="the tree changed while it was being read; run the command again",
            )
        pad = -entry.size % tarfile.BLOCKSIZE
        if pad:
            self.emit(_ZEROS[:pad])

    def end(self, *, whole_record: bool = False) -> None:
        self.emit(_ZEROS * 2)
        if whole_record:
            pad = -self.offset % tarfile.RECORDSIZE
            if pad:
                self.emit(b"\0" * pad)
