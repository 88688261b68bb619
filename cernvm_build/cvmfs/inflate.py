"""Inflating a whole zlib stream of a known size in one call with libdeflate, where it is there.

On an un-seeded first boot of μCernVM (one vCPU under TCG) the mount daemon inflates every object it
fetches (~100 MB for the Debian tree): inflating and writing the objects over 128 KiB was the
largest item of the boot's fetching (15.4 of the daemon's 38 guest-s by ``running``, icount, issue
13; 10.8 with this). libdeflate inflates a whole buffer with a fraction of zlib's instructions (the
same data: 8 MiB in 10 ms against 28 ms on the host), and an object's stored bytes are whole in
memory once their hash is checked, its inflated size declared by the catalog. The initrd always ships
the library (``bootloader/runtime.py`` requires it); without it (the host toolkit may lack it), for
objects above ``WHOLE_MAX`` or with ``AT_ONCE`` inflates running, zlib streams as before.

The checks are zlib's: the stream's own Adler-32 (libdeflate checks it), no byte after the stream,
and never more output than declared (the buffer is that size: a zlib bomb ends there). The store
does not raise libdeflate's verdict: on a stream it refuses, zlib's streaming path runs over the same
bytes, so the diagnosis and the message are zlib's on every host (libdeflate calls a cut trailer an
overflow). Memory: at most ``AT_ONCE`` callers hold a ``slot`` at once, and only they join the stored
bytes (another caller streams the blocks it has, 1 MiB of output at a time); each holds the stored
bytes (twice while they are joined) and one output buffer of the declared size, handed to the caller
without a copy. Decompressors come from a small pool of at
most ``AT_ONCE`` (libfuse2 runs each request on a fresh thread state: one per thread leaked one per
request), freed at exit. Standard library only (ctypes): it runs in the μCernVM initrd.
"""

from __future__ import annotations

import atexit
import ctypes
import threading

#: the largest declared size inflated in one buffer, the largest chunk a publish makes by default
#: (cvmfs's 16 MiB); bigger objects stream through zlib in 1 MiB steps
WHOLE_MAX = 16 << 20
#: the largest declared size left to zlib all the same: below it the one call into libdeflate costs
#: more than zlib's whole inflate (ctypes' fixed work per call, the decompressor pool, the slot:
#: ~7 us on the host; zlib/libdeflate CPU at 1 KB 0.51, 2 KB 0.52-0.66, 4 KB 0.77, 8 KB ~1.0,
#: 16 KB 1.1-1.4, 32 KB 1.3-2.3: note of bl15), and a boot reads many files this small
WHOLE_MIN = 4 << 10
#: whole-buffer inflates at once (``slot``; the others stream through zlib): each holds up to ~16.4 MiB
#: of stored bytes twice (blocks and join) and a 16 MiB output, ~49 MiB, so ~100 MiB for the inflates,
#: not one join and buffer per FUSE and prefetch thread (18, ~0.9 GB); a caller then holds its output
#: while it writes it (and the LRU or keep-ahead may keep a copy, bounded by their own limits). A
#: caller without a slot holds what it held before: the stored blocks as they come (a spilled or
#: cached object's: read 1 MiB at a time)
AT_ONCE = 2
SONAME = "libdeflate.so.0"

# libdeflate_result
_SUCCESS, _BAD_DATA, _SHORT_OUTPUT, _INSUFFICIENT_SPACE = 0, 1, 2, 3


class Damaged(ValueError):
    """The stream is not a good zlib stream (bad data, a bad Adler-32, bytes after its end)."""


class Overflow(ValueError):
    """The stream inflates to more than the size given (inflating stopped there)."""


class _Lib:
    def __init__(self, lib: ctypes.CDLL):
        self.alloc = lib.libdeflate_alloc_decompressor
        self.alloc.restype = ctypes.c_void_p
        self.alloc.argtypes = []
        self.decompress = lib.libdeflate_zlib_decompress_ex
        self.decompress.restype = ctypes.c_int
        self.decompress.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        self.free = lib.libdeflate_free_decompressor
        self.free.restype = None
        self.free.argtypes = [ctypes.c_void_p]
        #: idle decompressors (one is not to be used by two threads at once); at most AT_ONCE,
        #: as ``slot`` lets no more inflate at once
        self.pool: list[int] = []
        self.lock = threading.Lock()
        #: whole-buffer inflates that may start now (``slot``; under ``lock``)
        self.free_slots = AT_ONCE
        atexit.register(self.close)

    # take and give without the lock: a list's pop and append are atomic under the GIL, and the
    # pool cannot grow past AT_ONCE as the store inflates only with a ``slot`` (a caller without
    # one, a test, may leave one more idle until exit). Two lock round trips an object less.
    def take(self) -> int | None:
        try:
            return self.pool.pop()
        except IndexError:
            return self.alloc() or None

    def give(self, d: int) -> None:
        if len(self.pool) < AT_ONCE:
            self.pool.append(d)
        else:
            self.free(d)

    def close(self) -> None:
        with self.lock:
            pool, self.pool = self.pool, []
        for d in pool:
            self.free(d)


_lib: _Lib | None = None
_loaded = False
_load_lock = threading.Lock()


def _library() -> _Lib | None:
    global _lib, _loaded
    if not _loaded:
        with _load_lock:
            if not _loaded:
                try:
                    _lib = _Lib(ctypes.CDLL(SONAME))
                except (OSError, AttributeError):  # absent, or too old for the _ex call
                    _lib = None
                _loaded = True
    return _lib


def available() -> bool:
    return _library() is not None


class slot:  # used as a function: ``with inflate.slot() as ok``
    """Whether the caller may inflate a whole buffer now (one of ``AT_ONCE``; False without libdeflate
    or with all taken: then it streams). Held while the stored bytes are joined and inflated, so only
    ``AT_ONCE`` callers ever join them; released before the output is handed on. A class with a
    counter under the pool's lock, not a generator context manager over a ``BoundedSemaphore``
    (contextlib's frames and threading's Condition in Python: ~25 Python lines on every cold
    object, issue 13)."""

    __slots__ = ("_lib",)

    def __enter__(self) -> bool:
        lib = _library()
        if lib is not None:
            with lib.lock:
                if lib.free_slots:
                    lib.free_slots -= 1
                    self._lib: _Lib | None = lib
                    return True
        self._lib = None
        return False

    def __exit__(self, *exc: object) -> None:
        lib = self._lib
        if lib is not None:
            with lib.lock:
                lib.free_slots += 1


#: output buffers kept for the next object (``reusable``): at most AT_ONCE, of at most REUSE_MAX bytes
REUSE_MAX = 4 << 20
_spare: list[bytearray] = []
_spare_lock = threading.Lock()


class reusable:  # used as a function: ``with inflate.reusable() as into``
    """An output buffer for ``inflate_exact(..., into=)`` whose result the caller is done with when
    this ends (written to the plain cache, not kept), then kept for the next caller. A fresh
    buffer of a large object was fresh pages each time (glibc maps a block of 1 MiB or more,
    ``mount._tame_malloc``; freed, it is unmapped): a page fault and the kernel's zeroing per 4 KiB,
    then bytearray's own zeroing — on the host 26,791 minor faults and 0.10 CPU-s for 84 MB of
    150 KB-4 MB objects, against 9 and 0.04-0.05 s with the memory kept (issue 13: the large
    objects' inflating is the largest item of an un-seeded first boot's making of copies). A
    class, not a generator context manager: one is entered for every cold object."""

    __slots__ = ("_buf",)

    def __enter__(self) -> bytearray:
        with _spare_lock:
            buf = self._buf = _spare.pop() if _spare else bytearray()
        return buf

    def __exit__(self, *exc: object) -> None:
        buf = self._buf
        if len(buf) <= REUSE_MAX:
            with _spare_lock:
                if len(_spare) < AT_ONCE:
                    _spare.append(buf)


def _output(size: int, into: bytearray | None) -> bytearray | None:
    """``into`` grown to at least ``size`` bytes if it may serve (``reusable``), else None."""
    if into is None or size > REUSE_MAX:
        return None
    if len(into) < size:
        try:
            into.extend(bytes(size - len(into)))
        except BufferError:  # a view of its last result is still held somewhere: not reused
            return None
    return into


def inflate_exact(data: bytes, size: int, into: bytearray | None = None) -> bytearray | memoryview | None:
    """The zlib stream ``data`` inflated: exactly ``size`` bytes or an error (Damaged; Overflow
    when it inflates to more; a shorter result is returned as it is, for the caller's size check).
    None when libdeflate is not there or ``size`` is above ``WHOLE_MAX`` (then the caller streams).
    The caller holds a ``slot``: that bounds how many run at once. ``into``: a ``reusable``
    buffer to inflate into (up to REUSE_MAX bytes), then the result is a view of it, valid until
    that ``reusable`` ends."""
    lib = _library()
    if lib is None or size > WHOLE_MAX:
        return None
    d = lib.take()
    if d is None:
        return None
    reused = _output(size, into)
    try:
        out = bytearray(size) if reused is None else reused
        used, made = ctypes.c_size_t(), ctypes.c_size_t()
        # The output's address through a one-byte view, not a ``c_char * size`` array: that made
        # a new ctypes type per object size (uncached, ~8 us on the host: 40 % of inflating a
        # 4 KB object, and a cycle left for the garbage collector), on every small object of a
        # cold read (issue 13).
        view = ctypes.c_char.from_buffer(out) if size else None
        buf = ctypes.addressof(view) if view is not None else None
        res = lib.decompress(d, data, len(data), buf, size, ctypes.byref(used), ctypes.byref(made))
        del view  # the bytearray may be resized again only once no ctypes view holds it
    finally:
        lib.give(d)
    if res == _INSUFFICIENT_SPACE:
        raise Overflow(f"inflates to more than {size} bytes")
    if res != _SUCCESS:
        raise Damaged("not a good zlib stream (bad data or a bad Adler-32)")
    if used.value != len(data):
        raise Damaged("bytes after the end of the zlib stream")
    if reused is not None:
        return memoryview(reused)[: made.value]
    if made.value != size:
        del out[made.value :]
    return out  # no copy: every caller takes a bytes-like (writev, b"".join)
