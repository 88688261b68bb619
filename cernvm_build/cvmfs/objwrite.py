"""Writing content-addressed objects into a repository's ``data/`` (publisher side).

Every object is compressed and hashed while it streams through (1 MiB blocks), written to a
temporary file in ``data/txn/`` and renamed to ``data/XX/<rest><suffix>`` only when complete, so a
reader never sees half an object and a killed writer leaves only temporary files (removed by the
next publish). An object that already exists with the same stored size is kept: it was written
by the same rename, and its name is the hash of its bytes (de-duplication across files and
revisions). Thread-safe: files are compressed in parallel (zlib and hashlib release the GIL).
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..fsutil import PendingSync, hides_from_others, served_folders
from .catalog_write import ChunkRow
from .chunking import ChunkingSettings, CutFinder
from .objects import new_hasher, object_path

BLOCK = 1 << 20
FSYNC_MAX = 512  # up to this many new objects are fsynced one by one
SMALL = 1 << 20  # files up to this size are compressed in one call


@dataclass(frozen=True)
class StoredFile:
    """What the catalog needs about a regular file's content."""

    digest: bytes | None  # whole-file object hash (None for chunked files, as the server writes)
    chunks: tuple[ChunkRow, ...]
    size: int


class _Pending:
    """One object being written: compressor, hasher, temp file."""

    def __init__(self, store: ObjectWriter):
        self.store = store
        self.comp = zlib.compressobj()
        self.hasher = new_hasher(store.algorithm)
        fd, self.tmp = store.temp_file()
        self.f = os.fdopen(fd, "wb", buffering=0)
        self.raw_size = 0
        self.stored = 0

    def write(self, data: bytes) -> None:
        out = self.comp.compress(data)
        self.raw_size += len(data)
        if out:
            self.hasher.update(out)
            self.f.write(out)
            self.stored += len(out)

    def finish(self, suffix: str) -> bytes:
        out = self.comp.flush()
        self.hasher.update(out)
        self.f.write(out)
        self.stored += len(out)
        self.f.close()
        digest = self.hasher.digest()
        self.store._commit_file(self.tmp, self._name(digest), suffix, self.stored)
        return digest

    def _name(self, digest: bytes) -> str:
        return digest.hex() + {"sha1": "", "rmd160": "-rmd160", "shake128": "-shake128"}[self.store.algorithm]

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class ObjectWriter:
    """Writes objects of one repository; counts what was new."""

    def __init__(self, stratum: Path, algorithm: str = "sha1"):
        self.data = stratum / "data"
        self.txn = self.data / "txn"
        self.algorithm = algorithm
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.objects_written = 0
        self.bytes_written = 0
        self._tmp_counter = 0
        self._pending = PendingSync(self.data, FSYNC_MAX)  # objects written, for sync()
        #: called with the number of raw bytes consumed, from worker threads
        self.on_bytes: Callable[[int], None] | None = None
        self.txn.mkdir(parents=True, exist_ok=True)
        for i in range(256):
            (self.data / f"{i:02x}").mkdir(exist_ok=True)
        # served by a web server: under umask 077 objects were 0600 in 0700 folders (the manifest 0644)
        served_folders(stratum, self.data, *(self.data / f"{i:02x}" for i in range(256)))
        self._chmod = hides_from_others()

    def temp_file(self) -> tuple[int, str]:
        """A new temporary file in ``data/txn`` (cheaper than mkstemp: we hold the lock)."""
        with self._lock:
            self._tmp_counter += 1
            n = self._tmp_counter
        path = f"{self.txn}/obj.{os.getpid()}.{n}.tmp"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        if self._chmod:
            os.fchmod(fd, 0o644)
        return fd, path

    def name_of(self, digest: bytes) -> str:
        return digest.hex() + {"sha1": "", "rmd160": "-rmd160", "shake128": "-shake128"}[self.algorithm]

    def path_of(self, name: str, suffix: str) -> Path:
        return self.data.parent / object_path(name, suffix)

    def _claim(self, key: str, dest: Path | str, stored: int) -> bool:
        """True if this caller should write ``key``; False when it exists (same stored size)."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        try:
            return os.stat(dest).st_size != stored
        except FileNotFoundError:
            return True

    def _count(self, stored: int, dest: Path | str) -> None:
        with self._lock:
            self.objects_written += 1
            self.bytes_written += stored
        self._pending.add(dest)

    def _commit_file(self, tmp: str, name: str, suffix: str, stored: int) -> None:
        dest = self.path_of(name, suffix)
        if self._claim(name + suffix, dest, stored):
            os.replace(tmp, dest)
            self._count(stored, dest)
        else:
            os.unlink(tmp)

    def put_compressed(self, blob: bytes, suffix: str) -> str:
        """Store already-compressed bytes; returns the object name (hash + algorithm id).

        The path for most objects of a big publish (small files): plain strings and descriptors,
        no Path or file objects, as few system calls as an atomic write allows."""
        h = new_hasher(self.algorithm)
        h.update(blob)
        name = self.name_of(h.digest())
        dest = f"{self.data}/{name[:2]}/{name[2:]}{suffix}"
        if self._claim(name + suffix, dest, len(blob)):
            fd, tmp = self.temp_file()
            try:
                try:
                    view = memoryview(blob)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            self._count(len(blob), dest)
        return name

    def put_small_file(self, fd: int, size: int) -> StoredFile:
        """A regular file of at most ``SMALL`` bytes that is not chunked, read in one call from the
        descriptor ``fd`` (the caller opens and closes it)."""
        data = os.read(fd, size + 1)
        while len(data) <= size and (more := os.read(fd, size + 1 - len(data))):
            data += more
        if len(data) != size:
            raise _SizeChanged(size, len(data))
        name = self.put_compressed(zlib.compress(data), "")
        return StoredFile(bytes.fromhex(name[:40]), (), size)

    def put_bytes(self, data: bytes, suffix: str = "") -> str:
        return self.put_compressed(zlib.compress(data), suffix)

    def put_path(self, path: Path, suffix: str) -> str:
        """Stream a file (a finished catalog or history database) into an object."""
        with open(path, "rb") as f:
            p = _Pending(self)
            try:
                while block := f.read(BLOCK):
                    p.write(block)
                return self.name_of(p.finish(suffix))
            except BaseException:
                p.abort()
                raise

    def put_stream(self, f: BinaryIO, size: int, chunking: ChunkingSettings) -> StoredFile:
        """Store a regular file's content read from ``f`` (``size`` bytes expected)."""
        if size <= SMALL and not chunking.should_chunk(size):
            data = f.read(size + 1)
            if len(data) != size:
                raise _SizeChanged(size, len(data))
            name = self.put_bytes(data)
            if self.on_bytes:
                self.on_bytes(size)
            return StoredFile(bytes.fromhex(name[:40]), (), size)
        if not chunking.should_chunk(size):
            p = _Pending(self)
            try:
                while block := f.read(BLOCK):
                    p.write(block)
                    if self.on_bytes:
                        self.on_bytes(len(block))
                if p.raw_size != size:
                    raise _SizeChanged(size, p.raw_size)
                return StoredFile(p.finish(""), (), size)
            except BaseException:
                p.abort()
                raise
        return self._put_chunked(f, size, chunking)

    def _put_chunked(self, f: BinaryIO, size: int, chunking: ChunkingSettings) -> StoredFile:
        finder = CutFinder(chunking)
        chunks: list[ChunkRow] = []
        first: _Pending | None = None  # held back: a file that yields one chunk is a plain object
        cur = _Pending(self)
        start = 0  # absolute offset of cur's first byte
        pos = 0
        try:
            while block := f.read(BLOCK):
                cuts = finder.feed(block)
                off = 0
                for cut in cuts:
                    cur.write(block[off : cut - pos])
                    off = cut - pos
                    if first is None and not chunks:
                        first = cur
                    else:
                        if first is not None:
                            chunks.append(ChunkRow(0, first.raw_size, first.finish("P")))
                            first = None
                        chunks.append(ChunkRow(start, cur.raw_size, cur.finish("P")))
                    start = cut
                    cur = _Pending(self)
                cur.write(block[off:])
                pos += len(block)
                if self.on_bytes:
                    self.on_bytes(len(block))
            if pos != size:
                raise _SizeChanged(size, pos)
            if cur.raw_size == 0 and first is not None:
                cur.abort()
                return StoredFile(first.finish(""), (), size)
            if first is None and not chunks:
                return StoredFile(cur.finish(""), (), size)
            if first is not None:
                chunks.append(ChunkRow(0, first.raw_size, first.finish("P")))
                first = None
            if cur.raw_size:
                chunks.append(ChunkRow(start, cur.raw_size, cur.finish("P")))
            else:
                cur.abort()
            return StoredFile(None, tuple(chunks), size)
        except BaseException:
            cur.abort()
            if first is not None:
                first.abort()
            raise

    def clean_txn(self) -> None:
        """Remove what a killed publish left in ``data/txn`` (call while holding the lock)."""
        for entry in os.scandir(self.txn):
            if entry.name.endswith(".tmp") or entry.name.startswith(("stage.", "cat.", "hist.", "reflog.")):
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        import shutil

                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)

    def sync(self) -> None:
        """Make the new objects durable before the manifest makes them reachable (a few fsynced one
        by one, after a big publish the file system at once: ``fsutil.PendingSync``)."""
        self._pending.sync()


class _SizeChanged(Exception):
    """A file changed size while it was being read (the caller turns this into a CvmfsError)."""

    def __init__(self, expected: int, got: int):
        super().__init__(f"expected {expected} bytes, read {got}")
        self.expected = expected
        self.got = got
