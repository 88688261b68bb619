"""The read-only FUSE filesystem on the kernel's protocol (``fuse_lowlevel``): requests name inodes.

The inode numbers are the catalog's (``DirEntry.inode``: stable per path, shared by hard links, the
root's is 1 as FUSE wants). For each inode the kernel holds a reference to (a lookup or a
READDIRPLUS entry) we keep its path and the count, until the kernel's FORGET: that is what the
kernel remembers, which it bounds itself. Entries are cached (bounded) on top, by inode.

A mounted revision never changes, so every reply tells the kernel to keep it for long: entries,
negative entries and attributes for ``TIMEOUT``, pages across opens (``keep_cache``), directory
listings (``cache_readdir``), symlink targets (``FUSE_CAP_CACHE_SYMLINKS``).
"""

from __future__ import annotations

import collections
import errno
import itertools
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator

from .. import lazylog
from ..errors import CernVMError
from . import fuse_lowlevel as ll
from .catalog import DirEntry, chunk_at
from .catalog_rows import FETCH, FLAG_NESTED_MOUNTPOINT
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
from .store import Phases

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import Any

log = lazylog.get(__name__)

TIMEOUT = 3600  # seconds
ROOT = 1
FUSE_CAP_CACHE_SYMLINKS = 1 << 23
FUSE_CAP_NO_OPEN_SUPPORT = 1 << 17
FUSE_CAP_NO_OPENDIR_SUPPORT = 1 << 24
FUSE_CAP_READDIRPLUS_AUTO = 1 << 14
#: listings being read without OPENDIR, by inode (each dropped once read to its end)
OPEN_LISTINGS = 64
#: a directory of at most this many entries is read in one query and listed from a list (most are:
#: no stream and generator chain per request); a larger one is streamed, FETCH entries at a time
LISTED_WHOLE = 1024
#: a listing's children given to the kernel with their attributes (READDIRPLUS: each one an inode
#: the kernel and we keep until its FORGET); the ones after it go bare (their inode and type, no
#: reference), so listing a huge directory keeps no path per entry (a million: 286 MB peak RSS
#: without this, 73 with it, 72 with libfuse's READDIRPLUS_AUTO)
GIVEN_PER_LISTING = 1024
#: descriptors on inflated copies kept open without OPEN, most recently used (see _Descriptors)
KEPT_FDS = 256


def _error(err: int) -> OSError:
    return OSError(err, os.strerror(err))


def packed_entry(e: DirEntry) -> bytes:
    """The ``struct fuse_entry_out`` of an entry (``fuse_lowlevel.ENTRY``), kept by the kernel for
    ``TIMEOUT``."""
    mode = e.mode
    kind = e.kind  # DirEntry.rdev and shown_size inline (this runs for every entry listed)
    if kind in (stat.S_IFREG, stat.S_IFDIR):
        size, rdev = e.size, 0
    elif kind == stat.S_IFLNK:
        size, rdev = shown_size(e), 0
    else:
        size, rdev = 0, e.size & 0xFFFFFFFF  # the kernel's fuse_attr.rdev is a u32 (as libfuse cast)
    sec, nsec = divmod(e.mtime_ns, 1_000_000_000)
    ino = e.inode
    return ll.ENTRY.pack(
        ino, 0, TIMEOUT, TIMEOUT, 0, 0, ino, size, (size + 511) >> 9, sec, sec, sec, nsec, nsec, nsec,
        mode, e.linkcount, e.uid, e.gid, rdev, 1 << 16, 0,
    )  # fmt: skip


def add_entryplus(buf: bytearray, pos: int, end: int, e: DirEntry, off: int, name: bytes) -> int:
    """``fuse_lowlevel.add_direntry`` of ``e`` with its attributes (READDIRPLUS), within ``buf``'s
    first ``end`` bytes: its ``struct fuse_direntplus`` packed in one go (``ll.DIRENTPLUS``), not
    ``packed_entry``'s bytes copied in after it (~9,000 of a listed entry's ~21,000 instructions).
    Its first 128 bytes are ``packed_entry(e)``: the same fields, computed the same way (a test
    compares them). Returns its size (more than is left: not added)."""
    namelen = len(name)
    size = (152 + namelen + 7) & ~7
    if size > end - pos:
        return size
    kind = e.kind
    if kind in (stat.S_IFREG, stat.S_IFDIR):
        fsize, rdev = e.size, 0
    elif kind == stat.S_IFLNK:
        fsize, rdev = shown_size(e), 0
    else:
        fsize, rdev = 0, e.size & 0xFFFFFFFF
    sec, nsec = divmod(e.mtime_ns, 1_000_000_000)
    ino = e.inode
    ll.DIRENTPLUS.pack_into(
        buf, pos,
        ino, 0, TIMEOUT, TIMEOUT, 0, 0, ino, fsize, (fsize + 511) >> 9, sec, sec, sec, nsec, nsec, nsec,
        e.mode, e.linkcount, e.uid, e.gid, rdev, 1 << 16, 0,
        ino, off, namelen, kind >> 12,
    )  # fmt: skip
    p = pos + 152
    buf[p : p + namelen] = name
    p += namelen
    buf[p : pos + size] = ll.PADS[pos + size - p]
    return size


def _bare_entry(ino: int, mode: int) -> bytes:
    """An entry with only its inode and type: ``.``/``..`` and a nested catalog's mount point in a
    listing (no inode reference is given to the kernel: ``ino`` 0 at the top)."""
    return ll.ENTRY.pack(0, 0, 0, 0, 0, 0, ino, 0, 0, 0, 0, 0, 0, 0, 0, mode, 0, 0, 0, 0, 0, 0)


#: the answer to a lookup of a name that is not there, kept by the kernel for TIMEOUT
NEGATIVE = ll.ENTRY.pack(0, 0, TIMEOUT, TIMEOUT, *[0] * 18)


class _Listing:
    """A directory being read: ``.``, ``..``, then its children, at offsets 0, 1, 2, ... The
    children at hand are a list, ``window``, from child ``base`` on: all of them for a directory
    read in one query (``LISTED_WHOLE``: most), else the last batch of a stream (``start`` makes it;
    a seek back starts it again). ``total``: the number of children, once known."""

    __slots__ = ("base", "ino", "lock", "path", "start", "stream", "total", "window")

    def __init__(
        self, path: str, ino: int, children: list[DirEntry] | None, start: Callable[[], Iterator[DirEntry]]
    ):
        self.path = path
        self.ino = ino
        self.start = None if children is not None else start
        self.stream: Iterator[DirEntry] | None = None
        self.window: list[DirEntry] = children if children is not None else []
        self.base = 0
        self.total: int | None = len(children) if children is not None else None
        self.lock = threading.Lock()

    def dot_inode(self, pos: int) -> int:
        """``.`` (0) is the directory itself (never a hard link: its inode is its path's)."""
        return self.ino if pos == 0 else dot_inode(self.path, "..")

    def child(self, k: int) -> DirEntry | None:
        """Child ``k``, or None past the end."""
        i = k - self.base
        if not 0 <= i < len(self.window):
            self.at(k)
            i = k - self.base
            if i >= len(self.window):
                return None
        return self.window[i]

    def at(self, k: int) -> None:
        """Make ``window`` the batch holding child ``k`` (of a streamed listing; past the end: the
        window is left short of it and ``total`` known)."""
        if self.start is None:
            return
        if k < self.base or (self.stream is None and self.total is None):
            self.stream, self.window, self.base = self.start(), [], 0
        while k >= self.base + len(self.window) and self.stream is not None:
            self.base += len(self.window)
            self.window = list(itertools.islice(self.stream, FETCH))
            if len(self.window) < FETCH:
                self.stream, self.total = None, self.base + len(self.window)


class _OpenFile:
    """An open regular file read from the plain cache: a descriptor per object (the file's, or one
    per chunk as the reader reaches it), kept until release."""

    __slots__ = ("entry", "fds", "lock")

    def __init__(self, entry: DirEntry):
        self.entry = entry
        self.fds: dict[int, int] = {}  # object index (0, or the chunk's) -> descriptor
        self.lock = threading.Lock()

    def fd(self, repo: Repository, i: int) -> int:
        fd = self.fds.get(i)
        if fd is None:
            with self.lock:
                fd = self.fds.get(i)
                if fd is None:
                    fd = self.fds[i] = repo.inflated_fd(self.entry, i)
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class _Descriptors:
    """Descriptors on inflated copies by (inode, object index), the ``KEPT_FDS`` most recently used
    kept open. Without OPEN (see ``init``) READs come with no handle: a file read in many pieces
    (128 KiB a READ) would otherwise open, check and close its copy for each. A descriptor evicted
    while a reply is being sent from it is closed when that reply is done, not before (its number
    could otherwise name another file by then)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._recs: collections.OrderedDict[tuple[int, int], list[int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: tuple[int, int], make: Callable[[], int]) -> list[int]:
        """The record ``[fd, readers, kept]`` of ``key`` (made by ``make()`` on a miss), counted as
        in use until ``give``: on every warm READ, so a plain call pair, not a context manager."""
        with self._lock:
            rec = self._recs.get(key)
            if rec is not None:
                rec[1] += 1
                self._recs.move_to_end(key)
                return rec
        fd = make()
        with self._lock:
            rec = self._recs.get(key)
            if rec is not None:  # another reader made one meanwhile
                os.close(fd)
                rec[1] += 1
                return rec
            rec = self._recs[key] = [fd, 1, 1]
            while len(self._recs) > self.limit:
                _, old = self._recs.popitem(last=False)
                old[2] = 0
                if not old[1]:
                    os.close(old[0])
            return rec

    def give(self, rec: list[int]) -> None:
        with self._lock:
            rec[1] -= 1
            if not rec[1] and not rec[2]:
                os.close(rec[0])

    def close(self) -> None:
        with self._lock:
            for rec in self._recs.values():
                rec[2] = 0
                if not rec[1]:
                    os.close(rec[0])
            self._recs.clear()


class InodeFilesystem(ll.Filesystem):
    def __init__(
        self,
        repo: Repository,
        *,
        on_ready: Callable[[], None] | None = None,
        serving: Serving = Serving(),
    ):
        self.repo = repo
        self.on_ready = on_ready
        self._lock = threading.Lock()
        self._paths: dict[int, list[Any]] = {ROOT: ["/", 1]}  # ino -> [path, references by the kernel]
        self._entries: dict[int, DirEntry] = {}
        self._files: dict[int, DirEntry] = {}
        self._open: dict[int, _OpenFile] = {}  # with a plain cache: the open files' descriptors
        self._kept = _Descriptors(KEPT_FDS)  # the same without OPEN (see init)
        self._plain = repo.store.plain_cache is not None
        self._no_open = self._no_opendir = False
        self._listings: collections.OrderedDict[int, _Listing] = collections.OrderedDict()
        self._dirs: dict[int, _Listing] = {}
        self._fh = itertools.count(1)
        self._prefetch = serving.prefetcher(repo, self._entries)
        self._magic = serving.magic_xattrs
        #: whether there are attributes to show at all (else ``serve_lowlevel`` answers the requests
        #: ENOSYS without calling us, and the kernel stops asking)
        self.xattrs = serving.any_xattrs(repo)

    # -- life cycle ------------------------------------------------------------------------------
    def init(self, conn: ll.Conn) -> None:
        conn.want |= conn.capable & FUSE_CAP_CACHE_SYMLINKS
        # No splicing of a ``reply_fd`` read from the copy into /dev/fuse (one kernel copy instead
        # of a pread and a write, but a pipe and three system calls per read): tried with libfuse's
        # FUSE_CAP_SPLICE_WRITE, 92 MB of large files read warm in 1 MiB READs, daemon CPU,
        # alternated rounds: 4-13 % less from an old cache, 20 % more in bench/fuse_daemon.py
        # (copies written that round) on a loaded host (issue 13): no clear gain to keep.
        # READDIRPLUS for every listing request, not only the first of a directory (libfuse's default "auto",
        # kept in ``fuse_lowlevel.DEFAULT_WANT``): a listing longer than one reply (4 KiB before kernel 6.14,
        # as the guest's 6.1) then gives the kernel every entry with its attributes, and the stat/open of each
        # that follows (Python's imports after a FileFinder listing, ls -l) asks no LOOKUP. Import storm of
        # cloud-init with 4 KiB replies: 925 listing + LOOKUP requests -> 788; walking /usr: no more. A huge
        # directory's entries past GIVEN_PER_LISTING go without attributes (its memory).
        conn.want &= ~FUSE_CAP_READDIRPLUS_AUTO
        # With the plain cache a read needs no state from open: answering the first OPEN with
        # ENOSYS makes the kernel send no OPEN or RELEASE again (two of a small file's three
        # requests) and keep each file's pages across opens (FOPEN_KEEP_CACHE is its no-open
        # default). Reads then come with fh 0 and take their descriptor themselves.
        self._no_open = self._plain and bool(conn.capable & FUSE_CAP_NO_OPEN_SUPPORT)
        # The same for directories: no OPENDIR/RELEASEDIR (the kernel keeps listings, its no-opendir
        # default); a listing is then kept by inode while it is read (see _listing).
        self._no_opendir = bool(conn.capable & FUSE_CAP_NO_OPENDIR_SUPPORT)
        if self.on_ready is not None:
            self.on_ready()

    def destroy(self) -> None:
        self._prefetch.close()
        self._kept.close()
        self.repo.close()

    # -- inodes ----------------------------------------------------------------------------------
    def _remember(self, *entries: DirEntry) -> None:
        """Keep ``entries`` by inode for GETATTR/READ/READLINK (bounded: cleared when full). ``lookup``
        has its own inline copy of this and of ``_referenced`` (one entry, ~1.5 µs a LOOKUP): change
        both together."""
        cache = self._entries
        if len(cache) + len(entries) > ENTRY_CACHE:
            cache.clear()
        for e in entries:
            cache[e.inode] = e

    def _referenced(self, entries: Iterable[DirEntry]) -> None:
        """The kernel got ``entries`` (a lookup's, a READDIRPLUS reply's): keep each one's path
        until it forgets it (one lock per reply). Inlined in ``lookup``: keep the two the same."""
        with self._lock:
            paths = self._paths
            for e in entries:
                rec = paths.get(e.inode)
                if rec is None:
                    paths[e.inode] = [e.path, 1]
                else:
                    rec[1] += 1

    def forget(self, ino: int, nlookup: int) -> None:
        with self._lock:
            rec = self._paths.get(ino)
            if rec is None:
                return
            rec[1] -= nlookup
            if rec[1] <= 0 and ino != ROOT:
                del self._paths[ino]
                self._entries.pop(ino, None)

    def _path(self, ino: int) -> str:
        rec = self._paths.get(ino)
        if rec is None:
            raise _error(errno.ESTALE)
        return str(rec[0])

    def _lookup(self, path: str) -> DirEntry | None:
        try:
            return self.repo.lookup(path)
        except CernVMError as e:
            raise _os_error(e) from e

    def _entry(self, ino: int) -> DirEntry:
        hit = self._entries.get(ino)
        if hit is not None:
            return hit
        entry = self._lookup(self._path(ino))
        if entry is None:
            raise _error(errno.ENOENT)
        self._remember(entry)
        return entry

    # -- metadata --------------------------------------------------------------------------------
    def lookup(self, req: int, parent: int, name: bytes) -> None:
        # _path and _lookup inline: the most frequent request in a booting guest, where each
        # costs a millisecond or two of the one CPU
        rec = self._paths.get(parent)
        if rec is None:
            raise _error(errno.ESTALE)
        base = rec[0]
        path = ("" if base == "/" else base) + "/" + name.decode("utf-8", "surrogateescape")
        try:
            entry = self.repo.lookup_normal(path)
        except CernVMError as e:
            raise _os_error(e) from e
        if entry is None:  # a negative entry (inode 0), also kept for TIMEOUT
            ll.reply_entry(req, NEGATIVE)
            return
        ino = entry.inode  # _remember and _referenced inline, for this one entry: keep them the same
        cache = self._entries
        if len(cache) >= ENTRY_CACHE:
            cache.clear()
        cache[ino] = entry
        with self._lock:
            rec = self._paths.get(ino)
            if rec is None:
                self._paths[ino] = [entry.path, 1]
            else:
                rec[1] += 1
        ll.reply_entry(req, packed_entry(entry))

    def getattr(self, req: int, ino: int) -> None:
        ll.reply_attr(req, packed_entry(self._entry(ino)), TIMEOUT)

    def readlink(self, req: int, ino: int) -> None:
        entry = self._entry(ino)
        if not entry.is_symlink:
            raise _error(errno.EINVAL)
        ll.reply_readlink(req, _target(entry).encode("utf-8", "surrogateescape"))

    def _new_listing(self, entry: DirEntry) -> _Listing:
        """``entry``'s listing: taken from the prefetcher if it read it ahead, else read in one
        query when small (its entries remembered, handed to the prefetcher), else streamed
        (``fuse.children`` does the same per entry)."""
        path = entry.path
        kids = self._prefetch.take_children(path)
        if kids is None:
            try:
                kids = self.repo.listing(entry, LISTED_WHOLE)
            except CernVMError as e:
                raise _os_error(e) from e
            if kids is not None:
                self._prefetch.listed(path, kids)
        if kids is not None:
            self._remember(*(c for c in kids if not c.flags & FLAG_NESTED_MOUNTPOINT))

        def start() -> Iterator[DirEntry]:
            stream = children(self.repo, entry, self._prefetch, self._remember)
            return (c for _, c in itertools.islice(stream, 2, None) if c is not None)

        return _Listing(path, entry.inode, kids, start)

    def _listing(self, ino: int) -> _Listing:
        """Without OPENDIR: the listing of directory ``ino`` being read (made on its first READDIR;
        a reader at another offset seeks in it, as on an open handle)."""
        with self._lock:
            listing = self._listings.get(ino)
            if listing is not None:
                self._listings.move_to_end(ino)
                return listing
        entry = self._entry(ino)
        if not entry.is_dir:
            raise _error(errno.ENOTDIR)
        listing = self._new_listing(entry)
        with self._lock:
            self._listings[ino] = listing
            while len(self._listings) > OPEN_LISTINGS:
                self._listings.popitem(last=False)
        return listing

    def opendir(self, req: int, ino: int, fi: ll.FileInfo) -> None:
        entry = self._entry(ino)
        if not entry.is_dir:
            raise _error(errno.ENOTDIR)
        if self._no_opendir:  # see init
            raise _error(errno.ENOSYS)
        listing = self._new_listing(entry)
        fh = next(self._fh)
        self._dirs[fh] = listing
        fi.fh = fh
        fi.keep_cache = 1  # with cache_readdir: the kernel keeps the listing
        fi.cache_readdir = 1
        ll.reply_open(req, fi)

    def readdir(self, req: int, ino: int, size: int, off: int, fi: ll.FileInfo, plus: bool) -> None:
        listing = self._dirs.get(fi.fh) if fi.fh else self._listing(ino)
        if listing is None:
            raise _error(errno.EBADF)
        total = listing.total
        if total is not None and off >= total + 2:
            # The request after the last entry: the kernel asks once more for every directory
            # (its listing cache is complete only after an empty reply). Answered without a buffer;
            # read to its end, the kernel keeps the listing from here on.
            if not fi.fh:
                with self._lock:
                    if self._listings.get(ino) is listing:
                        del self._listings[ino]
            ll.reply_buf(req, None, 0)
            return
        buf = ll.reply_buffer(size)
        used = 0
        given: list[DirEntry] = []  # entries whose attributes the kernel got (referenced below)
        add = ll.add_direntry
        with listing.lock:
            pos = off
            while pos < 2:  # "." and "..": no attributes (the kernel skips them)
                packed = _bare_entry(listing.dot_inode(pos), stat.S_IFDIR)
                n = add(req, buf, used, b"." * (pos + 1), packed, pos + 1, plus, size)
                if n > size - used:
                    break
                used += n
                pos += 1
            else:
                # the children, each packed straight into the buffer
                add_plus = add_entryplus
                while (e := listing.child(pos - 2)) is not None:
                    raw = e.name.encode("utf-8", "surrogateescape")
                    if e.flags & FLAG_NESTED_MOUNTPOINT or pos - 2 >= GIVEN_PER_LISTING or not plus:
                        # a nested catalog's mount point: looked up on its own (its root is shown);
                        # past GIVEN_PER_LISTING: looked up when used, as after a READDIR
                        n = add(req, buf, used, raw, _bare_entry(e.inode, e.mode), pos + 1, plus, size)
                        give = False
                    else:
                        n, give = add_plus(buf, used, size, e, pos + 1, raw), True
                    if n > size - used:
                        break
                    used += n
                    pos += 1
                    if give:
                        given.append(e)
        if given:
            self._referenced(given)
        ll.reply_buf(req, buf, used)

    def releasedir(self, req: int, ino: int, fi: ll.FileInfo) -> None:
        self._dirs.pop(fi.fh, None)
        ll.reply_err(req, 0)

    def statfs(self, req: int, ino: int) -> None:
        ll.reply_statfs(req, statfs_numbers(self.repo))

    # -- contents --------------------------------------------------------------------------------
    def open(self, req: int, ino: int, fi: ll.FileInfo) -> None:
        if fi.flags & os.O_ACCMODE != os.O_RDONLY:
            raise _error(errno.EROFS)
        entry = self._entry(ino)
        if not stat.S_ISREG(entry.mode):
            raise _error(errno.EISDIR if entry.is_dir else errno.EINVAL)
        if self._no_open:  # see init (the mount is read-only: the kernel refuses writes itself)
            raise _error(errno.ENOSYS)
        # before the copy is made below: the in-order prefetcher's quiet ends on an open of a file
        # not cached yet (``InOrderPrefetcher.opened``), and its fetches ahead overlap this one
        self._prefetch.opened(entry)
        fh = next(self._fh)
        if self._plain and not entry.is_external:
            handle = _OpenFile(entry)
            if not entry.is_chunked:  # fetched whole on open, as the real client does
                try:
                    handle.fd(self.repo, 0)
                except CernVMError as e:
                    raise _os_error(e) from e
            self._open[fh] = handle
        else:
            self._files[fh] = entry
        fi.fh = fh
        fi.keep_cache = 1  # contents of a mounted revision never change
        ll.reply_open(req, fi)

    def read(self, req: int, ino: int, size: int, off: int, fi: ll.FileInfo) -> None:
        handle = self._open.get(fi.fh) if fi.fh else None
        if handle is not None:
            self._read_plain(req, ino, handle.entry, handle, size, off)
            return
        if self._no_open:
            entry = self._entries.get(ino) or self._entry(ino)
            if off == 0:  # most likely the file was just opened
                self._prefetch.opened(entry)
            self._read_plain(req, ino, entry, None, size, off)
            return
        entry = self._files.get(fi.fh) or self._entry(ino)
        try:
            data = self.repo.read(entry, off, size)
        except CernVMError as e:
            raise _os_error(e) from e
        ll.reply_buf(req, data)
        if entry.is_chunked:
            self._prefetch.next_chunk(entry, off + len(data))

    def _read_plain(
        self, req: int, ino: int, entry: DirEntry, handle: _OpenFile | None, size: int, off: int
    ) -> None:
        """A read from the inflated copies: one ``pread`` of the copy's descriptor unless the read
        spans two chunks. The descriptor is the open ``handle``'s,
        else one kept by (inode, object) and held while the reply is sent (``_Descriptors``)."""
        size = max(0, min(size, entry.size - off))
        try:
            i, pos = 0, off
            if (
                handle is None
                and off == 0
                and size == entry.size
                and not entry.is_chunked
                and size <= ll.FRESH_MAX
            ):
                # A small file read whole, the usual read: its bytes in one read of the copy
                # that also checks it (``PlainCache.read_whole``), no descriptor kept, without
                # ``read``'s layers and its copy of the bytes; on a miss made without a second
                # look (``Revision.whole``). A larger one goes by descriptor: ``reply_fd`` reads
                # it into a kept buffer, not fresh pages.
                ll.reply_buf(req, self.repo.whole(entry), size)
                return
            if entry.is_chunked:
                i = max(0, chunk_at(entry.chunks, off))
                chunk = entry.chunks[i]
                pos = off - chunk.offset
                if not (chunk.offset <= off and off + size <= chunk.offset + chunk.size):
                    # across a chunk boundary (or a damaged chunk list, which read reports)
                    ll.reply_buf(req, self.repo.read(entry, off, size))
                    self._prefetch.next_chunk(entry, off + size)
                    return
            if handle is not None:
                ll.reply_fd(req, handle.fd(self.repo, i), pos, size)
            else:
                rec = self._kept.take((ino, i), lambda: self.repo.inflated_fd(entry, i))
                try:
                    ll.reply_fd(req, rec[0], pos, size)
                finally:
                    self._kept.give(rec)
        except CernVMError as e:
            raise _os_error(e) from e
        if entry.is_chunked:
            self._prefetch.next_chunk(entry, off + size)

    def release(self, req: int, ino: int, fi: ll.FileInfo) -> None:
        self._files.pop(fi.fh, None)
        handle = self._open.pop(fi.fh, None)
        if handle is not None:
            handle.close()
        ll.reply_err(req, 0)

    # -- extended attributes ---------------------------------------------------------------------
    @staticmethod
    def _reply_sized(req: int, data: bytes, size: int) -> None:
        """getxattr/listxattr: size 0 asks for the length; a smaller buffer is ERANGE."""
        if size == 0:
            ll.reply_xattr(req, len(data))
        elif len(data) > size:
            raise _error(errno.ERANGE)
        else:
            ll.reply_buf(req, data)

    def getxattr(self, req: int, ino: int, name: bytes, size: int) -> None:
        value = xattr_value(self.repo, self._entry(ino), name.decode("utf-8", "surrogateescape"), self._magic)
        if value is None:
            raise _error(ENOATTR)
        self._reply_sized(req, value, size)

    def listxattr(self, req: int, ino: int, size: int) -> None:
        names = xattr_names(self._entry(ino), self._magic)
        self._reply_sized(req, b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names), size)


def serve_lowlevel(
    repo: Repository,
    mountpoint: str,
    options: list[str],
    *,
    on_ready: Callable[[], None] | None = None,
    serving: Serving = Serving(),
    **kw: Any,
) -> None:
    fs = InodeFilesystem(repo, on_ready=on_ready, serving=serving)
    leave_out = frozenset() if fs.xattrs else frozenset({"getxattr", "listxattr"})
    more = None
    if kw.get("stats"):  # the counts file also says where making objects went
        more = repo.store.phases = Phases()
    ll.serve(fs, mountpoint, options, leave_out=leave_out, more=more, **kw)
