"""Export one revision to a directory or a tar file, preserving modes, owners (as root), symlinks,
hard links, FIFOs, mtimes (with nanoseconds) and extended attributes; device nodes only when asked.

Both go through the toolkit's one writer of each kind: the directory through ``treewrite`` (safe
against hostile trees by construction), the tar through ``tarwrite``. The entries come from
``cvmfs.tree.RepositoryTree`` (sorted, depth-first, the subtree's root first).

Atomic: the tree is built in a temporary sibling and renamed into place; the tar is written to a
temporary file and renamed. Files are fetched and written by a few threads at once (network, hashing
and inflating release the GIL): the walking thread creates every node (in order, by directory
descriptors), the workers fill regular files through the descriptor they were handed.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import gzip
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CvmfsError
from ..fsutil import reclaim_stale, remove_tree, reraise_naming, temp_prefix
from ..tarwrite import TarWriter
from ..tree import TreeReport
from ..treewrite import PendingFile, TreeWriter
from .catalog import DirEntry
from .repository import Repository
from .tree import RepositoryTree

PIECE = 16 << 20
#: files in flight: enough that the walking thread rarely waits, few enough to bound memory (and
#: descriptors: each holds its file open)
WINDOW = 256


@dataclass
class ExportResult:
    path: Path
    entries: int = 0
    files: int = 0
    bytes: int = 0
    #: entries not written (sockets, device nodes unless asked) and setuid/setgid/xattr entries kept
    report: TreeReport = field(default_factory=TreeReport)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.report.skipped


Progress = Callable[[DirEntry], None]


def _fill(repo: Repository, e: DirEntry, out: PendingFile) -> int:
    """Content and metadata through the file's descriptor (no path look-ups, no buffered file)."""
    try:
        # Chunk-aligned pieces: each comes out of the store without a copy.
        # Lazily: a (hostile) declared size of 2^62 must not make a list of 2^38 pieces.
        pieces: Iterable[tuple[int, int]]
        if e.is_chunked:
            pieces = ((c.offset, c.size) for c in e.chunks)
        else:
            pieces = ((off, PIECE) for off in range(0, e.size, PIECE))
        for off, size in pieces:
            out.write(repo.read(e, off, size))
    except BaseException:
        out.discard()
        raise
    out.finish()
    return out.written


def _where(repo: Repository) -> str:
    return f"{repo.fqrn}@{repo.tag or 'revision ' + str(repo.revision)}"


def export_directory(
    repo: Repository,
    dest: Path,
    *,
    subtree: str = "/",
    jobs: int = 4,
    devices: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise CvmfsError(f"{dest}: already exists and is not an empty directory", hint="choose a new path")
    tree = RepositoryTree(repo, subtree, with_root=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reclaim_stale(dest)  # a killed export's half tree goes; the re-run writes the whole one
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent))
    result = ExportResult(dest)
    writer = TreeWriter(
        tmp, where=_where(repo), error=CvmfsError, devices=devices, report=result.report, dest=dest
    )
    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            # Oldest first: waiting on the oldest of a window is O(1) per file, where cf.wait over
            # the whole window registered a waiter on each of its 256 futures for every file (a
            # million empty files spent most of their time in those locks' futexes).
            pending: collections.deque[tuple[cf.Future[int], PendingFile]] = collections.deque()
            try:
                for entry in tree.entries():
                    result.entries += 1
                    ref = entry.ref
                    assert isinstance(ref, DirEntry)
                    if progress is not None:
                        progress(ref)
                    out = writer.add(entry)
                    if out is None:
                        continue
                    result.files += 1
                    if ref.size == 0:  # nothing to fetch: a hand-off to a worker would cost more
                        result.bytes += _fill(repo, ref, out)
                        continue
                    pending.append((pool.submit(_fill, repo, ref, out), out))
                    if len(pending) >= WINDOW:
                        result.bytes += pending.popleft()[0].result()
                while pending:
                    result.bytes += pending.popleft()[0].result()
            except BaseException:
                for f, out in pending:
                    if f.cancel():  # never started: its descriptor is still ours to close
                        out.discard()
                raise
        writer.close()
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        writer.abort()
        remove_tree(tmp)
        raise
    return result


def export_tar(
    repo: Repository, dest: Path, *, subtree: str = "/", progress: Progress | None = None
) -> ExportResult:
    """A PAX tar (``.tar``, or gzip for ``.tar.gz``/``.tgz``), members sorted, written atomically.
    Device nodes are carried (a tar is data); sockets are skipped and reported."""
    dest = Path(dest)
    tree = RepositoryTree(repo, subtree, with_root=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    gz = dest.name.endswith((".tar.gz", ".tgz"))
    result = ExportResult(dest)
    reclaim_stale(dest)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as raw, contextlib.ExitStack() as stack:
            out: Any = raw
            if gz:
                # gzip stamps its header with the current time unless told otherwise: use the
                # revision's own time, so the same revision always gives the same bytes.
                out = stack.enter_context(
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=tree.top.mtime)
                )
            tar = TarWriter(out.write, mtime=None, where=_where(repo), error=CvmfsError, report=result.report)
            for entry in tree.entries():
                result.entries += 1
                if progress is not None:
                    assert isinstance(entry.ref, DirEntry)
                    progress(entry.ref)
                tar.add(entry, tree.open)
            tar.end(whole_record=True)
            result.files, result.bytes = tar.files, tar.content_bytes
            stack.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        reraise_naming(e, dest)
    return result


def export(
    repo: Repository,
    dest: Path,
    *,
    subtree: str = "/",
    jobs: int = 4,
    devices: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """To a tar file when ``dest`` ends in .tar/.tar.gz/.tgz, else to a directory (device nodes
    only with ``devices``, and only as root)."""
    if str(dest).endswith((".tar", ".tar.gz", ".tgz")):
        return export_tar(repo, dest, subtree=subtree, progress=progress)
    return export_directory(repo, dest, subtree=subtree, jobs=jobs, devices=devices, progress=progress)
