"""Write a tree as several layers (see ``layering.py`` for where it is cut) in one pass over it.

The tree is read once (for CernVM-FS, every object fetched and verified once): each entry goes to
its layer's tar writer, whose stream is hashed (the diff_id) and, in the same pass, gzipped into the
layer's blob (``pgzip``: every layer's compressor shares one set of threads and one bound on the
blocks in flight, so deflating runs on all cores while the tree is read, and memory stays bounded
whatever the number of layers). The uncompressed tar is written to a file only when asked (the
docker-archive carries it). Layers that received no entry are left out of the image.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import BuildError
from ..fsutil import reraise_naming
from ..tarwrite import TarWriter
from ..tree import Entry, TreeReport, TreeSource
from .layer import GZIP_LEVEL, LayerResult
from .layering import LayerPlan
from .pgzip import Deflaters, ParallelGzip
from .readahead import read_ahead

_BLOCK = 1 << 20
_BUFFER = 256 << 10
_DIRECT = 256 << 10  # pieces this big go on as they are, not through the buffer


@dataclass(frozen=True)
class LayerFile:
    """One written layer: its result, the uncompressed tar, and the gzip blob when made."""

    result: LayerResult
    raw: Path | None
    gz: Path | None
    #: what the layer holds: subtree paths, ``D/`` for the rest of a split directory, ``/`` the base
    keys: tuple[str, ...] = ()
    #: its index in the plan (``LayerView``), -1 for a layer not cut from a plan
    index: int = -1

    def created_by(self) -> str:
        keys = (
            self.keys
            if len(self.keys) <= 3
            else (self.keys[0], "…", self.keys[-1], f"({len(self.keys)} parts)")
        )
        return "cernvm-build layer: " + " ".join(keys)


class _Writable(Protocol):
    def write(self, data: bytes | bytearray, /) -> object: ...


class HashedFile:
    """A file written while hashing and counting its bytes (a layer's tar: its diff_id and size)."""

    def __init__(self, f: _Writable) -> None:
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes | bytearray) -> None:
        self.h.update(data)
        self.size += len(data)
        self.f.write(data)


class _NamedFile:
    """A layer's file, written through a buffer, whose full disk names it: a write's (or the closing
    flush's) ENOSPC/EDQUOT names no file, and a container build's line said only "No space left on
    device" (pr28a finding 8)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = path.open("wb", buffering=_BUFFER)

    def write(self, data: bytes | bytearray) -> None:
        try:
            self.f.write(data)
        except OSError as e:
            reraise_naming(e, self.path)

    def __enter__(self) -> _NamedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.f.close()
        except OSError as e:
            reraise_naming(e, self.path)


class _LayerOut:
    """Where one layer's tar stream goes: hashed and counted (its diff_id and size), gzipped into
    ``gz`` through the shared deflaters, and written raw to ``raw`` when that is asked for. Tar
    headers and small files are gathered first: one hash update and one hand-over per MiB, not
    three per file."""

    def __init__(self, raw: _NamedFile | None, gz: _NamedFile | None, deflaters: Deflaters) -> None:
        self.h, self.size = hashlib.sha256(), 0
        self.raw = raw
        self.gz = HashedFile(gz) if gz is not None else None
        self.comp = ParallelGzip(self.gz.write, level=GZIP_LEVEL, deflaters=deflaters) if self.gz else None
        self.buf = bytearray()

    def write(self, data: bytes | bytearray) -> None:
        if len(data) >= _DIRECT:
            self.flush()
            self._put(data)
            return
        self.buf += data
        if len(self.buf) >= _BLOCK:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self._put(self.buf)
            self.buf.clear()

    def _put(self, data: bytes | bytearray) -> None:  # keeps no reference to data
        self.h.update(data)
        self.size += len(data)
        if self.raw is not None:
            self.raw.write(data)
        if self.comp is not None:
            self.comp.write(data)


def write_layers(
    source: TreeSource,
    plan: LayerPlan,
    work: Path,
    *,
    gzip: bool,
    raw: bool = True,
    progress: Callable[[int], None] | None = None,
    report: TreeReport | None = None,
    workers: int | None = None,
) -> list[LayerFile]:
    """Write ``source`` cut by ``plan`` into ``work/layer-N.tar.gz`` when ``gzip`` and
    ``work/layer-N.tar`` when ``raw`` (always without ``gzip``). ``report`` gathers skips and
    setid/xattr notes; ``workers`` deflating threads (default: one per core) change no byte."""
    report = report if report is not None else TreeReport()
    raw = raw or not gzip
    outs: list[_LayerOut | None] = [None] * plan.count
    deflaters = Deflaters(workers)
    with ExitStack() as stack:
        stack.callback(deflaters.shutdown)  # also after an error: no thread is left running

        def paths(i: int) -> tuple[Path | None, Path | None]:
            return (work / f"layer-{i}.tar" if raw else None, work / f"layer-{i}.tar.gz" if gzip else None)

        def sink(i: int) -> Callable[[bytes | bytearray], None]:
            def write(data: bytes | bytearray) -> None:
                out = outs[i]
                if out is None:  # opened on the layer's first entry: an unused layer has no file
                    files = [stack.enter_context(_NamedFile(p)) if p is not None else None for p in paths(i)]
                    out = outs[i] = _LayerOut(files[0], files[1], deflaters)
                out.write(data)

            return write

        tars = [
            TarWriter(
                sink(i),
                mtime=None,
                where=source.description,
                error=BuildError,
                report=report,
                progress=progress,
            )
            for i in range(plan.count)
        ]
        for layer, entry, data in read_ahead(plan.split_entries(source), source.open):
            tars[layer].add(entry, source.open if data is None else _given(data))
        done: list[LayerFile] = []
        for i, tar in enumerate(tars):
            out = outs[i]
            if out is None:
                continue
            tar.end()
            out.flush()
            res = _result(tar, "sha256:" + out.h.hexdigest(), out.size, report)
            if out.comp is not None and out.gz is not None:
                out.comp.close()
                res.digest, res.compressed_size = "sha256:" + out.gz.h.hexdigest(), out.gz.size
            done.append(LayerFile(res, *paths(i), plan.keys[i], i))
    for f in done:
        f.result.skipped = list(report.skipped)
    return done


def _given(data: bytes | BaseException) -> Callable[[Entry], BinaryIO]:
    """An opener that gives the content read ahead (or raises why it could not be read)."""

    def open_content(_entry: Entry) -> BinaryIO:
        if isinstance(data, BaseException):
            raise data
        return io.BytesIO(data)

    return open_content


def _result(tar: TarWriter, diff_id: str, size: int, report: TreeReport) -> LayerResult:
    res = LayerResult(diff_id=diff_id, size=size, report=report)
    res.files, res.dirs, res.symlinks = tar.files, tar.dirs, tar.symlinks
    res.hardlinks, res.specials, res.content_bytes = tar.hardlinks, tar.specials, tar.content_bytes
    return res


def layer_file(
    tar: TarWriter,
    out: HashedFile,
    raw: Path,
    *,
    gzip: bool,
    report: TreeReport,
    keys: tuple[str, ...],
    index: int = -1,
) -> LayerFile:
    """The layer ``tar`` wrote through ``out`` into ``raw`` (ended): its result, and its gzip blob
    (``raw`` + ``.gz``) when ``gzip``."""
    res = _result(tar, "sha256:" + out.h.hexdigest(), out.size, report)
    gz = None
    if gzip:
        gz = raw.with_name(raw.name + ".gz")
        res.digest, res.compressed_size = compress(raw, gz)
    return LayerFile(res, raw, gz, keys, index)


def compress(raw: Path, gz: Path, *, level: int = GZIP_LEVEL) -> tuple[str, int]:
    """gzip ``raw`` into ``gz``; returns the blob's digest and size."""
    with open(raw, "rb") as src, open(gz, "wb") as dst:
        out = HashedFile(dst)
        comp = ParallelGzip(out.write, level=level)
        try:
            while block := src.read(_BLOCK):
                comp.write(block)
            comp.close()
        except BaseException:
            comp.shutdown()
            raise
    return "sha256:" + out.h.hexdigest(), out.size
