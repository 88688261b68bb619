"""libfuse3's low-level API through ctypes: the part of it a read-only filesystem needs.

Why not the high-level API (``fuse_main``, what mfusepy wraps): there libfuse keeps its own tree of
path names, builds the full path string of every request, and mfusepy decodes it and turns an
attribute dict into a ``struct stat`` per call. The low-level API hands over the inode number and
takes the reply as prebuilt structures (issue 14: lookup-heavy work was 2.4-2.9x slower than the
real client, which uses this API too). pyfuse3 would need trio and a compiler (not in the initrd).

The structure layouts (``struct stat``, ``statvfs``, ``fuse_file_info``, ``fuse_conn_info``) are
mfusepy's, built for the library mfusepy loaded, so they match its version; this module needs that
library to be libfuse3 (``available()``). Callbacks get the request and must answer it exactly once
(``reply_*``); ``Filesystem`` below is what a file system implements.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import struct
import threading
import time
from collections.abc import Callable
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_char_p,
    c_double,
    c_int,
    c_int64,
    c_size_t,
    c_uint,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any

import mfusepy

from ..fsutil import atomic_write

log = logging.getLogger(__name__)

lib: Any = mfusepy._libfuse  # the handle mfusepy loaded (the structure layouts belong to it)


def available() -> bool:
    return bool(mfusepy.fuse_version_major == 3)


class EntryParam(ctypes.Structure):
    _fields_ = [
        ("ino", c_uint64),
        ("generation", c_uint64),
        ("attr", mfusepy.c_stat),
        ("attr_timeout", c_double),
        ("entry_timeout", c_double),
    ]


def _packed_layout() -> tuple[struct.Struct, int, int]:
    """``struct fuse_entry_param`` as one ``struct`` format over the fields a reply fills, in this
    order: ino, then the attributes st_ino, st_nlink, st_mode, st_uid, st_gid, st_rdev, st_size,
    st_blksize, st_blocks, the three (seconds, nanoseconds) times, then attr_timeout, entry_timeout;
    everything else zero. Offsets and sizes come from the ctypes layouts (mfusepy's, for the loaded
    library). Returns the format and where the ``struct stat`` starts and ends in it.

    Why: filling a ``ctypes`` structure field by field (each ``param.attr`` a new view object) was
    most of a listed entry's cost; one ``pack`` per entry is a single C call."""
    attr = EntryParam.attr.offset
    st = mfusepy.c_stat
    ts = mfusepy.c_timespec
    fields: list[tuple[int, Any]] = [(EntryParam.ino.offset, c_uint64)]
    for name in (
        "st_ino",
        "st_nlink",
        "st_mode",
        "st_uid",
        "st_gid",
        "st_rdev",
        "st_size",
        "st_blksize",
        "st_blocks",
    ):
        d = dict(st._fields_)
        fields.append((attr + getattr(st, name).offset, d[name]))
    for name in ("st_atimespec", "st_mtimespec", "st_ctimespec"):
        base = attr + getattr(st, name).offset
        fields += [(base + ts.tv_sec.offset, c_int64), (base + ts.tv_nsec.offset, c_int64)]
    fields += [(EntryParam.attr_timeout.offset, c_double), (EntryParam.entry_timeout.offset, c_double)]
    fmt, pos = "=", 0
    for off, ctype in fields:
        size = ctypes.sizeof(ctype)
        if ctype is c_double:
            code = "d"
        else:
            code = {8: "q", 4: "i", 2: "h"}[size]
            if ctype(-1).value > 0:  # unsigned
                code = code.upper()
        assert off >= pos, "fields out of order"
        fmt += "x" * (off - pos) + code
        pos = off + size
    fmt += "x" * (ctypes.sizeof(EntryParam) - pos)
    packer = struct.Struct(fmt)
    assert packer.size == ctypes.sizeof(EntryParam)
    return packer, attr, attr + ctypes.sizeof(st)


class ForgetData(ctypes.Structure):
    _fields_ = [("ino", c_uint64), ("nlookup", c_uint64)]


class Args(ctypes.Structure):
    _fields_ = [("argc", c_int), ("argv", POINTER(c_char_p)), ("allocated", c_int)]


class LoopConfig32(ctypes.Structure):  # struct fuse_loop_config of libfuse 3.2 - 3.11
    _fields_ = [("clone_fd", c_int), ("max_idle_threads", c_uint)]


class Buf(ctypes.Structure):  # struct fuse_buf (libfuse 3.17 adds a size_t: the spare field)
    _fields_ = [
        ("size", c_size_t),
        ("flags", c_int),
        ("mem", c_void_p),
        ("fd", c_int),
        ("pos", c_int64),
        ("spare", c_size_t),
    ]


class BufVec(ctypes.Structure):  # struct fuse_bufvec with one buffer
    _fields_ = [("count", c_size_t), ("idx", c_size_t), ("off", c_size_t), ("buf", Buf)]


ENTRY, ATTR_START, ATTR_END = _packed_layout()
#: ``ENTRY.pack(...)``: a ``struct fuse_entry_param`` as bytes (the argument order: _packed_layout)
pack_entry = ENTRY.pack

FUSE_BUF_IS_FD = 1 << 1
FUSE_BUF_FD_SEEK = 1 << 2
FUSE_BUF_FD_RETRY = 1 << 3

FileInfo = POINTER(mfusepy.fuse_file_info)
Req = c_void_p
Ino = c_uint64

#: struct fuse_lowlevel_ops in order, up to the last member used; the prototypes of the used ones
_OPS: list[tuple[str, Any]] = [
    ("init", CFUNCTYPE(None, c_void_p, POINTER(mfusepy.fuse_conn_info))),
    ("destroy", CFUNCTYPE(None, c_void_p)),
    ("lookup", CFUNCTYPE(None, Req, Ino, c_char_p)),
    ("forget", CFUNCTYPE(None, Req, Ino, c_uint64)),
    ("getattr", CFUNCTYPE(None, Req, Ino, FileInfo)),
    ("setattr", None),
    ("readlink", CFUNCTYPE(None, Req, Ino)),
    *((name, None) for name in ("mknod", "mkdir", "unlink", "rmdir", "symlink", "rename", "link")),
    ("open", CFUNCTYPE(None, Req, Ino, FileInfo)),
    ("read", CFUNCTYPE(None, Req, Ino, c_size_t, c_int64, FileInfo)),
    ("write", None),
    ("flush", None),
    ("release", CFUNCTYPE(None, Req, Ino, FileInfo)),
    ("fsync", None),
    ("opendir", CFUNCTYPE(None, Req, Ino, FileInfo)),
    ("readdir", CFUNCTYPE(None, Req, Ino, c_size_t, c_int64, FileInfo)),
    ("releasedir", CFUNCTYPE(None, Req, Ino, FileInfo)),
    ("fsyncdir", None),
    ("statfs", CFUNCTYPE(None, Req, Ino)),
    ("setxattr", None),
    ("getxattr", CFUNCTYPE(None, Req, Ino, c_char_p, c_size_t)),
    ("listxattr", CFUNCTYPE(None, Req, Ino, c_size_t)),
    *((name, None) for name in ("removexattr", "access", "create", "getlk", "setlk", "bmap", "ioctl")),
    *((name, None) for name in ("poll", "write_buf", "retrieve_reply")),
    ("forget_multi", CFUNCTYPE(None, Req, c_size_t, POINTER(ForgetData))),
    ("flock", None),
    ("fallocate", None),
    ("readdirplus", CFUNCTYPE(None, Req, Ino, c_size_t, c_int64, FileInfo)),
]


class Ops(ctypes.Structure):
    _fields_ = [(name, proto or c_void_p) for name, proto in _OPS]


def _bind(name: str, restype: Any, *argtypes: Any) -> None:
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = restype, list(argtypes)


if available():
    _bind("fuse_reply_err", c_int, Req, c_int)
    _bind("fuse_reply_none", None, Req)
    _bind("fuse_reply_entry", c_int, Req, c_char_p)  # packed (pack_entry)
    _bind("fuse_reply_attr", c_int, Req, c_char_p, c_double)
    _bind("fuse_reply_readlink", c_int, Req, c_char_p)
    _bind("fuse_reply_open", c_int, Req, FileInfo)
    _bind("fuse_reply_buf", c_int, Req, c_void_p, c_size_t)
    _bind("fuse_reply_data", c_int, Req, POINTER(BufVec), c_int)
    _bind("fuse_reply_statfs", c_int, Req, POINTER(mfusepy.c_statvfs))
    _bind("fuse_reply_xattr", c_int, Req, c_size_t)
    _bind("fuse_add_direntry_plus", c_size_t, Req, c_void_p, c_size_t, c_char_p, c_char_p, c_int64)
    _bind("fuse_add_direntry", c_size_t, Req, c_void_p, c_size_t, c_char_p, c_char_p, c_int64)
    _bind("fuse_session_new", c_void_p, POINTER(Args), POINTER(Ops), c_size_t, c_void_p)
    _bind("fuse_session_mount", c_int, c_void_p, c_char_p)
    _bind("fuse_set_signal_handlers", c_int, c_void_p)
    _bind("fuse_remove_signal_handlers", None, c_void_p)
    _bind("fuse_session_unmount", None, c_void_p)
    _bind("fuse_session_destroy", None, c_void_p)
    _bind("fuse_session_loop", c_int, c_void_p)


class Filesystem:
    """What a file system implements; each handler answers its request (``reply_*`` below) or raises
    an ``OSError`` such as ``mfusepy.FuseOSError(errno.ENOENT)`` (any other exception is logged and
    answered with EIO)."""

    def init(self, conn: Any) -> None: ...
    def destroy(self) -> None: ...
    def lookup(self, req: int, parent: int, name: bytes) -> None: ...
    def forget(self, ino: int, nlookup: int) -> None: ...
    def getattr(self, req: int, ino: int) -> None: ...
    def readlink(self, req: int, ino: int) -> None: ...
    def open(self, req: int, ino: int, fi: Any) -> None: ...
    def read(self, req: int, ino: int, size: int, off: int, fi: Any) -> None: ...
    def release(self, req: int, ino: int, fi: Any) -> None: ...
    def opendir(self, req: int, ino: int, fi: Any) -> None: ...
    def readdir(self, req: int, ino: int, size: int, off: int, fi: Any, plus: bool) -> None: ...
    def releasedir(self, req: int, ino: int, fi: Any) -> None: ...
    def statfs(self, req: int, ino: int) -> None: ...
    def getxattr(self, req: int, ino: int, name: bytes, size: int) -> None: ...
    def listxattr(self, req: int, ino: int, size: int) -> None: ...


_pinned = threading.local()


def _pin_thread() -> None:
    """Keep this libfuse worker's Python thread state for the thread's life.

    A ctypes callback on a thread Python did not start makes a new thread state for the call and
    deletes it afterwards (``PyGILState_Ensure``/``Release``); in 3.11 that maps and unmaps the
    state's frame stack each time: ~10 % of the daemon's CPU in a warm read (``perf``: ``munmap``,
    its TLB shootdowns, ``_PyThreadState_BumpFramePointerSlow``), once per request. One extra
    ``Ensure`` that is never released keeps the state until the thread ends (libfuse keeps up to
    ``threads`` idle workers, so few are ever made)."""
    _pinned.on = True  # in the state that is kept from here on
    ctypes.pythonapi.PyGILState_Ensure()


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """The C callback for a request handler: a raised error becomes the request's error reply."""

    def call(req: int, *args: Any) -> None:
        if not hasattr(_pinned, "on"):
            _pin_thread()
        try:
            fn(req, *args)
        except OSError as e:
            lib.fuse_reply_err(req, e.errno or errno.EIO)
        except Exception:
            log.exception("FUSE %s failed", getattr(fn, "__name__", "request"))
            lib.fuse_reply_err(req, errno.EIO)

    return call


class RequestCounts:
    """Requests by name, the seconds their handlers took and the CPU seconds of those handlers
    (``mount --stats FILE``: where a mount's time goes, e.g. in a booting guest, where a handler's
    wall time also holds the time the one CPU ran someone else). Written to ``path`` every ``every``
    seconds, as lines ``name count seconds cpu_seconds``, by a daemon thread (``fsutil.atomic_write``:
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

    def wrap(self, name: str, fn: Callable[..., None]) -> Callable[..., None]:
        rec = self.counts.setdefault(name, [0, 0.0, 0.0])
        clock, cpu = time.perf_counter, time.thread_time

        def call(*args: Any) -> None:
            t0, c0 = clock(), cpu()
            try:
                fn(*args)
            finally:  # GIL-held increments; a lost update under contention does not matter here
                rec[0] += 1
                rec[1] += clock() - t0
                rec[2] += cpu() - c0

        return call

    def now(self) -> tuple[float, float]:
        """(seconds since this was made, the process's CPU seconds)."""
        t = os.times()
        return time.monotonic() - self.t0, t.user + t.system

    def mark_ready(self) -> None:
        self.ready = self.now()

    def write(self) -> None:
        lines = "".join(
            f"{k} {int(c)} {s:.3f} {u:.3f}\n" for k, (c, s, u) in sorted(self.counts.items()) if c
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


def _callbacks(
    fs: Filesystem, counts: RequestCounts | None = None, leave_out: frozenset[str] = frozenset()
) -> tuple[Ops, list[Any]]:
    """The ops structure and the ctypes callbacks it points to (kept alive by the caller); the
    requests named in ``leave_out`` get no callback: libfuse answers them ENOSYS itself."""

    def forget(req: int, ino: int, nlookup: int) -> None:
        if not hasattr(_pinned, "on"):
            _pin_thread()
        fs.forget(ino, nlookup)
        lib.fuse_reply_none(req)

    def forget_multi(req: int, count: int, items: Any) -> None:
        if not hasattr(_pinned, "on"):
            _pin_thread()
        for i in range(count):
            fs.forget(items[i].ino, items[i].nlookup)
        lib.fuse_reply_none(req)

    def readdirplus(req: int, ino: int, size: int, off: int, fi: Any) -> None:
        fs.readdir(req, ino, size, off, fi.contents, True)

    def init(_data: Any, conn: Any) -> None:
        if counts is not None:
            counts.mark_ready()
        fs.init(conn.contents)

    def readdir(req: int, ino: int, size: int, off: int, fi: Any) -> None:
        fs.readdir(req, ino, size, off, fi.contents, False)

    def read(req: int, ino: int, size: int, off: int, fi: Any) -> None:
        # READ, the most frequent request (once per file read whole): its own callback rather
        # than ``_guarded(with_fi(...))``, one Python frame less per request (issue 14, warm)
        if not hasattr(_pinned, "on"):
            _pin_thread()
        try:
            fs.read(req, ino, size, off, fi.contents)
        except OSError as e:
            lib.fuse_reply_err(req, e.errno or errno.EIO)
        except Exception:
            log.exception("FUSE read failed")
            lib.fuse_reply_err(req, errno.EIO)

    def with_fi(method: Callable[..., None]) -> Callable[..., None]:
        def call(req: int, ino: int, *rest: Any) -> None:
            method(req, ino, *rest[:-1], rest[-1].contents)

        call.__name__ = method.__name__
        return call

    handlers: dict[str, Callable[..., None]] = {
        "init": init,
        "destroy": lambda _data: fs.destroy(),
        "lookup": _guarded(fs.lookup),
        "forget": forget,
        "getattr": _guarded(lambda req, ino, _fi: fs.getattr(req, ino)),
        "readlink": _guarded(fs.readlink),
        "open": _guarded(with_fi(fs.open)),
        "read": read,
        "release": _guarded(with_fi(fs.release)),
        "opendir": _guarded(with_fi(fs.opendir)),
        "readdir": _guarded(readdir),
        "releasedir": _guarded(with_fi(fs.releasedir)),
        "statfs": _guarded(fs.statfs),
        "getxattr": _guarded(fs.getxattr),
        "listxattr": _guarded(fs.listxattr),
        "forget_multi": forget_multi,
        "readdirplus": _guarded(readdirplus),
    }
    ops = Ops()
    keep = []
    for name, proto in _OPS:
        if proto is not None and name not in leave_out:
            handler = handlers[name]
            if counts is not None and name not in ("init", "destroy"):
                handler = counts.wrap(name, handler)
            cb = proto(handler)
            keep.append(cb)
            setattr(ops, name, cb)
    return ops, keep


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
    """Mount ``fs`` on ``mountpoint`` with the mount ``options`` (``-o``) and serve requests with
    libfuse's worker threads until unmounted (or SIGINT/SIGTERM/SIGHUP); ``stats``: a file the
    request counts go to (``RequestCounts``); ``leave_out``: requests answered ENOSYS by libfuse
    without Python (for GETXATTR and LISTXATTR the kernel then stops sending them for the mount's
    life: ``no_getxattr``/``no_listxattr``).

    ``threads``: the idle workers libfuse keeps, also on one CPU (the guest's). Measured there
    (host pinned to one CPU, libfuse 3.14, 6,400 requests from six readers, warm and cold cache,
    the daemon's whole CPU, medians of 7-11 rounds): the single-threaded loop
    (``fuse_session_loop``) spent 2-3 % less (up to a fifth fewer thread switches), too little for a loop
    that holds every request behind a READ waiting on the network; 2 idle workers spent 3-24 % more,
    1 spent 14-59 % more and 0 spent 46 % more: a worker ends after each burst and the next burst
    starts new ones, each with a new Python thread state."""
    counts = RequestCounts(stats, more=more) if stats else None
    ops, keep = _callbacks(fs, counts, leave_out)
    argv_list = [b"cvmfs", b"-o", ",".join(options).encode()] + ([b"-d"] if debug else [])
    argv = (c_char_p * len(argv_list))(*argv_list)
    args = Args(len(argv_list), argv, 0)
    se = lib.fuse_session_new(ctypes.byref(args), ctypes.byref(ops), ctypes.sizeof(ops), None)
    if not se:
        raise RuntimeError("fuse_session_new failed (bad options?)")
    # libfuse installs its handlers (ending the loop) only over the default ones; Python's SIGINT
    # handler could not run anyway while the main thread waits in the loop.
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        if lib.fuse_set_signal_handlers(se) != 0:
            raise RuntimeError("fuse_set_signal_handlers failed")
        try:
            if lib.fuse_session_mount(se, mountpoint.encode()) != 0:
                raise RuntimeError(f"fuse_session_mount {mountpoint} failed")
            try:
                err = _loop(se, threads)
            finally:
                lib.fuse_session_unmount(se)
                if counts is not None:  # the whole life's counts, not the last 10 s's
                    with contextlib.suppress(OSError):
                        counts.write()
        finally:
            lib.fuse_remove_signal_handlers(se)
    finally:
        lib.fuse_session_destroy(se)
        del keep
    if err < 0:
        raise RuntimeError(f"the FUSE loop ended with error {-err}")


def _loop(se: int, threads: int) -> int:
    """libfuse's multithreaded loop in whichever ABI the library has (3.12 configs, 3.2 struct)."""
    if hasattr(lib, "fuse_loop_cfg_create") and hasattr(lib, "fuse_session_loop_mt_312"):
        _bind("fuse_loop_cfg_create", c_void_p)
        _bind("fuse_loop_cfg_destroy", None, c_void_p)
        _bind("fuse_loop_cfg_set_idle_threads", None, c_void_p, c_uint)
        _bind("fuse_session_loop_mt_312", c_int, c_void_p, c_void_p)
        cfg = lib.fuse_loop_cfg_create()
        try:
            lib.fuse_loop_cfg_set_idle_threads(cfg, threads)
            return int(lib.fuse_session_loop_mt_312(se, cfg))
        finally:
            lib.fuse_loop_cfg_destroy(cfg)
    if hasattr(lib, "fuse_session_loop_mt_32"):
        _bind("fuse_session_loop_mt_32", c_int, c_void_p, POINTER(LoopConfig32))
        return int(lib.fuse_session_loop_mt_32(se, ctypes.byref(LoopConfig32(0, threads))))
    return int(lib.fuse_session_loop(se))


# -- replies ---------------------------------------------------------------------------------------
def reply_err(req: int, err: int) -> None:
    lib.fuse_reply_err(req, err)


def reply_entry(req: int, entry: bytes) -> None:
    """``entry``: a packed ``struct fuse_entry_param`` (``pack_entry``)."""
    lib.fuse_reply_entry(req, entry)


def reply_attr(req: int, entry: bytes, timeout: float) -> None:
    """The attributes of a packed ``struct fuse_entry_param`` (``pack_entry``)."""
    lib.fuse_reply_attr(req, entry[ATTR_START:ATTR_END], timeout)


def reply_readlink(req: int, target: bytes) -> None:
    lib.fuse_reply_readlink(req, target)


def reply_open(req: int, fi: Any) -> None:
    lib.fuse_reply_open(req, ctypes.byref(fi))


def reply_buf(req: int, data: bytes | Any, size: int | None = None) -> None:
    """Answer with ``data``, or its first ``size`` bytes (never more than it has: a ``size`` from
    a catalog that disagrees with the object must not send what lies beyond it)."""
    if size is None:
        size = len(data)
    elif data is not None:
        size = min(size, len(data))
    lib.fuse_reply_buf(req, data, size)


def reply_fd(req: int, fd: int, pos: int, size: int) -> None:
    """Answer a read with ``size`` bytes of ``fd`` at ``pos``: libfuse reads them itself (no splice: see
    ``InodeFilesystem.init``), so the bytes never pass through Python."""
    vec = BufVec(1, 0, 0, Buf(size, FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY, None, fd, pos, 0))
    lib.fuse_reply_data(req, ctypes.byref(vec), 0)


def reply_statfs(req: int, st: Any) -> None:
    lib.fuse_reply_statfs(req, ctypes.byref(st))


def reply_xattr(req: int, size: int) -> None:
    lib.fuse_reply_xattr(req, size)


_buffers = threading.local()


def reply_buffer(size: int) -> Any:
    """A buffer of at least ``size`` bytes for a reply (a READDIR's entries), this thread's own,
    reused from request to request: not a zeroed allocation per request (issue 14, warm). What it
    holds is valid until the thread's next request; ``add_direntry``'s ``end`` keeps a reply to
    ``size``."""
    buf = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _buffers.buf = ctypes.create_string_buffer(size)
    return buf


def add_direntry(
    req: int, buf: Any, pos: int, name: bytes, entry: bytes, off: int, plus: bool, end: int | None = None
) -> int:
    """Add one entry (``entry``: packed by ``pack_entry``) to ``buf`` at ``pos``, within its first
    ``end`` bytes (None: all of it); returns its size (more than is left: not added)."""
    room = (len(buf) if end is None else end) - pos
    where = ctypes.addressof(buf) + pos
    if plus:
        return int(lib.fuse_add_direntry_plus(req, where, room, name, entry, off))
    return int(lib.fuse_add_direntry(req, where, room, name, entry[ATTR_START:ATTR_END], off))
