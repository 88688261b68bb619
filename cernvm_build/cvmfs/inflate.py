"""Inflating a whole zlib stream of a known size in one call with libdeflate, where it is there.

On an un-seeded first boot of μCernVM (one vCPU under TCG) the mount daemon inflates every object it
fetches (~100 MB for the Debian tree): inflating and writing the objects over 128 KiB was the
largest item of the boot's fetching (15.4 of the daemon's 38 guest-s by ``running``, icount, issue
13; 10.8 with this). libdeflate inflates a whole buffer with a fraction of zlib's instructions (the
same data: 8 MiB in 10 ms against 28 ms on the host), and an object's stored bytes are whole in
memory once their hash is checked, its inflated size declared by the catalog. The initrd ships the
library when the build host has it (``bootloader/runtime.py``); without it, or for objects above
``WHOLE_MAX``, zlib streams as before.

The checks are zlib's: the stream's own Adler-32 (libdeflate checks it), no byte after the stream,
and never more output than declared (the buffer is that size: a zlib bomb ends there).
Standard library only (ctypes): it runs in the μCernVM initrd.
"""

from __future__ import annotations

import ctypes
import threading

#: the largest declared size inflated in one buffer, the largest chunk a publish makes by default
#: (cvmfs's 16 MiB): a thread holds the stored bytes and two copies of the output at most, so the
#: daemon's threads stay within a 1 GB guest; bigger objects stream through zlib in 1 MiB steps
WHOLE_MAX = 16 << 20
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
        #: one decompressor per thread (a decompressor is not to be shared by threads at once)
        self.local = threading.local()


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


def inflate_exact(data: bytes, size: int) -> bytes | None:
    """The zlib stream ``data`` inflated: exactly ``size`` bytes or an error (Damaged; Overflow
    when it inflates to more; a shorter result is returned as it is, for the caller's size check).
    None when libdeflate is not there or ``size`` is above ``WHOLE_MAX`` (then the caller streams)."""
    lib = _library()
    if lib is None or size > WHOLE_MAX:
        return None
    d = getattr(lib.local, "d", None)
    if d is None:
        d = lib.local.d = lib.alloc()
        if not d:
            return None
    out = bytearray(size)
    used, made = ctypes.c_size_t(), ctypes.c_size_t()
    buf = (ctypes.c_char * size).from_buffer(out) if size else None
    res = lib.decompress(d, data, len(data), buf, size, ctypes.byref(used), ctypes.byref(made))
    del buf  # the bytearray may be resized again only once no ctypes view holds it
    if res == _INSUFFICIENT_SPACE:
        raise Overflow(f"inflates to more than {size} bytes")
    if res != _SUCCESS:
        raise Damaged("not a good zlib stream (bad data or a bad Adler-32)")
    if used.value != len(data):
        raise Damaged("bytes after the end of the zlib stream")
    if made.value != size:
        del out[made.value :]
    return bytes(out)  # one copy (memcpy: little beside inflating) for callers that keep bytes
