"""Content-defined chunking of large files (cut points depend on the bytes, not on offsets).

Like the real server, a file larger than the minimum chunk size is cut into chunks between
``min_size`` and ``max_size`` bytes, ``avg_size`` on average (4/8/16 MiB by default), so that an
insertion near the start of a big file changes only the chunks around it.

The rolling hash (ours, not the server's xor32; any content-defined rule gives valid repositories):
a *tabulation hash* over a sliding window of ``WINDOW`` bytes. Each output byte is
``h[i] = T0[b[i]] ^ T1[b[i-1]] ^ T2[b[i-2]] ^ T3[b[i-3]]`` with four fixed random byte permutations ``Tk``.
It is computed for a whole block at C speed: ``bytes.translate`` maps a block through ``Tk`` and
big-integer shift/XOR combines the four shifted copies, so no Python loop runs per byte. A cut
goes after position ``i`` when ``h[i..i+k]`` has its first ``bits`` bits zero (``bits = log2(avg -
min)``, i.e. 22 bits by default: a cut every 4 MiB on average after the 4 MiB minimum); the zero
bytes are found with ``bytes.find``. The rule depends only on the ~6 bytes around the cut, and
the hash is only computed where a cut may fall (from ``min_size`` into each chunk on).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

MiB = 1 << 20
WINDOW = 4

# Fixed tables: the same bytes must give the same cuts on every machine and in every version.
_rng = random.Random(0xC3F5)
_TABLES: list[bytes] = []
for _ in range(WINDOW):
    perm = list(range(256))
    _rng.shuffle(perm)
    _TABLES.append(bytes(perm))
del _rng


@dataclass(frozen=True)
class ChunkingSettings:
    """Chunk sizes in bytes; ``enabled=False`` stores every file as one object."""

    enabled: bool = True
    min_size: int = 4 * MiB
    avg_size: int = 8 * MiB
    max_size: int = 16 * MiB

    def __post_init__(self) -> None:
        if not (0 < self.min_size < self.avg_size < self.max_size):
            raise ValueError("chunk sizes must satisfy 0 < min < avg < max")

    @property
    def bits(self) -> int:
        return max(1, round(math.log2(self.avg_size - self.min_size)))

    def should_chunk(self, size: int) -> bool:
        return self.enabled and size > self.min_size


def window_hash(block: bytes) -> bytes:
    """``h[i]`` for every ``i >= WINDOW-1`` of ``block`` (the first WINDOW-1 positions are history)."""
    n = len(block)
    acc = 0
    for k, table in enumerate(_TABLES):
        # byte i of the result gets T_k[block[i-k]]: shift the translated copy k bytes right
        acc ^= int.from_bytes(block.translate(table), "big") << (8 * (WINDOW - 1 - k))
    full = acc.to_bytes(n + WINDOW - 1, "big")
    return full[WINDOW - 1 : n]


class CutFinder:
    """Finds the cut positions of one stream, fed block by block."""

    def __init__(self, settings: ChunkingSettings):
        self.s = settings
        self.zero_bytes = max(1, settings.bits // 8)
        rest = settings.bits - 8 * self.zero_bytes
        self.rest_mask = (0xFF << (8 - rest)) & 0xFF if rest > 0 else 0
        self.need = self.zero_bytes + (1 if self.rest_mask else 0)
        self.pattern = b"\x00" * self.zero_bytes
        self.history = b""  # last bytes of the previous block (window context and lookahead)
        self.chunk_start = 0  # absolute offset where the current chunk began
        self.pos = 0  # absolute offset of the next byte to be fed

    def feed(self, block: bytes) -> list[int]:
        """Absolute offsets (exclusive ends) of the chunks that end inside what was fed so far."""
        cuts: list[int] = []
        ctx = self.history + block
        base = self.pos - len(self.history)  # absolute offset of ctx[0]
        self.pos += len(block)
        while True:
            lo = self.chunk_start + self.s.min_size - 1  # earliest last byte of a chunk
            hi = self.chunk_start + self.s.max_size - 1  # forced last byte
            # no cut can fall before ``lo``: hash only from there on (saves half the work)
            rs = max(0, lo - (WINDOW - 1) - base)
            if rs + WINDOW - 1 >= len(ctx):
                break
            h = window_hash(ctx[rs:])  # h[j] belongs to absolute position hbase + j
            hbase = base + rs + WINDOW - 1
            # a cut after position p needs h of p .. p+need-1, so we can decide up to:
            decided_end = hbase + len(h) - self.need + 1
            start = max(lo, hbase)
            stop = min(hi, decided_end - 1)
            cut = None
            if start <= stop:
                j = h.find(self.pattern, start - hbase, stop - hbase + self.zero_bytes)
                while 0 <= j <= stop - hbase:
                    if not self.rest_mask or (h[j + self.zero_bytes] & self.rest_mask) == 0:
                        cut = hbase + j + 1
                        break
                    j = h.find(self.pattern, j + 1, stop - hbase + self.zero_bytes)
            if cut is None and hi < decided_end:
                cut = hi + 1
            if cut is None:
                break
            cuts.append(cut)
            self.chunk_start = cut
        keep = WINDOW - 1 + self.need
        self.history = ctx[-keep:] if len(ctx) > keep else ctx
        return cuts


def split_points(data: bytes, settings: ChunkingSettings, block: int = MiB) -> list[int]:
    """Chunk end offsets for an in-memory buffer (the last one is ``len(data)``); for tests."""
    finder = CutFinder(settings)
    cuts: list[int] = []
    for off in range(0, len(data), block):
        cuts.extend(finder.feed(data[off : off + block]))
    if not cuts or cuts[-1] != len(data):
        cuts.append(len(data))
    return cuts


def chunk_ranges(cuts: list[int]) -> Iterator[tuple[int, int]]:
    start = 0
    for end in cuts:
        yield start, end - start
        start = end
