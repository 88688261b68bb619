"""gzip on several cores, with output that does not depend on how many.

pigz's method: the input is cut into fixed 1 MiB blocks; each is deflated on its own (at the same
level as gzip) with the previous block's last 32 KiB as preset dictionary, and ended with a sync
flush so that the pieces concatenate into one valid deflate stream; a final empty block, CRC-32 and
length close the gzip member. The block boundaries are fixed, so the bytes are the same with one
worker or many; zlib releases the GIL while deflating, so threads use all cores.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

#: gzip header: deflate, no flags (no name), mtime 0, no extra flags, OS = Unix
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
BLOCK = 1 << 20
WINDOW = 32 * 1024
_FINAL_EMPTY_BLOCK = b"\x03\x00"


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def _deflate(block: bytes, zdict: bytes, level: int) -> bytes:
    if zdict:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(block) + c.flush(zlib.Z_SYNC_FLUSH)


class ParallelGzip:
    """One gzip member written through ``out``; call ``write`` with any pieces, then ``close``."""

    def __init__(self, out: Callable[[bytes], None], *, level: int = 6, workers: int | None = None) -> None:
        self.out, self.level = out, level
        self.workers = workers or default_workers()
        self.pool = ThreadPoolExecutor(self.workers, "gzip") if self.workers > 1 else None
        self.pending: deque[Future[bytes]] = deque()
        self.buf = bytearray()
        self.tail = b""
        self.crc = 0
        self.isize = 0
        self.out(HEADER)

    def write(self, data: bytes) -> None:
        if not self.buf and len(data) == BLOCK:
            self._submit(data)
            return
        self.buf += data
        while len(self.buf) >= BLOCK:
            block = bytes(self.buf[:BLOCK])
            del self.buf[:BLOCK]
            self._submit(block)

    def _submit(self, block: bytes) -> None:
        self.crc = zlib.crc32(block, self.crc)
        self.isize += len(block)
        zdict, self.tail = self.tail, block[-WINDOW:]
        if self.pool is None:
            self.out(_deflate(block, zdict, self.level))
            return
        self.pending.append(self.pool.submit(_deflate, block, zdict, self.level))
        while len(self.pending) > 2 * self.workers:  # bounded memory: a few blocks in flight
            self.out(self.pending.popleft().result())

    def close(self) -> None:
        if self.buf:
            self._submit(bytes(self.buf))
            self.buf.clear()
        while self.pending:
            self.out(self.pending.popleft().result())
        self.out(_FINAL_EMPTY_BLOCK + struct.pack("<II", self.crc & 0xFFFFFFFF, self.isize & 0xFFFFFFFF))
        self.shutdown()

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
