"""Unpack a tree source into a directory (Apptainer sandbox, DUCC ``layerfs`` and ``.flat``).

Owners are set when running as root (otherwise the files belong to the caller, as an unprivileged
``apptainer build --sandbox`` does); xattrs are set where the file system and privileges allow, and
each one that cannot be set is logged. Device nodes need root; without it they are skipped and listed.
Directory modes and mtimes are applied after their children are written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError
from .layer import skip_reason
from .source import BLOCK, CHAR, DIR, FIFO, FILE, SYMLINK, Entry, TreeSource

log = logging.getLogger(__name__)
_COPY = 1 << 20


@dataclass
class MaterializeResult:
    files: int = 0
    bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: SHA-256 over a canonical listing of what was written (path, type, mode, owner, content hash
    #: or link target, hard-link first path): a directory's stand-in for a file hash
    tree_sha256: str = ""


def materialize(
    source: TreeSource,
    dest: Path,
    *,
    mtime: int | None = 0,
    progress: Callable[[int], None] | None = None,
) -> MaterializeResult:
    """Write ``source`` under the existing directory ``dest``; ``mtime`` None keeps the tree's own."""
    as_root = os.geteuid() == 0
    res = MaterializeResult()
    first_of_link: dict[object, Path] = {}
    dirs: list[tuple[Path, Entry]] = []
    listing = hashlib.sha256()

    def record(entry: Entry, what: str) -> None:
        line = f"{entry.path}\0{entry.kind}\0{entry.mode:o}\0{entry.uid}:{entry.gid}\0{what}\n"
        listing.update(line.encode("utf-8", "surrogateescape"))

    for entry in source.entries():
        reason = skip_reason(entry)
        if reason is None and entry.kind in (CHAR, BLOCK) and not as_root:
            reason = "device nodes can only be created by root"
        if reason is not None:
            log.warning("skipping %s: %s", entry.path, reason)
            res.skipped.append((entry.path, reason))
            continue
        target = dest / entry.path
        if entry.kind == DIR:
            target.mkdir(mode=0o700)
            dirs.append((target, entry))
            record(entry, "")
            continue
        if entry.kind == FILE:
            linked = first_of_link.get(entry.link_id) if entry.link_id is not None else None
            if linked is not None:
                os.link(linked, target)
                record(entry, "link " + linked.relative_to(dest).as_posix())
                continue
            h = hashlib.sha256()
            with source.open(entry) as src, open(target, "wb") as out:
                while block := src.read(_COPY):
                    out.write(block)
                    h.update(block)
                    if progress is not None:
                        progress(len(block))
            record(entry, h.hexdigest())
            res.files += 1
            res.bytes += entry.size
            if entry.link_id is not None:
                first_of_link[entry.link_id] = target
        elif entry.kind == SYMLINK:
            os.symlink(entry.target, target)
            record(entry, entry.target)
        elif entry.kind == FIFO:
            os.mkfifo(target)
            record(entry, "")
        else:
            kind = 0o020000 if entry.kind == CHAR else 0o060000
            os.mknod(target, kind | 0o600, os.makedev(*entry.rdev))
            record(entry, f"{entry.rdev[0]},{entry.rdev[1]}")
        _apply(target, entry, mtime, as_root, res)
    # deepest first, so setting a directory's mtime is not undone by writing into it
    for target, entry in reversed(dirs):
        _apply(target, entry, mtime, as_root, res)
    res.tree_sha256 = listing.hexdigest()
    return res


def _apply(target: Path, entry: Entry, mtime: int | None, as_root: bool, res: MaterializeResult) -> None:
    is_link = entry.kind == SYMLINK
    if as_root:
        os.chown(target, entry.uid, entry.gid, follow_symlinks=False)
    for key, value in entry.xattrs.items():
        try:
            os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as e:
            log.warning("cannot set xattr %s on %s: %s", key, entry.path, e.strerror)
            res.skipped.append((entry.path, f"xattr {key} not set: {e.strerror}"))
    if not is_link:
        os.chmod(target, entry.mode & 0o7777)
    t = entry.mtime if mtime is None else mtime
    os.utime(target, (t, t), follow_symlinks=False)


def clear(path: Path) -> None:
    """Remove a directory tree even where modes (0500 directories) would stop a plain rmtree."""
    if not path.exists() and not path.is_symlink():
        return

    def onerror(func: Callable[..., object], p: str, exc: object) -> None:
        parent = os.path.dirname(p)
        try:
            os.chmod(parent, 0o700)
            func(p)
        except OSError as e:
            raise BuildError(f"cannot remove {p}: {e.strerror}") from e

    shutil.rmtree(path, onerror=onerror)
