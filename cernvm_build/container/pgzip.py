"""gzip on several cores, with output that does not depend on how many.

pigz's method: the input is cut into fixed 1 MiB blocks; each is deflated on its own (at the same
level as gzip) with the previous block's last 32 KiB as preset dictionary, and ended with a sync
flush so that the pieces concatenate into one valid deflate stream; a final empty block, CRC-32 and
length close the gzip member. The block boundaries are fixed, so the bytes are the same with one
worker or many; zlib releases the GIL while deflating, so threads use all cores.

Several members can be written at once through one ``Deflaters`` (a multi-layer export streams
every layer's gzip in one pass over the tree): they share its threads and its bound on the blocks
in flight, so memory does not grow with the number of members.
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


class Deflaters:
    """The deflating threads (none with one worker: the caller deflates) and the blocks in flight of
    every member using them, oldest first; at most ``2 * workers`` are held at once."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self.pool = ThreadPoolExecutor(self.workers, "gzip") if self.workers > 1 else None
        self.order: deque[ParallelGzip] = deque()  # the member of each block submitted, in order
        self.in_flight = 0

    def submit(self, member: ParallelGzip, block: bytes, zdict: bytes, level: int) -> None:
        if self.pool is None:
            member.out(_deflate(block, zdict, level))
            return
        member.pending.append(self.pool.submit(_deflate, block, zdict, level))
        self.order.append(member)
        self.in_flight += 1
        while self.in_flight > 2 * self.workers:  # bounded memory: write out the oldest block
            oldest = self.order.popleft()
            if oldest.pending:  # else that member was closed, its blocks written already
                oldest.out_one()

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


class ParallelGzip:
    """One gzip member written through ``out``; call ``write`` with any pieces, then ``close``.
    ``deflaters``: shared with other members (the caller shuts it down); by default its own."""

    def __init__(
        self,
        out: Callable[[bytes], None],
        *,
        level: int = 6,
        workers: int | None = None,
        deflaters: Deflaters | None = None,
    ) -> None:
        self.out, self.level = out, level
        self.own = deflaters is None
        self.deflaters = deflaters if deflaters is not None else Deflaters(workers)
        self.pending: deque[Future[bytes]] = deque()
        self.buf = bytearray()
        self.tail = b""
        self.crc = 0
        self.isize = 0
        self.out(HEADER)

    def write(self, data: bytes | bytearray) -> None:
        if not self.buf and len(data) == BLOCK:
            self._submit(bytes(data))
            return
        self.buf += data
        if len(self.buf) >= BLOCK:
            view = memoryview(self.buf)
            whole = len(self.buf) - len(self.buf) % BLOCK
            for start in range(0, whole, BLOCK):
                self._submit(bytes(view[start : start + BLOCK]))
            view.release()
            del self.buf[:whole]

    def _submit(self, block: bytes) -> None:
        self.crc = zlib.crc32(block, self.crc)
        self.isize += len(block)
        zdict, self.tail = self.tail, block[-WINDOW:]
        self.deflaters.submit(self, block, zdict, self.level)

    def out_one(self) -> None:
        self.deflaters.in_flight -= 1
        self.out(self.pending.popleft().result())

    def close(self) -> None:
        if self.buf:
            self._submit(bytes(self.buf))
            self.buf.clear()
        while self.pending:
            self.out_one()
        self.out(_FINAL_EMPTY_BLOCK + struct.pack("<II", self.crc & 0xFFFFFFFF, self.isize & 0xFFFFFFFF))
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the threads when they are this member's own (also after an error)."""
        if self.own:
            self.deflaters.shutdown()
