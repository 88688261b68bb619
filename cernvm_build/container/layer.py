"""A deterministic tar layer, streamed from a tree source.

Reading the tree (for CernVM-FS: fetching, inflating and verifying objects) runs in the caller's
thread; hashing and writing run in a second thread, and deflating in a pool of threads (``pgzip``:
fixed blocks, so the bytes do not depend on the number of threads). Memory stays bounded by the
queues between them, whatever the size of the files.

Determinism: entries come in the source's order (sorted), mtimes are one fixed value unless kept, user
and group names are empty, numeric owners are the tree's own, PAX headers for xattrs are sorted, and
gzip's header has mtime 0 and no file name.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import BuildError
from ..tarwrite import TarWriter
from ..tree import TreeReport, TreeSource
from .pgzip import ParallelGzip

GZIP_LEVEL = 6
_BLOCK = 1 << 20  # read size and hand-over size between the two threads
_QUEUE_DEPTH = 8


@dataclass
class LayerResult:
    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    size: int  # bytes of the uncompressed tar
    digest: str | None = None  # "sha256:<hex>" of the gzip stream, when one was written
    compressed_size: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    specials: int = 0
    content_bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    report: TreeReport = field(default_factory=TreeReport)


class _Pipeline:
    """Second thread: hash the tar stream, write it raw and/or gzip it, hash and write that."""

    def __init__(
        self, raw_out: BinaryIO | None, gz_out: BinaryIO | None, level: int, workers: int | None
    ) -> None:
        self.raw_out, self.gz_out = raw_out, gz_out
        self.raw_hash, self.gz_hash = hashlib.sha256(), hashlib.sha256()
        self.size = self.gz_size = 0
        self.comp = ParallelGzip(self._gz, level=level, workers=workers) if gz_out is not None else None
        self.q: queue.Queue[bytes | None] = queue.Queue(_QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="layer-writer", daemon=True)
        self.thread.start()

    def _gz(self, data: bytes) -> None:
        if data and self.gz_out is not None:
            self.gz_hash.update(data)
            self.gz_size += len(data)
            self.gz_out.write(data)

    def _run(self) -> None:
        try:
            while (block := self.q.get()) is not None:
                self.raw_hash.update(block)
                self.size += len(block)
                if self.raw_out is not None:
                    self.raw_out.write(block)
                if self.comp is not None:
                    self.comp.write(block)
            if self.comp is not None:
                self.comp.close()
        except BaseException as e:  # handed to the producer, which re-raises it
            self.error = e
            if self.comp is not None:
                self.comp.shutdown()
            while self.q.get() is not None:  # drain so the producer never blocks
                pass

    def put(self, block: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(block)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        if self.thread.is_alive():
            self.q.put(None)
            self.thread.join()


def write_layer(
    source: TreeSource,
    *,
    raw_out: BinaryIO | None = None,
    gz_out: BinaryIO | None = None,
    mtime: int | None = 0,
    level: int = GZIP_LEVEL,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> LayerResult:
    """Write ``source`` as one tar layer to ``raw_out`` and/or gzipped to ``gz_out``.

    ``mtime`` is the fixed modification time of every member; None keeps the tree's own. ``progress``
    is called with the number of content bytes read since the last call. ``workers`` deflate
    threads (default: one per core) do not change the output bytes.
    """
    pipe = _Pipeline(raw_out, gz_out, level, workers)
    res = LayerResult(diff_id="", size=0)
    buf = bytearray()

    def emit(data: bytes | bytearray) -> None:
        if len(data) >= _BLOCK // 4:  # big blocks go as they are: one copy less
            if buf:
                pipe.put(bytes(buf))
                buf.clear()
            pipe.put(bytes(data))
            return
        buf.extend(data)
        if len(buf) >= _BLOCK:
            pipe.put(bytes(buf))
            buf.clear()

    tar = TarWriter(
        emit, mtime=mtime, where=source.description, error=BuildError, report=res.report, progress=progress
    )
    try:
        for entry in source.entries():
            tar.add(entry, source.open)
        tar.end()
        pipe.put(bytes(buf))
        buf.clear()
        pipe.close()
    except BaseException:
        pipe.abort()
        raise
    res.files, res.dirs, res.symlinks = tar.files, tar.dirs, tar.symlinks
    res.hardlinks, res.specials, res.content_bytes = tar.hardlinks, tar.specials, tar.content_bytes
    res.skipped = list(res.report.skipped)
    res.diff_id = "sha256:" + pipe.raw_hash.hexdigest()
    res.size = pipe.size
    if gz_out is not None:
        res.digest = "sha256:" + pipe.gz_hash.hexdigest()
        res.compressed_size = pipe.gz_size
    return res
