"""Unpack a tree source into a directory (the Apptainer sandbox), through the one tree writer.

Owners are set when running as root (otherwise the files belong to the caller, as an unprivileged
``apptainer build --sandbox`` does); xattrs are set where the file system and privileges allow, and
each one that cannot be set is listed. Device nodes are created only when asked (``devices``) and only
by root; otherwise they are skipped and listed. Sockets are never created. Nothing outside ``dest`` is
touched, whatever the tree holds (see ``treewrite``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError
from ..tree import BLOCK, CHAR, FILE, SYMLINK, Entry, TreeReport, TreeSource
from ..treewrite import TreeWriter

_COPY = 1 << 20


@dataclass
class MaterializeResult:
    files: int = 0
    bytes: int = 0
    report: TreeReport = field(default_factory=TreeReport)
    #: SHA-256 over a canonical listing of what was written (path, type, mode, owner, content hash
    #: or link target, hard-link first path): a directory's stand-in for a file hash
    tree_sha256: str = ""

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.report.skipped


def materialize(
    source: TreeSource,
    dest: Path,
    *,
    mtime: int | None = 0,
    devices: bool = False,
    progress: Callable[[int], None] | None = None,
) -> MaterializeResult:
    """Write ``source`` under the existing directory ``dest``; ``mtime`` None keeps the tree's own."""
    res = MaterializeResult()
    first_of_link: dict[object, str] = {}
    listing = hashlib.sha256()

    def record(entry: Entry, what: str) -> None:
        line = f"{entry.path}\0{entry.kind}\0{entry.mode:o}\0{entry.uid}:{entry.gid}\0{what}\n"
        listing.update(line.encode("utf-8", "surrogateescape"))

    writer = TreeWriter(
        dest, where=source.description, error=BuildError, devices=devices, mtime=mtime, report=res.report
    )
    try:
        for entry in source.entries():
            pending = writer.add(entry)
            if pending is None:
                if writer.last_skipped:
                    continue
                if entry.kind == FILE:  # a hard link to a file written before
                    record(entry, "link " + first_of_link[entry.link_id])
                elif entry.kind == SYMLINK:
                    record(entry, entry.target)
                elif entry.kind in (CHAR, BLOCK):
                    record(entry, f"{entry.rdev[0]},{entry.rdev[1]}")
                else:
                    record(entry, "")
                continue
            h = hashlib.sha256()
            try:
                if entry.size:  # an empty file has nothing to read (a million of them add up)
                    with source.open(entry) as src:
                        while block := src.read(_COPY):
                            pending.write(block)
                            h.update(block)
                            if progress is not None:
                                progress(len(block))
            except BaseException:
                pending.discard()
                raise
            pending.finish()
            record(entry, h.hexdigest())
            res.files += 1
            res.bytes += entry.size
            if entry.link_id is not None:
                first_of_link[entry.link_id] = entry.path
        writer.close()
    except BaseException:
        writer.abort()
        raise
    res.tree_sha256 = listing.hexdigest()
    return res
