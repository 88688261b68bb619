"""Content-defined chunking of large files, with the real server's cut points.

A file larger than ``min_size`` is cut into chunks of ``min_size`` to ``max_size`` bytes (4, 8 and
16 MiB by default, the server's defaults), so an insertion near the start of a big file changes only
the chunks around it. The cut rule is CernVM-FS's own (``Xor32Detector``; its cut points define the
chunk objects, so the same file published by the real ``cvmfs_server`` and by this project yields the
same chunks and the two share them; tests/cvmfs_interop/test_chunks.py compares with the real tool):

- a rolling value ``x`` (32 bits) takes each byte as ``x = (x << 1) XOR byte``, so ``x`` at offset
  ``o`` depends only on the 32 bytes ending at ``o``: ``x(o) = XOR_k byte[o-k] << k`` (k < 32);
- the first offset ``o`` from ``chunk_start + min_size`` on where ``|int32(x(o)) - (2^31 - 1)| <
  floor((2^32 - 1) / avg_size)`` (a window of 1021 values around ``0x7FFFFFFF`` by default) starts the
  next chunk (the chunk is ``[chunk_start, o)``); without one, the chunk ends at ``max_size``.

``x`` is computed for a whole block at once with numpy (five shift-XOR doublings over 32-bit words),
only where a cut may fall: from ``min_size`` into each chunk until the cut. numpy is imported only
here, on the publisher side; the reader and the FUSE client never import this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MiB = 1 << 20
WINDOW = 32  # bytes that influence x(o)
MAGIC = (1 << 32) // 2 - 1  # 0x7FFFFFFF, the centre of the accepted window
SCAN = 256 << 10  # positions hashed per numpy pass (memory: about 16 bytes per position)


@dataclass(frozen=True)
class ChunkingSettings:
    """Chunk sizes in bytes; ``enabled=False`` stores every file as one object."""

    enabled: bool = True
    min_size: int = 4 * MiB
    avg_size: int = 8 * MiB
    max_size: int = 16 * MiB

    def __post_init__(self) -> None:
        if not (WINDOW <= self.min_size < self.avg_size < self.max_size):
            raise ValueError(f"chunk sizes must satisfy {WINDOW} <= min < avg < max")

    @property
    def threshold(self) -> int:
        """Half-width of the accepted window of ``x`` around ``MAGIC`` (the server's integer division)."""
        return 0xFFFFFFFF // self.avg_size

    def should_chunk(self, size: int) -> bool:
        return self.enabled and size > self.min_size


def rolling_values(data: bytes) -> npt.NDArray[np.uint32]:
    """``x(o)`` for every ``o >= WINDOW - 1`` of ``data`` (the first ``WINDOW - 1`` bytes are history)."""
    import numpy as np

    w = np.frombuffer(data, dtype=np.uint8).astype(np.uint32)
    shift = 1
    while shift < WINDOW:  # after the step with shift s, w[o] = XOR_{k<2s} data[o-k] << k
        w[shift:] ^= w[:-shift] << np.uint32(shift)
        shift *= 2
    return w[WINDOW - 1 :]


def first_cut(data: bytes, threshold: int) -> int:
    """Index (into ``rolling_values(data)``) of the first accepted value, or -1."""
    import numpy as np

    x = rolling_values(data)
    # |int32(x) - MAGIC| < t  <=>  x - (MAGIC - t + 1) < 2t - 1  (unsigned, modulo 2^32)
    hits = (x - np.uint32(MAGIC - threshold + 1)) < np.uint32(2 * threshold - 1)
    i = int(hits.argmax())
    return i if hits[i] else -1


class CutFinder:
    """Finds the cut positions of one stream, fed block by block (the cuts do not depend on the block
    sizes)."""

    def __init__(self, settings: ChunkingSettings):
        self.s = settings
        self.history = b""  # the last WINDOW - 1 bytes fed
        self.chunk_start = 0  # absolute offset where the current chunk began
        self.pos = 0  # absolute offset of the next byte to be fed

    def feed(self, block: bytes) -> list[int]:
        """Absolute offsets (exclusive ends) of the chunks that end inside what was fed so far."""
        cuts: list[int] = []
        ctx = self.history + block
        base = self.pos - len(self.history)  # absolute offset of ctx[0]
        self.pos += len(block)
        while True:
            lo = max(self.chunk_start + self.s.min_size, self.pos - len(block))  # first offset to test
            hi = min(self.chunk_start + self.s.max_size, self.pos)  # tested offsets end before
            cut = -1
            while lo < hi and cut < 0:
                end = min(hi, lo + SCAN)
                i = first_cut(ctx[lo - (WINDOW - 1) - base : end - base], self.s.threshold)
                cut = lo + i if i >= 0 else -1
                lo = end
            if cut < 0 and self.chunk_start + self.s.max_size <= self.pos:
                cut = self.chunk_start + self.s.max_size
            if cut < 0:
                break
            cuts.append(cut)
            self.chunk_start = cut
        self.history = ctx[-(WINDOW - 1) :]
        return cuts


def split_points(data: bytes, settings: ChunkingSettings, block: int = MiB) -> list[int]:
    """Chunk end offsets for an in-memory buffer (the last one is ``len(data)``); for tests."""
    finder = CutFinder(settings)
    cuts: list[int] = []
    for off in range(0, len(data), block):
        cuts.extend(finder.feed(data[off : off + block]))
    cuts = [c for c in cuts if c < len(data)]
    cuts.append(len(data))
    return cuts


def chunk_ranges(cuts: list[int]) -> Iterator[tuple[int, int]]:
    start = 0
    for end in cuts:
        yield start, end - start
        start = end
