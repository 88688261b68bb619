"""Staging a directory tree (and the staging helpers the tar path and the API share): every entry of the
new revision goes into the stage; unchanged files keep the previous revision's content hashes."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ..errors import CvmfsError
from .catalog_write import (
    Entry,
    serialize_xattrs,
)
from .content import ContentStore
from .limits import MAX_HOLE_BYTES, human
from .options import Options
from .previous import OldCatalog, OldRow, PreviousTree
from .stage import NestedRef, Stage

XATTR_PREFIXES = ("user.", "trusted.overlay.")


def norm_base(base_path: str) -> str:
    parts = [p for p in base_path.split("/") if p not in ("", ".")]
    for p in parts:  # bytes that are no UTF-8 were a traceback from the stage's SQLite
        check_name(p, f"base path {base_path!r}")
    if any(p == ".." for p in parts):
        raise CvmfsError(
            f"base path {base_path!r} must not contain '..'", hint="give an absolute path like /a/b"
        )
    return "".join("/" + p for p in parts)


def check_name(name: str, where: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise CvmfsError(
            f"{where}: file name is not valid UTF-8",
            hint="rename it: CernVM-FS catalogs store names as UTF-8 text",
        ) from None


def dir_entry(path: str, ts: int) -> Entry:
    return Entry(path=path, mode=stat.S_IFDIR | 0o755, mtime=ts, linkcount=2)


def entry_from_old(row: OldRow, cat: OldCatalog) -> Entry:
    regular = stat.S_ISREG(row.mode)
    group = row.hardlinks >> 32
    return Entry(
        path=row.path,
        mode=row.mode,
        mtime=row.mtime,
        mtimens=row.mtimens,
        size=row.size,
        uid=row.uid,
        gid=row.gid,
        symlink=row.symlink or "",
        digest=row.digest,
        algorithm=row.algorithm,
        chunks=cat.chunks(row.md5) if regular and row.flags & 64 else (),
        xattrs=row.xattr,
        linkcount=row.hardlinks & 0xFFFFFFFF,
        hardlink_key=f"old:{cat.name}:{group}" if regular and group else None,
        hidden=bool(row.flags & 0x8000),
    )


def stage_outside(stage: Stage, prev: PreviousTree, base_paths: Iterable[str]) -> None:
    """Copy everything of the previous revision that is not at or below one of ``base_paths`` into
    the stage."""
    bases = set(base_paths)
    # "", "/a", "/a/b" for /a/b/c: the directories walked into rather than kept by reference
    ancestors = {b[:i] for b in bases for i in range(len(b)) if b[i] == "/"}

    def walk(cat: OldCatalog, path: str) -> None:
        for row in cat.children(path):
            if row.path in bases:  # (nothing below a base is reached)
                continue
            if row.flags & 2 and row.path in cat.nested:  # nested catalog mountpoint
                if row.path in ancestors:
                    stage.put(entry_from_old(row, cat))
                    walk(prev.nested_catalog(cat, row.path), row.path)
                else:
                    name, size = cat.nested[row.path]
                    counters = prev.nested_counters(cat, row.path)
                    stage.put(entry_from_old(row, cat), NestedRef(name, size, counters))
            else:
                stage.put(entry_from_old(row, cat))
                if stat.S_ISDIR(row.mode):
                    walk(cat, row.path)

    root = prev.root.lookup("")
    if root is not None:
        stage.put(entry_from_old(root, prev.root))
    walk(prev.root, "")


def ensure_dirs(stage: Stage, path: str, ts: int) -> None:
    """Create missing directories from the root down to ``path`` (inclusive)."""
    parts = path.split("/")
    for i in range(len(parts)):
        p = "/".join(parts[: i + 1])
        have = stage.get(p)
        if have is None:
            stage.put(dir_entry(p, ts))
        elif not stat.S_ISDIR(have.entry.mode):
            raise CvmfsError(
                f"{p or '/'} is not a directory in the repository, so nothing can be published below it",
                hint="choose another base path, or replace that entry first",
            )


def _xattrs_of(path: str, shown: str) -> bytes | None:
    """The kept attributes of ``path`` (named ``shown`` in an error)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return None
    found: dict[str, bytes] = {}
    for n in names:
        if n.startswith(XATTR_PREFIXES):
            with contextlib.suppress(OSError):
                found[n] = os.getxattr(path, n, follow_symlinks=False)
    try:
        return serialize_xattrs(found)
    except ValueError as e:
        raise CvmfsError(
            f"{shown}: {e}", hint="CernVM-FS stores at most 255 short attributes per entry"
        ) from e


def _unchanged(row: OldRow | None, cat: OldCatalog, st: os.stat_result) -> Entry | None:
    """The previous revision's content of a file if its size, mtime and mode are the same."""
    if row is None:
        return None
    if (
        row.mode != st.st_mode
        or not stat.S_ISREG(row.mode)
        or row.flags & 128  # external file: no object to reuse
        or row.size != st.st_size
        or row.mtime != st.st_mtime_ns // 1_000_000_000
        or (row.mtimens or 0) != st.st_mtime_ns % 1_000_000_000
    ):
        return None
    if row.digest is None and not row.flags & 64:
        return None
    return entry_from_old(row, cat)


def _fs_error(path: str, doing: str, e: OSError, hint: str | None = None) -> CvmfsError:
    """One short line about ``path``: a path past PATH_MAX (a 40-level tree of 200-byte names made
    a 4 KB line) is shown by its head and tail, and told as such (audit13c finding 12)."""
    shown = path if len(path) <= 200 else f"{path[:80]}...{path[-100:]}"
    if e.errno == errno.ENAMETOOLONG:
        return CvmfsError(
            f"{shown}: {doing}: the path is {len(os.fsencode(path))} bytes, longer than the system allows",
            hint="publish the tree as a tar stream (tar -C SOURCE -c . | cernvm-build cvmfs publish REPO -),"
            " which does not name it by one path",
        )
    return CvmfsError(f"{shown}: {doing}: {e.strerror}", hint=hint)


# /proc/self/fd/N/NAME reaches NAME through the open directory N, whatever happened to its path
_PROC_FD = os.path.isdir("/proc/self/fd")


def _open_scanned_dir(fs_dir: str, ident: tuple[int, int]) -> int:
    """A descriptor of the directory the scan saw at ``fs_dir`` (device and inode ``ident``): one
    swapped for a link (not followed) or for another directory since is an error, never listed."""
    try:
        fd = os.open(fs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            raise _fs_error(
                fs_dir,
                "directory changed while publishing (removed or replaced since the scan)",
                e,
                "publish again when it is quiet",
            ) from e
        raise _fs_error(fs_dir, "cannot open directory", e, "check permissions") from e
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != ident:
        os.close(fd)
        raise CvmfsError(
            f"{fs_dir}: directory changed while publishing (replaced by another since the scan;"
            " nothing outside the source is read)",
            hint="publish again when it is quiet",
        )
    return fd


def _check_holes(fs: str, st: os.stat_result, max_holes: int) -> None:
    """Refuse a sparse file whose holes (its size past the blocks it has) exceed ``max_holes``.
    CernVM-FS has no holes: a file's content is its chunks, each compressed and hashed, and
    content-defined chunk cuts depend on every byte, so its holes are read as zeros (as the real
    server reads them); a 1 KB file of 8 EiB apparent size (``truncate -s 8E``) read for ever."""
    holes = st.st_size - st.st_blocks * 512
    if holes > max_holes:
        raise CvmfsError(
            f"{fs}: sparse file of {human(st.st_size)} with {human(holes)} of holes, past the limit of "
            f"{human(max_holes)} (its holes would be read and published as zeros)",
            hint="leave the file out, or raise --max-hole-bytes",
        )


#: entries of one directory staged (and their contents queued) at a time
SCAN_BATCH = 4096


def _flush(
    stage: Stage,
    content: ContentStore,
    old_cat: OldCatalog | None,
    batch: list[Entry],
    files: list[tuple[Entry, str, os.stat_result]],
    max_holes: int,
) -> int:
    """Stage ``batch`` and queue the contents of its regular ``files`` (entry, source path, stat)
    that the previous revision (its catalog of their directory: ``old_cat``) has not unchanged;
    returns how many were queued."""
    # the previous rows of this batch only, looked up by path: the directory's whole listing was
    # held while it was scanned (a directory of 200,000 files: most of a 257 MB re-publish peak)
    old = old_cat.rows_at([ent.path for ent, _, _ in files]) if old_cat is not None and files else {}
    todo: list[tuple[str, str, int, tuple[int, int]]] = []
    for ent, fs, st in files:
        kept = _unchanged(old.get(ent.path), old_cat, st) if old_cat is not None else None
        if kept is not None:
            ent.digest, ent.chunks, ent.algorithm = kept.digest, kept.chunks, kept.algorithm
        else:
            _check_holes(fs, st, max_holes)
            todo.append((ent.path, fs, st.st_size, (st.st_dev, st.st_ino)))
    stage.put_many(batch)
    # Contents are compressed while the scan goes on (the pool holds at most 4 x workers files,
    # so memory stays bounded): a scan of a big tree takes as long as the compression of a
    # good part of it, and on few cores running them one after the other was the main cost.
    for path, fs, size, ident in todo:
        content.total_bytes += size
        content.submit_file(path, fs, size, ident)
    return len(todo)


def scan_dir(
    stage: Stage,
    prev: PreviousTree | None,
    content: ContentStore,
    source: Path,
    base: str,
    opts: Options,
    max_holes: int = MAX_HOLE_BYTES,
) -> int:
    """Stage ``source`` as ``base``; returns the number of regular files whose content must be read.
    A file whose holes exceed ``max_holes`` bytes is refused (``_check_holes``)."""
    if os.path.islink(source):
        # the user named the link (/srv/sw -> /data/sw): its directory is the source ("not a
        # directory" before); links inside the tree are never followed
        source = Path(os.path.realpath(source))
    try:
        st = os.lstat(source)
    except OSError as e:
        raise CvmfsError(f"{source}: cannot read source: {e.strerror}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise CvmfsError(
            f"{source}: not a directory", hint="publish a directory, a tar file or '-' for stdin"
        )

    def entry(path: str, fs: str, st: os.stat_result, via: str | None = None) -> Entry:
        return Entry(
            path=path,
            mode=st.st_mode,
            mtime=st.st_mtime_ns // 1_000_000_000,
            mtimens=st.st_mtime_ns % 1_000_000_000,
            size=st.st_size,
            uid=0 if opts.normalize_owner else st.st_uid,
            gid=0 if opts.normalize_owner else st.st_gid,
            xattrs=_xattrs_of(via or fs, fs),
        )

    root = entry(base, str(source), st)
    stage.put(root)
    count = 0
    stack = [(str(source), base, (st.st_dev, st.st_ino))]
    while stack:
        fs_dir, repo_dir, ident = stack.pop()
        fd = _open_scanned_dir(fs_dir, ident)
        try:
            # listed through the descriptor of the directory the parent's scan saw: a directory
            # swapped for a link out of the tree after that scan was listed and published
            try:
                it = os.scandir(fd)
            except OSError as e:
                raise _fs_error(fs_dir, "cannot list directory", e, "check permissions") from e
            old_cat = prev.catalog_for(repo_dir) if prev is not None else None
            batch: list[Entry] = []
            files: list[tuple[Entry, str, os.stat_result]] = []
            with it:
                for d in it:
                    fs = f"{fs_dir}/{d.name}"
                    check_name(d.name, fs)
                    path = f"{repo_dir}/{d.name}"
                    try:
                        st = d.stat(follow_symlinks=False)
                    except OSError as e:
                        raise _fs_error(fs, "cannot stat", e) from e
                    mode = st.st_mode
                    # attributes and link targets read through the directory's descriptor too
                    ent = entry(path, fs, st, f"/proc/self/fd/{fd}/{d.name}" if _PROC_FD else None)
                    batch.append(ent)
                    if stat.S_ISDIR(mode):
                        ent.size = 0
                        stack.append((fs, path, (st.st_dev, st.st_ino)))
                    elif stat.S_ISLNK(mode):
                        try:
                            target = os.readlink(d.name, dir_fd=fd)
                        except OSError as e:
                            raise _fs_error(
                                fs, "cannot read the link", e, "publish again when it is quiet"
                            ) from e
                        check_name(target, fs)
                        ent.symlink = target
                    elif stat.S_ISREG(mode):
                        if st.st_nlink > 1:
                            ent.hardlink_key = f"{st.st_dev}:{st.st_ino}"
                        files.append((ent, fs, st))
                    else:  # fifo, socket, char/block device: stored as the server stores them
                        ent.size = st.st_rdev if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 0
                    if len(batch) == SCAN_BATCH:
                        # a directory of 200,000 files held every entry (and every scandir
                        # entry) until its end: 370 MB peak; now SCAN_BATCH at a time
                        count += _flush(stage, content, old_cat, batch, files, max_holes)
                        batch, files = [], []
                count += _flush(stage, content, old_cat, batch, files, max_holes)
        finally:
            os.close(fd)
    opts.reached("scanned")
    content.finish()
    return int(count)
