"""Write a tree as several layers (see ``layering.py`` for where it is cut) in one pass over it.

The tree is read once (for CernVM-FS, every object fetched and verified once): each entry goes to
its layer's tar writer, each writing an uncompressed tar to its own file while hashing it (the
diff_id). The gzip blobs are made afterwards, one layer at a time on all cores (``pgzip``, bytes
independent of the thread count), so at most one compressor runs and memory stays bounded.
Layers that received no entry are left out of the image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import BuildError
from ..tarwrite import TarWriter
from ..tree import TreeReport, TreeSource
from .layer import GZIP_LEVEL, LayerResult
from .layering import LayerPlan
from .pgzip import ParallelGzip

_BLOCK = 1 << 20
_BUFFER = 256 << 10


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


class HashedFile:
    """A file written while hashing and counting its bytes (a layer's tar: its diff_id and size)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes | bytearray) -> None:
        self.h.update(data)
        self.size += len(data)
        self.f.write(data)


def write_layers(
    source: TreeSource,
    plan: LayerPlan,
    work: Path,
    *,
    gzip: bool,
    progress: Callable[[int], None] | None = None,
    report: TreeReport | None = None,
) -> list[LayerFile]:
    """Write ``source`` cut by ``plan`` into ``work/layer-N.tar`` (+ ``.tar.gz`` when ``gzip``).
    ``report`` gathers skips and setid/xattr notes."""
    report = report if report is not None else TreeReport()
    raws = [work / f"layer-{i}.tar" for i in range(plan.count)]
    with ExitStack() as stack:
        outs = [HashedFile(stack.enter_context(open(p, "wb", buffering=_BUFFER))) for p in raws]
        tars = [
            TarWriter(
                o.write,
                mtime=None,
                where=source.description,
                error=BuildError,
                report=report,
                progress=progress,
            )
            for o in outs
        ]
        used = [False] * plan.count
        for layer, entry in plan.split_entries(source):
            used[layer] = True
            tars[layer].add(entry, source.open)
        for t in tars:
            t.end()
    files: list[LayerFile] = []
    for i, (tar, out) in enumerate(zip(tars, outs, strict=True)):
        if not used[i]:
            raws[i].unlink()
            continue
        files.append(layer_file(tar, out, raws[i], gzip=gzip, report=report, keys=plan.keys[i], index=i))
    for f in files:
        f.result.skipped = list(report.skipped)
    return files


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
    res = LayerResult(diff_id="sha256:" + out.h.hexdigest(), size=out.size, report=report)
    res.files, res.dirs, res.symlinks = tar.files, tar.dirs, tar.symlinks
    res.hardlinks, res.specials, res.content_bytes = tar.hardlinks, tar.specials, tar.content_bytes
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
