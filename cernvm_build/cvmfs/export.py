"""Export one revision to a directory or a tar file, preserving modes, owners (as root), symlinks,
hard links, device nodes (as root), mtimes and extended attributes.

Atomic: the tree is built in a temporary sibling and renamed into place; the tar is written to a
temporary file and renamed. Files are fetched and written by a few threads at once (network, hashing
and inflating release the GIL), directories and links by the walking thread, directory modes and
mtimes last (a read-only directory would otherwise refuse its children).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import gzip
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CvmfsError
from .catalog import DirEntry
from .repository import Repository

PIECE = 16 << 20
#: files in flight: enough that the walking thread rarely waits, few enough to bound memory
WINDOW = 256


@dataclass
class ExportResult:
    path: Path
    entries: int = 0
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # entries that could not be reproduced (e.g. devices)


Progress = Callable[[DirEntry], None]


def _write_file(repo: Repository, e: DirEntry, path: str, as_root: bool) -> int:
    """Contents and metadata through one descriptor (no path look-ups, no buffered file object)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        # Chunk-aligned pieces: each comes out of the store without a copy.
        if e.is_chunked:
            pieces = [(c.offset, c.size) for c in e.chunks]
        else:
            pieces = [(off, PIECE) for off in range(0, e.size, PIECE)]
        pos = 0
        for off, size in pieces:
            data = repo.read(e, off, size)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            pos += len(data)
        if as_root and (e.uid, e.gid) != (0, 0):
            with contextlib.suppress(OSError):
                os.fchown(fd, e.uid, e.gid)
        os.fchmod(fd, stat.S_IMODE(e.mode))
        for k, v in e.xattrs.items():
            with contextlib.suppress(OSError):
                os.setxattr(fd, k, v)
        os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
    finally:
        os.close(fd)
    return pos


def _set_meta(path: Path, e: DirEntry, as_root: bool) -> None:
    if as_root:
        with contextlib.suppress(OSError):
            os.lchown(path, e.uid, e.gid)
    if not e.is_symlink:
        os.chmod(path, stat.S_IMODE(e.mode))
    for k, v in e.xattrs.items():
        with contextlib.suppress(OSError):
            os.setxattr(path, k, v, follow_symlinks=False)
    os.utime(path, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


def export_directory(
    repo: Repository, dest: Path, *, subtree: str = "/", jobs: int = 4, progress: Progress | None = None
) -> ExportResult:
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CvmfsError(f"{dest}: already exists and is not an empty directory", hint="choose a new path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    as_root = os.geteuid() == 0
    result = ExportResult(dest)
    top = repo.stat(subtree)
    prefix = top.path.rstrip("/")

    def target(e: DirEntry) -> Path:
        rel = e.path[len(prefix) :].lstrip("/")
        return tmp / rel if rel else tmp

    links: dict[tuple[str, int], Path] = {}
    late_links: list[tuple[Path, Path, DirEntry]] = []
    dirs: list[tuple[Path, DirEntry]] = []

    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            pending: set[cf.Future[int]] = set()
            for e in repo.walk(top.path):
                result.entries += 1
                if progress is not None:
                    progress(e)
                path = target(e)
                if e.is_dir:
                    path.mkdir(exist_ok=True)
                    dirs.append((path, e))
                elif e.is_symlink:
                    os.symlink(e.symlink, path)
                    _set_meta(path, e, as_root)
                elif e.is_file:
                    if e.hardlink_group and e.linkcount > 1:
                        key = (e.catalog_prefix, e.hardlink_group)
                        if key in links:
                            late_links.append((links[key], path, e))
                            continue
                        links[key] = path
                    result.files += 1
                    pending.add(pool.submit(_write_file, repo, e, str(path), as_root))
                    if len(pending) >= WINDOW:
                        done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                        result.bytes += sum(f.result() for f in done)
                else:
                    if as_root:
                        os.mknod(path, e.mode, e.rdev)
                        _set_meta(path, e, as_root)
                    else:
                        result.skipped.append(e.path)
            for f in cf.as_completed(pending):
                result.bytes += f.result()
        for first, path, _e in late_links:
            os.link(first, path)
        for path, e in reversed(dirs):
            _set_meta(path, e, as_root)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        for p, _ in dirs:
            with contextlib.suppress(OSError):
                os.chmod(p, 0o700)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _tar_info(e: DirEntry, name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(e.mode)
    ti.uid, ti.gid = e.uid, e.gid
    ti.uname = ti.gname = ""
    ti.mtime = e.mtime
    if e.xattrs:
        ti.pax_headers = {
            f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in sorted(e.xattrs.items())
        }
    if e.is_dir:
        ti.type = tarfile.DIRTYPE
    elif e.is_symlink:
        ti.type = tarfile.SYMTYPE
        ti.linkname = e.symlink
    elif e.is_file:
        ti.type = tarfile.REGTYPE
        ti.size = e.size
    else:
        fmt = stat.S_IFMT(e.mode)
        ti.type = {
            stat.S_IFCHR: tarfile.CHRTYPE,
            stat.S_IFBLK: tarfile.BLKTYPE,
            stat.S_IFIFO: tarfile.FIFOTYPE,
        }.get(fmt, tarfile.FIFOTYPE)
        ti.devmajor, ti.devminor = os.major(e.rdev), os.minor(e.rdev)
    return ti


def export_tar(
    repo: Repository, dest: Path, *, subtree: str = "/", progress: Progress | None = None
) -> ExportResult:
    """A PAX tar (``.tar``, or gzip for ``.tar.gz``/``.tgz``), members sorted, written atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    gz = dest.name.endswith((".tar.gz", ".tgz"))
    result = ExportResult(dest)
    top = repo.stat(subtree)
    prefix = top.path.rstrip("/")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    links: dict[tuple[str, int], str] = {}
    try:
        with os.fdopen(fd, "wb") as raw, contextlib.ExitStack() as stack:
            out: Any = raw
            if gz:
                # gzip stamps its header with the current time unless told otherwise: use the
                # revision's own time, so the same revision always gives the same bytes.
                out = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=top.mtime))
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for e in repo.walk(top.path):
                    result.entries += 1
                    if progress is not None:
                        progress(e)
                    rel = e.path[len(prefix) :].lstrip("/")
                    name = rel or "."
                    ti = _tar_info(e, name)
                    if e.is_file and e.hardlink_group and e.linkcount > 1:
                        key = (e.catalog_prefix, e.hardlink_group)
                        if key in links:
                            ti.type = tarfile.LNKTYPE
                            ti.linkname = links[key]
                            ti.size = 0
                            tar.addfile(ti)
                            continue
                        links[key] = name
                    if e.is_file:
                        result.files += 1
                        result.bytes += e.size
                        with repo.open(e) as f:
                            tar.addfile(ti, f)
                    else:
                        tar.addfile(ti)
            stack.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return result


def export(
    repo: Repository, dest: Path, *, subtree: str = "/", jobs: int = 4, progress: Progress | None = None
) -> ExportResult:
    """To a tar file when ``dest`` ends in .tar/.tar.gz/.tgz, else to a directory."""
    if str(dest).endswith((".tar", ".tar.gz", ".tgz")):
        return export_tar(repo, dest, subtree=subtree, progress=progress)
    return export_directory(repo, dest, subtree=subtree, jobs=jobs, progress=progress)
