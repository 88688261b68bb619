"""The FUSE kernel protocol on ``/dev/fuse``, in Python (standard library only): the part of it a
read-only filesystem needs.

Why not libfuse: measured on the host (``bench/fuse_daemon.py``), a warm READ was ~60 µs of daemon
CPU of which ~15 µs was our handler; the rest was the ctypes callback, libfuse and its reply. Here a
reader thread reads a request into its own reused buffer (``os.readv``), parses the header and the
body with precompiled ``struct.Struct``s and answers with one ``os.writev`` of the out header and
the payload. The layouts are ``linux/fuse.h``'s (protocol 7.x, little-endian x86_64 and aarch64).

A request is its ``unique`` id (``req`` below); handlers answer it exactly once (``reply_*``) or
raise an ``OSError`` (its errno is the reply; any other exception is logged and answered EIO).
One mount per process: the replies go to the session's descriptor (``_dev``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .. import lazylog
from ..fsutil import atomic_write
from ..termtext import log_formatter

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import Any

log = lazylog.get(__name__)

#: protocol version we speak (7.31: kernel 5.4+; a newer kernel speaks ours, an older one its own)
MAJOR, MINOR = 7, 31
#: the largest READ the kernel sends (``max_pages`` 256: 1 MiB, libfuse 3's default) and the
#: largest WRITE it could (none come: read-only; the kernel wants a read buffer that holds one)
MAX_PAGES = 256
MAX_WRITE = 128 * 1024
#: each reader's request buffer: a request header, a WRITE's header and its data, some slack
BUFSIZE = MAX_WRITE + 4096

# opcodes (linux/fuse.h)
LOOKUP, FORGET, GETATTR, READLINK = 1, 2, 3, 5
OPEN, READ, STATFS, RELEASE = 14, 15, 17, 18
GETXATTR, LISTXATTR, FLUSH, INIT = 22, 23, 25, 26
OPENDIR, READDIR, RELEASEDIR, ACCESS = 27, 28, 29, 34
INTERRUPT, DESTROY, BATCH_FORGET, READDIRPLUS = 36, 38, 42, 44

# INIT flags (the kernel's; libfuse's FUSE_CAP_* of the same names have the same bits)
ASYNC_READ = 1 << 0
ATOMIC_O_TRUNC = 1 << 3
BIG_WRITES = 1 << 5
HAS_IOCTL_DIR = 1 << 11
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
READDIRPLUS_AUTO = 1 << 14
ASYNC_DIO = 1 << 15
NO_OPEN_SUPPORT = 1 << 17  # not sent: the kernel takes an ENOSYS answer to OPEN as this (7.23+)
PARALLEL_DIROPS = 1 << 18
HANDLE_KILLPRIV = 1 << 19
FLAG_MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
NO_OPENDIR_SUPPORT = 1 << 24  # the same for OPENDIR (7.29+)
#: what libfuse 3 asks for by default (its ``do_init``), kept: the filesystem's ``init`` adds and
#: removes from this (``Conn.want``)
DEFAULT_WANT = (
    ASYNC_READ | ATOMIC_O_TRUNC | BIG_WRITES | HAS_IOCTL_DIR | AUTO_INVAL_DATA | DO_READDIRPLUS
    | READDIRPLUS_AUTO | ASYNC_DIO | PARALLEL_DIROPS | HANDLE_KILLPRIV | FLAG_MAX_PAGES
)  # fmt: skip
_NOT_SENT = NO_OPEN_SUPPORT | NO_OPENDIR_SUPPORT

FOPEN_KEEP_CACHE = 1 << 1
FOPEN_CACHE_DIR = 1 << 3

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
_HEAD = struct.Struct("<4xIQQ")  # opcode, unique, nodeid
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
_INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags
#: major, minor, max_readahead, flags, max_background, congestion_threshold, max_write, time_gran,
#: max_pages, map_alignment, flags2, unused[7]
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
#: a kernel before 7.23 (Linux 3.15) takes only init_out's first 24 bytes (up to max_write; the
#: longer reply is EINVAL to it): libfuse's FUSE_COMPAT_22_INIT_OUT_SIZE
INIT_OUT_22 = 24
_READ_IN = struct.Struct("<QQI")  # fh, offset, size (of fuse_read_in)
_OPEN_IN = struct.Struct("<I")  # flags (of fuse_open_in)
_FH = struct.Struct("<Q")  # fh, the start of fuse_release_in and fuse_getattr_in's second word
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_FORGET_ONE = struct.Struct("<QQ")  # nodeid, nlookup
OPEN_OUT = struct.Struct("<QII")  # fh, open_flags, padding
ATTR_OUT_HEAD = struct.Struct("<QII")  # attr_valid, attr_valid_nsec, dummy
XATTR_OUT = struct.Struct("<II")  # size, padding
#: fuse_kstatfs: blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6]
STATFS_OUT = struct.Struct("<QQQQQIII28x")
#: ``struct fuse_entry_out``: nodeid, generation, entry_valid, attr_valid, entry_valid_nsec,
#: attr_valid_nsec, then ``struct fuse_attr``: ino, size, blocks, atime, mtime, ctime, atimensec,
#: mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags. ``ENTRY.pack(...)`` is what
#: a LOOKUP answers and a READDIRPLUS entry starts with; its attributes are ``[ATTR_START:]``.
#: The times are signed (the kernel reads the u64 as a time64_t: a time before 1970 packs; libfuse
#: stored ``st_mtime`` there); rdev is the kernel's u32 (``packed_entry`` masks it).
ENTRY = struct.Struct("<QQQQIIQQQqqqIIIIIIIIII")
ATTR_START, ATTR_END = 40, ENTRY.size
#: from a packed entry: the attributes' ino and mode (a plain READDIR entry's d_ino and d_type)
_INO_MODE = struct.Struct("<40xQ52xI")
DIRENT = struct.Struct("<QQII")  # ino, off, namelen, type: then the name, 8-byte aligned
#: a ``struct fuse_direntplus`` up to its name: ``ENTRY``'s fields, then ``DIRENT``'s (one
#: ``pack_into`` per listed entry, not an entry packed and then copied into the reply)
DIRENTPLUS = struct.Struct(ENTRY.format + DIRENT.format[1:])
#: the zeros that pad a name to 8 bytes, by their count
PADS = [b"\0" * n for n in range(8)]
assert ENTRY.size == 128 and INIT_OUT.size == 64 and STATFS_OUT.size == 80 and DIRENTPLUS.size == 152


class Conn:
    """The INIT negotiation a filesystem's ``init`` sees: what the kernel can (``capable``) and what
    the reply asks for (``want``), in the kernel's flag bits."""

    __slots__ = ("capable", "max_readahead", "minor", "want")

    def __init__(self, capable: int, want: int, max_readahead: int, minor: int):
        self.capable, self.want, self.max_readahead, self.minor = capable, want, max_readahead, minor


class FileInfo:
    """An OPEN/READ/RELEASE's handle (``fh``) and flags; ``keep_cache``/``cache_readdir`` are the
    open reply's ``FOPEN_KEEP_CACHE``/``FOPEN_CACHE_DIR``."""

    __slots__ = ("cache_readdir", "fh", "flags", "keep_cache")

    def __init__(self, fh: int = 0, flags: int = 0):
        self.fh, self.flags, self.keep_cache, self.cache_readdir = fh, flags, 0, 0


class Filesystem:
    """What a file system implements; each handler answers its request (``reply_*`` below) or raises
    an ``OSError`` (any other exception is logged and answered with EIO)."""

    def init(self, conn: Conn) -> None: ...
    def destroy(self) -> None: ...
    def lookup(self, req: int, parent: int, name: bytes) -> None: ...
    def forget(self, ino: int, nlookup: int) -> None: ...
    def getattr(self, req: int, ino: int) -> None: ...
    def readlink(self, req: int, ino: int) -> None: ...
    def open(self, req: int, ino: int, fi: FileInfo) -> None: ...
    def read(self, req: int, ino: int, size: int, off: int, fi: FileInfo) -> None: ...
    def release(self, req: int, ino: int, fi: FileInfo) -> None: ...
    def opendir(self, req: int, ino: int, fi: FileInfo) -> None: ...
    def readdir(self, req: int, ino: int, size: int, off: int, fi: FileInfo, plus: bool) -> None: ...
    def releasedir(self, req: int, ino: int, fi: FileInfo) -> None: ...
    def statfs(self, req: int, ino: int) -> None: ...
    def getxattr(self, req: int, ino: int, name: bytes, size: int) -> None: ...
    def listxattr(self, req: int, ino: int, size: int) -> None: ...


#: ``RequestCounts`` times one request in this many of each kind
SAMPLE_EVERY = 8


class RequestCounts:
    """Requests by name, the seconds their handlers took and the CPU seconds of those handlers
    (``mount --stats FILE``: where a mount's time goes, e.g. in a booting guest, where a handler's
    wall time also holds the time the one CPU ran someone else). Written to ``path`` every ``every``
    seconds, as lines ``name count seconds cpu_seconds`` (the times estimated from one request in
    SAMPLE_EVERY of each kind: see ``wrap``), by a daemon thread (``fsutil.atomic_write``:
    a reader never sees half a file). Two more lines, ``@ready`` (when the kernel's INIT came: the
    mount was ready) and ``@process`` (at the write), give the seconds since this was made and the
    whole process's CPU (all threads, since its start): what is not in a handler (the start, the
    fetching threads) is their difference to the handlers' sum."""

    def __init__(self, path: str, every: float = 10.0, more: dict[str, list[float]] | None = None):
        """``more``: further lines of the same form, kept by someone else (the store's ``Phases``,
        written with a ``~`` before their names)."""
        self.path, self.every = path, every
        self.counts: dict[str, list[float]] = {}
        self.more = more
        self.t0 = time.monotonic()
        self.ready: tuple[float, float] | None = None
        threading.Thread(target=self._writer, name="fuse-stats", daemon=True).start()

    def wrap(
        self, name: str, fn: Callable[[int, int, bytearray, int], None]
    ) -> Callable[[int, int, bytearray, int], None]:
        # [count, seconds, CPU seconds, requests timed]: every request is counted, one in
        # SAMPLE_EVERY of each kind (the first one included) is timed, and ``write`` scales the
        # times up. Timing every request cost two ``thread_time`` system calls each (~6,000 a boot):
        # a bench measured its own instrumentation.
        rec = self.counts.setdefault(name, [0, 0.0, 0.0, 0])
        clock, cpu = time.perf_counter, time.thread_time

        def call(req: int, ino: int, buf: bytearray, size: int) -> None:  # no *args: ~1 % of a READ
            n = rec[0]
            rec[0] = n + 1  # GIL-held; a lost update under contention does not matter here
            if n % SAMPLE_EVERY:
                fn(req, ino, buf, size)
                return
            t0, c0 = clock(), cpu()
            try:
                fn(req, ino, buf, size)
            finally:
                rec[1] += clock() - t0
                rec[2] += cpu() - c0
                rec[3] += 1

        return call

    def now(self) -> tuple[float, float]:
        """(seconds since this was made, the process's CPU seconds)."""
        t = os.times()
        return time.monotonic() - self.t0, t.user + t.system

    def mark_ready(self) -> None:
        self.ready = self.now()

    def write(self) -> None:
        lines = "".join(
            f"{k} {int(c)} {s * c / n:.3f} {u * c / n:.3f}\n"
            for k, (c, s, u, n) in sorted(self.counts.items())
            if c and n
        )
        if self.more:
            more = sorted(self.more.copy().items())
            lines += "".join(f"~{k} {int(c)} {s:.3f} {u:.3f}\n" for k, (c, s, u) in more)
        for name, mark in (("@ready", self.ready), ("@process", self.now())):
            if mark is not None:
                lines += f"{name} 1 {mark[0]:.3f} {mark[1]:.3f}\n"
        atomic_write(Path(self.path), lines.encode(), durable=False)

    def _writer(self) -> None:
        while True:
            time.sleep(self.every)
            with contextlib.suppress(OSError):
                self.write()


# -- replies ---------------------------------------------------------------------------------------
#: the session's /dev/fuse descriptor (one mount per process; ``serve`` sets it)
_dev = -1
#: a reply's write failing with these is not an error: ENOENT, a request the kernel dropped meanwhile
#: (interrupted); ENODEV, the connection ended (unmounted); EBADF, the session ended
_GONE = (errno.ENOENT, errno.ENODEV, errno.EBADF)


def _send(req: int, payload: Any, size: int) -> None:
    """One ``writev`` of the out header and ``payload`` (``size`` bytes); a failed write is not the
    daemon's end."""
    try:
        os.writev(_dev, [OUT_HEADER.pack(16 + size, 0, req), payload])
    except OSError as e:
        if e.errno not in _GONE:
            log.warning("FUSE reply to request %d failed: %s", req, e)


def reply_err(req: int, err: int) -> None:
    try:
        os.write(_dev, OUT_HEADER.pack(16, -err, req))
    except OSError as e:
        if e.errno not in _GONE:
            log.warning("FUSE reply to request %d failed: %s", req, e)


def reply_entry(req: int, entry: bytes) -> None:
    """``entry``: a packed ``struct fuse_entry_out`` (``ENTRY``)."""
    _send(req, entry, 128)


def reply_attr(req: int, entry: bytes, timeout: float) -> None:
    """The attributes of a packed ``struct fuse_entry_out`` (``ENTRY``)."""
    _send(req, ATTR_OUT_HEAD.pack(int(timeout), 0, 0) + entry[ATTR_START:], 104)


def reply_readlink(req: int, target: bytes) -> None:
    _send(req, target, len(target))


def reply_open(req: int, fi: FileInfo) -> None:
    flags = (FOPEN_KEEP_CACHE if fi.keep_cache else 0) | (FOPEN_CACHE_DIR if fi.cache_readdir else 0)
    _send(req, OPEN_OUT.pack(fi.fh, flags, 0), OPEN_OUT.size)


def reply_buf(req: int, data: bytes | bytearray | None, size: int | None = None) -> None:
    """Answer with ``data``, or its first ``size`` bytes (never more than it has: a ``size`` from
    a catalog that disagrees with the object must not send what lies beyond it)."""
    if data is None:
        _send(req, b"", 0)
        return
    n = len(data) if size is None else min(size, len(data))
    _send(req, data if n == len(data) else memoryview(data)[:n], n)


#: the largest read answered from a fresh ``bytes`` (``reply_fd``): glibc's heap gives that much without
#: new pages; a larger block comes from pages mapped (and faulted in, zeroed) for it and given back
#: after the reply — the daemon fixes the mmap threshold at 1 MiB (``mount._tame_malloc``), which
#: also leaves the heap's top trimmed past 128 KiB: on the host a 1 MiB ``pread`` into a fresh
#: ``bytes`` was 257 page faults and 0.31 ms of CPU, into a kept buffer none and 0.057 ms (512 KiB:
#: 96 faults, 0.12 vs 0.022 ms); the guest's READs of large files come in up to 1 MiB (issue 13)
FRESH_MAX = 128 << 10
#: kept buffers for larger reads: at most this many, of MAX_PAGES pages each (2 MiB in all)
READ_BUFFERS = 2
_read_buffers: list[bytearray] = []


def reply_fd(req: int, fd: int, pos: int, size: int) -> None:
    """Answer a read with ``size`` bytes of ``fd`` at ``pos`` (fewer at its end): one ``pread``,
    into a kept buffer above ``FRESH_MAX`` (taken from ``_read_buffers`` for this reply only: the
    reply's ``writev`` has copied it when it returns)."""
    if size <= FRESH_MAX:
        data = os.pread(fd, size, pos)
        _send(req, data, len(data))
        return
    try:
        buf = _read_buffers.pop()  # one C call under the interpreter lock: no two threads get one
    except IndexError:
        buf = bytearray(MAX_PAGES << 12)
    try:
        view = memoryview(buf) if size <= len(buf) else memoryview(bytearray(size))  # past max_pages
        n = os.preadv(fd, [view[:size]], pos)
        _send(req, view[:n], n)
    finally:
        if len(_read_buffers) < READ_BUFFERS:
            _read_buffers.append(buf)


def reply_statfs(req: int, numbers: dict[str, int]) -> None:
    """``numbers``: ``statvfs`` names (``f_blocks``, ``f_bsize``, ...); the missing ones are 0."""
    get = numbers.get
    payload = STATFS_OUT.pack(
        get("f_blocks", 0), get("f_bfree", 0), get("f_bavail", 0), get("f_files", 0), get("f_ffree", 0),
        get("f_bsize", 0), get("f_namemax", 0), get("f_frsize", 0),
    )  # fmt: skip
    _send(req, payload, STATFS_OUT.size)


def reply_xattr(req: int, size: int) -> None:
    _send(req, XATTR_OUT.pack(size, 0), XATTR_OUT.size)


_buffers = threading.local()


def reply_buffer(size: int) -> bytearray:
    """A buffer of at least ``size`` bytes for a reply (a READDIR's entries), this thread's own,
    reused from request to request: not a zeroed allocation per request (issue 14, warm). What it
    holds is valid until the thread's next request; ``add_direntry``'s ``end`` keeps a reply to
    ``size``."""
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _buffers.buf = bytearray(size)
    return buf


def add_direntry(
    req: int,
    buf: bytearray,
    pos: int,
    name: bytes,
    entry: bytes,
    off: int,
    plus: bool,
    end: int | None = None,
) -> int:
    """Add one entry (``entry``: packed by ``ENTRY``) to ``buf`` at ``pos``, within its first ``end``
    bytes (None: all of it): a ``struct fuse_direntplus`` (the entry, then the dirent) or, not
    ``plus``, a ``struct fuse_dirent``, its name padded to 8 bytes. Returns its size (more than is
    left: not added)."""
    namelen = len(name)
    head = ENTRY.size if plus else 0
    size = (head + 24 + namelen + 7) & ~7
    if size > (len(buf) if end is None else end) - pos:
        return size
    ino, mode = _INO_MODE.unpack_from(entry)
    if plus:
        buf[pos : pos + 128] = entry
    p = pos + head
    DIRENT.pack_into(buf, p, ino, off, namelen, (mode & 0o170000) >> 12)
    p += 24
    buf[p : p + namelen] = name
    p += namelen
    buf[p : pos + size] = PADS[pos + size - p]
    return size


# -- the session -----------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by the signal handler in the main thread's reader: the loop ends, we unmount."""


def _traced(name: str, fn: Callable[[int, int, bytearray, int], None]) -> Callable[..., None]:
    def call(req: int, ino: int, buf: bytearray, n: int) -> None:
        log.debug("%s unique %d node %d (%d bytes)", name, req, ino, n)
        fn(req, ino, buf, n)

    return call


def _handlers(
    fs: Filesystem, counts: RequestCounts | None, leave_out: frozenset[str], debug: bool = False
) -> dict[int, Callable[[int, int, bytearray, int], None]]:
    """By opcode: a function of (unique, nodeid, request buffer, request length) that parses the
    body and calls ``fs``. Those named in ``leave_out`` are answered ENOSYS (for GETXATTR and
    LISTXATTR the kernel then stops sending them for the mount's life)."""

    def lookup(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.lookup(req, ino, bytes(buf[40 : n - 1]))

    def forget(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.forget(ino, _U64.unpack_from(buf, 40)[0])

    def forget_multi(req: int, ino: int, buf: bytearray, n: int) -> None:
        count = min(_U32.unpack_from(buf, 40)[0], (n - 48) // 16)
        for nodeid, nlookup in _FORGET_ONE.iter_unpack(buf[48 : 48 + 16 * count]):
            fs.forget(nodeid, nlookup)

    def getattr(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.getattr(req, ino)

    def readlink(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.readlink(req, ino)

    def open(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.open(req, ino, FileInfo(0, _OPEN_IN.unpack_from(buf, 40)[0]))

    def read(req: int, ino: int, buf: bytearray, n: int) -> None:
        fh, off, size = _READ_IN.unpack_from(buf, 40)
        fs.read(req, ino, size, off, FileInfo(fh))

    def release(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.release(req, ino, FileInfo(_FH.unpack_from(buf, 40)[0]))

    def opendir(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.opendir(req, ino, FileInfo(0, _OPEN_IN.unpack_from(buf, 40)[0]))

    def readdir(req: int, ino: int, buf: bytearray, n: int) -> None:
        fh, off, size = _READ_IN.unpack_from(buf, 40)
        fs.readdir(req, ino, size, off, FileInfo(fh), False)

    def readdirplus(req: int, ino: int, buf: bytearray, n: int) -> None:
        fh, off, size = _READ_IN.unpack_from(buf, 40)
        fs.readdir(req, ino, size, off, FileInfo(fh), True)

    def releasedir(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.releasedir(req, ino, FileInfo(_FH.unpack_from(buf, 40)[0]))

    def statfs(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.statfs(req, ino)

    def getxattr(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.getxattr(req, ino, bytes(buf[48 : n - 1]), _U32.unpack_from(buf, 40)[0])

    def listxattr(req: int, ino: int, buf: bytearray, n: int) -> None:
        fs.listxattr(req, ino, _U32.unpack_from(buf, 40)[0])

    named: dict[str, tuple[int, Callable[[int, int, bytearray, int], None]]] = {
        "lookup": (LOOKUP, lookup),
        "forget": (FORGET, forget),
        "forget_multi": (BATCH_FORGET, forget_multi),
        "getattr": (GETATTR, getattr),
        "readlink": (READLINK, readlink),
        "open": (OPEN, open),
        "read": (READ, read),
        "release": (RELEASE, release),
        "opendir": (OPENDIR, opendir),
        "readdir": (READDIR, readdir),
        "readdirplus": (READDIRPLUS, readdirplus),
        "releasedir": (RELEASEDIR, releasedir),
        "statfs": (STATFS, statfs),
        "getxattr": (GETXATTR, getxattr),
        "listxattr": (LISTXATTR, listxattr),
    }
    out = {}
    for name, (opcode, handler) in named.items():
        if name not in leave_out:
            if debug:  # mount --debug: each request on stderr
                handler = _traced(name, handler)
            out[opcode] = counts.wrap(name, handler) if counts is not None else handler
    return out


#: requests the kernel expects no answer to
NO_REPLY = frozenset({FORGET, BATCH_FORGET, INTERRUPT})


#: signals that end the session (blocked in all readers but the main thread's: see ``serve``)
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


class Session:
    """One mount's requests: ``run`` in each reader thread, until the kernel ends the connection
    (unmounted: ENODEV) or, in the main thread, a signal (``_Stop``).

    Readers are started as needed, as libfuse's multithreaded loop does: one that takes a request
    while no other is waiting starts another, up to ``threads``. A reader that just answered is the
    next to wait, but the kernel wakes waiting readers in the order they began to wait: with a fixed
    pool of 10 a sequential reader's requests went round all ten (10-20 % more daemon CPU warm on the
    host, ``bench/fuse_daemon.py``: colder caches per request); this way a serial walk uses two."""

    def __init__(
        self,
        fs: Filesystem,
        fd: int,
        counts: RequestCounts | None,
        leave_out: frozenset[str],
        debug: bool = False,
    ):
        self.fs, self.fd, self.counts = fs, fd, counts
        self.handlers = _handlers(fs, counts, leave_out, debug)
        self.inited = threading.Event()
        self.threads = 1  # the most readers: ``serve`` sets it
        self._waiting: list[None] = []  # one item per reader waiting in read (GIL-atomic appends/pops)
        self._readers = 1
        self._spawn_lock = threading.Lock()
        self._threads: list[threading.Thread] = []  # the readers started (``end`` waits for them)
        #: the kernel ended the connection (a reader read ENODEV): nothing left to unmount
        self.gone = False

    def _spawn(self) -> None:
        with self._spawn_lock:
            if self._readers >= self.threads:
                return
            self._readers += 1
            thread = threading.Thread(target=self.run, name=f"fuse-{self._readers}", daemon=True)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # inherited by the new thread
        try:
            thread.start()
        except RuntimeError as e:  # "can't start new thread" (RLIMIT_NPROC, memory): serve with fewer
            with self._spawn_lock:
                self._readers -= 1
                self.threads = self._readers  # stop trying (and logging)
            log.warning("FUSE: serving with %d reader threads (%s)", self._readers, e)
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self._threads.append(thread)

    def end(self, timeout: float = 1.0) -> None:
        """After the main thread's ``run``: wait up to ``timeout`` seconds for the other readers
        (each returns once its handler has answered: the kernel gives it ENODEV next), then
        ``destroy`` the filesystem (not under a handler still using it) and close the descriptor.
        A reader still busy then finds /dev/null there, not a descriptor a later ``open`` got."""
        global _dev
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if _dev == self.fd:
            _dev = -1  # a reader still answering gets EBADF, not a descriptor this number names next
        if self.inited.is_set():
            self.fs.destroy()
        if any(thread.is_alive() for thread in self._threads):
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            os.dup2(null, self.fd, inheritable=False)  # its read: 0 bytes, and it returns
            os.close(null)
        else:
            os.close(self.fd)

    def init(self, req: int, buf: bytearray, n: int) -> None:
        major, minor, max_readahead, kernel_flags = _INIT_IN.unpack_from(buf, 40)
        if major > MAJOR:  # a newer kernel: it sends INIT again in our version (as libfuse)
            _send(req, INIT_OUT.pack(MAJOR, MINOR, 0, 0, 0, 0, 0, 0, 0, 0, 0), INIT_OUT.size)
            return
        if major < MAJOR:
            reply_err(req, errno.EPROTO)
            return
        capable = kernel_flags | (NO_OPEN_SUPPORT if minor >= 23 else 0)
        capable |= NO_OPENDIR_SUPPORT if minor >= 29 else 0
        conn = Conn(capable, DEFAULT_WANT & capable, max_readahead, min(minor, MINOR))
        if self.counts is not None:
            self.counts.mark_ready()
        self.fs.init(conn)
        flags = conn.want & kernel_flags & ~_NOT_SENT
        pages = MAX_PAGES if flags & FLAG_MAX_PAGES else 0
        out = INIT_OUT.pack(MAJOR, MINOR, conn.max_readahead, flags, 0, 0, MAX_WRITE, 0, pages, 0, 0)
        size = INIT_OUT_22 if minor < 23 else INIT_OUT.size
        _send(req, out[:size], size)
        self.inited.set()

    def run(self) -> None:
        """Read, parse, answer, until the connection ends (the unmount: ENODEV)."""
        buf = bytearray(BUFSIZE)
        bufs = [buf]
        fd, readv, unpack = self.fd, os.readv, _HEAD.unpack_from
        handlers = self.handlers
        waiting = self._waiting
        while True:
            waiting.append(None)
            try:
                n = readv(fd, bufs)
            except OSError as e:
                waiting.pop()
                if e.errno == errno.ENODEV:  # unmounted (or aborted): the kernel ended it
                    self.gone = True
                    return
                if e.errno == errno.EBADF:  # the session closed
                    return
                if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):  # a request interrupted
                    continue
                raise
            waiting.pop()
            if not waiting and self._readers < self.threads:
                self._spawn()
            if n < 40:  # cannot happen (the kernel writes whole requests); not a reason to stop
                if n == 0:  # not /dev/fuse any more (closed at the end)
                    return
                continue
            opcode, req, ino = unpack(buf)
            handler = handlers.get(opcode)
            if handler is None:
                if opcode == INIT:
                    self.init(req, buf, n)
                elif opcode == DESTROY:
                    _send(req, b"", 0)
                elif opcode not in NO_REPLY:  # ACCESS, FLUSH, writes...: as libfuse without them
                    reply_err(req, errno.ENOSYS)
                continue
            try:
                handler(req, ino, buf, n)
            except OSError as e:
                if opcode not in NO_REPLY:
                    reply_err(req, e.errno or errno.EIO)
            except _Stop:
                raise
            except Exception:
                log.exception("FUSE request %d failed", opcode)
                if opcode not in NO_REPLY:
                    reply_err(req, errno.EIO)


# -- mounting --------------------------------------------------------------------------------------
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MNT_DETACH = 2


def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def mount(mountpoint: str, options: list[str]) -> int:
    """Mount a FUSE filesystem on ``mountpoint`` with libfuse's ``-o`` ``options`` (``ro``,
    ``fsname=``, ``subtype=``, ``allow_other``, ``default_permissions``...) and return the /dev/fuse
    descriptor of the connection: as root by mount(2) (nosuid, nodev: libfuse's defaults), else
    through ``fusermount3``, which mounts and hands the descriptor over a socket (``_FUSE_COMMFD``)."""
    if os.geteuid() != 0:
        return _fusermount(mountpoint, options)
    fsname, kind, flags, data = "fuse", "fuse", MS_NOSUID | MS_NODEV, []
    for opt in options:
        if opt == "ro":
            flags |= MS_RDONLY
        elif opt.startswith("fsname="):
            fsname = opt[7:]
        elif opt.startswith("subtype="):
            kind = "fuse." + opt[8:]
        else:
            data.append(opt)
    import ctypes  # only for mount(2), once: not on every import

    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        rootmode = stat.S_IFMT(os.stat(mountpoint).st_mode)
        data = [
            f"fd={fd}",
            f"rootmode={rootmode:o}",
            f"user_id={os.getuid()}",
            f"group_id={os.getgid()}",
            *data,
        ]
        if _libc().mount(fsname.encode(), mountpoint.encode(), kind.encode(), flags, ",".join(data).encode()):
            err = ctypes.get_errno()
            raise OSError(err, f"mount {mountpoint}: {os.strerror(err)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fusermount(mountpoint: str, options: list[str]) -> int:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = os.environ | {"_FUSE_COMMFD": str(theirs.fileno())}
        try:
            import subprocess  # deliberate lazy import: only where the mount is not root's (fusermount3)

            r = subprocess.run(
                ["fusermount3", "-o", ",".join(options), "--", mountpoint],
                env=env, pass_fds=[theirs.fileno()], capture_output=True, text=True, check=False,
            )  # fmt: skip
        except FileNotFoundError:
            raise OSError(errno.ENOENT, "fusermount3 not found: install fuse3 or mount as root") from None
        if r.returncode != 0:  # its message on one line (the CLI's and the initrd's error lines)
            raise OSError(errno.EPERM, f"fusermount3: {' '.join(r.stderr.split()) or r.returncode}")
        _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
    if not fds:
        raise OSError(errno.EIO, "fusermount3 sent no /dev/fuse descriptor")
    os.set_inheritable(fds[0], False)
    return fds[0]


def unmount(mountpoint: str) -> None:
    """Detach the mount (lazily: as libfuse does, a busy mount goes once its last user does)."""
    if os.geteuid() == 0:
        _libc().umount2(mountpoint.encode(), MNT_DETACH)
    else:
        import subprocess  # deliberate lazy import: only where the mount is not root's (fusermount3)

        subprocess.run(["fusermount3", "-u", "-q", "-z", "--", mountpoint], check=False, capture_output=True)


def serve(
    fs: Filesystem,
    mountpoint: str,
    options: list[str],
    *,
    debug: bool = False,
    threads: int = 10,
    stats: str | None = None,
    leave_out: frozenset[str] = frozenset(),
    more: dict[str, list[float]] | None = None,
) -> None:
    """Mount ``fs`` on ``mountpoint`` with the mount ``options`` and serve requests with up to
    ``threads`` reader threads (the main one among them; started as needed, ``Session``) until
    unmounted, or SIGINT/SIGTERM/SIGHUP or an error (then this unmounts); ``stats``: a file the request counts
    go to (``RequestCounts``); ``leave_out``: requests answered ENOSYS without calling ``fs``.

    Each reader blocks in ``read`` on the descriptor; the kernel gives each request to one of them,
    so a READ waiting on the network holds up no other request (up to ``threads`` at once). The
    signals are blocked in the other readers, so they interrupt the main thread's read."""
    global _dev
    if debug:
        import logging  # deliberate lazy import (see lazylog)

        logger = log.logger()
        logger.setLevel(logging.DEBUG)
        to_stderr = logging.StreamHandler()
        to_stderr.setFormatter(log_formatter())  # a request names what a process looked up: any bytes
        logger.addHandler(to_stderr)
    counts = RequestCounts(stats, more=more) if stats else None
    try:
        fd = mount(mountpoint, options)
    except OSError as e:
        raise RuntimeError(str(e)) from e
    _dev = fd
    session = Session(fs, fd, counts, leave_out, debug)
    session.threads = max(1, threads)

    def stop(_sig: int, _frame: Any) -> None:
        raise _Stop()

    old = {}
    try:
        try:
            for sig in STOP_SIGNALS:
                old[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread (a test): the signals stay as they are
            pass
        with contextlib.suppress(_Stop):
            session.run()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        # A signal, or an error (INIT's ``on_ready``, a failed read): unmount, or the mount point is
        # left dead (ENOTCONN). Not after ENODEV: the kernel ended it, and something else may be
        # mounted there by now.
        if not session.gone:
            unmount(mountpoint)
        if counts is not None:  # the whole life's counts, not the last 10 s's
            with contextlib.suppress(OSError):
                counts.write()
        session.end()
