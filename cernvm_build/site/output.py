"""One file of a site's output: written (and its size and mtime returned for the state), recognised
again by that size and mtime, and the output's files listed and its empty folders pruned. The write
step (pages, assets) and the index step (``search-index/``) both go through here.

Into an output folder that exists, files appear by rename (``fsutil.atomic_file``), so readers see the
old file or the new one. Into a new folder nobody reads yet (``made``: the folders made in it so far),
each file is written once, in place, without a temporary sibling and its rename. There is no fsync per
file: the state records each file's size and mtime, so a file lost in a crash no longer matches and is
written again by the next build.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

from ..errors import BuildError
from ..fsutil import CHUNK, atomic_file, shown
from .sources import SETTLED_NS  # one rule for when a stat is trusted

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def check_out(rel: str) -> None:
    """Refuse an output path (relative to the output folder) that could resolve outside it: absolute,
    with a '..', '.' or empty segment, a backslash or a NUL. The page model keeps every output inside
    (``pages._checked_url``, slugs, the scan's names); this is the last guard before a write."""
    if (
        not rel
        or rel[0] == "/"
        or "\\" in rel
        or "\0" in rel
        or any(s in ("", ".", "..") for s in rel.split("/"))
    ):
        raise BuildError(
            f"refusing to write {rel!r}: it is not a path inside the output folder",
            hint="an output path came from a source unchecked; please report it with the source that made it",
        )


def write_output(dest: Path, blob: bytes, made: set[str] | None = None) -> tuple[int, int]:
    """Write one output; returns its (size, mtime in ns) for the state. ``made``: None into an existing
    folder, else the folders made so far in a new one (see the module docstring)."""
    try:
        if made is None:
            with atomic_file(dest, durable=False) as f:
                f.write(blob)
                return _size_mtime(f)
        # a new folder's file: written through its descriptor, without a file object (its buffer,
        # flush and close: ~5 us of a page's ~0.8 ms in the write step)
        fd = _new_fd(dest, made)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return st.st_size, st.st_mtime_ns
    except OSError as e:
        raise write_error(e, dest) from None


def copy_output(src: Path, dest: Path, made: set[str] | None = None) -> tuple[int, int]:
    """Copy an asset (streamed: it may be a release image); returns (size, mtime in ns)."""
    import shutil  # deliberate lazy import: a rebuild that copies no asset never needs it (~1.5 ms)

    try:
        with _output(dest, made) as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f, CHUNK)
            return _size_mtime(f)
    except OSError as e:
        raise write_error(e, dest) from None


#: what to do about a write that failed, by errno
_WRITE_HINTS = {
    errno.ENOSPC: "free space on the output's disk (the old output is left as it was)",
    errno.EDQUOT: "free space in your quota (the old output is left as it was)",
    errno.EROFS: "choose a writable --out folder",
    errno.EACCES: "check the output folder's permissions, or choose another --out",
    errno.EPERM: "check the output folder's permissions, or choose another --out",
    errno.ENAMETOOLONG: "shorten the name it comes from (a file name, a tag, a 'url:')",
}


def write_error(e: OSError, dest: Path) -> BuildError:
    """A failed write (a full disk, a read-only output, a name too long) as one line naming the file;
    the build's temporary output is removed by its caller, and the old output stays."""
    path = shown(e.filename if isinstance(e.filename, str) else str(dest))
    return BuildError(
        f"cannot write {path}: {e.strerror or e}",
        hint=_WRITE_HINTS.get(e.errno or 0, "check the output folder (--out) can be written"),
    )


def matches(path: str, row: tuple[str, int, int]) -> bool:
    """Whether the file at ``path`` is still the one a state row (fingerprint, size, mtime) records."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return st.st_size == row[1] and st.st_mtime_ns == row[2]


def files_in_changed_folders(
    top: Path, skip: str, known: Mapping[str, int]
) -> tuple[list[str], bool, list[str], set[str]]:
    """The files under ``top`` (paths relative to it, "/"-separated; ``skip``: a folder of ``top``
    not walked, another step's), where the folders whose ctime is the one ``known`` records (folder
    relative to ``top``, "" for ``top``; ``folder_rows``) are not listed: their entries are the ones they had
    then (adding, removing or renaming an entry sets a folder's ctime, and nothing sets it back), only
    their recorded subfolders are visited. Returns (the files of the folders listed, whether one of
    them is empty, the folders listed, every folder there is). A stat per folder instead of a
    listing: the walk of a 1,000-page output was a tenth of a one-page rebuild."""
    children: dict[str, list[str]] = {}
    for rel in known:
        if rel:
            children.setdefault(rel.rpartition("/")[0], []).append(rel)
    files: list[str] = []
    listed: list[str] = []
    seen: set[str] = set()
    empty = False
    root = str(top)
    stack = [""]
    while stack:
        rel = stack.pop()
        path = f"{root}/{rel}" if rel else root
        try:
            ctime = os.stat(path).st_ctime_ns
        except FileNotFoundError:
            continue  # gone: its parent changed, and was listed
        seen.add(rel)
        if known.get(rel) == ctime:
            stack.extend(children.get(rel, ()))
            continue
        listed.append(rel)
        prefix = rel + "/" if rel else ""
        with os.scandir(path) as entries:
            n = 0
            for entry in entries:
                n += 1
                if entry.is_dir(follow_symlinks=False):
                    if rel or entry.name != skip:
                        stack.append(prefix + entry.name)
                else:
                    files.append(prefix + entry.name)
        empty = empty or n == 0
    return files, empty, listed, seen


def folder_rows(top: Path, folders: set[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """State rows (folder, ctime) for ``folders`` of ``top`` as they are now (-1, never equal to a
    ctime, for those changed too recently to be trusted: ``sources.SETTLED_NS``), and those of them
    that are gone."""
    settled = time.time_ns() - SETTLED_NS
    rows: list[tuple[str, int]] = []
    gone: list[str] = []
    root = str(top)
    for rel in sorted(folders):
        try:
            ctime = os.stat(f"{root}/{rel}" if rel else root).st_ctime_ns
        except FileNotFoundError:
            gone.append(rel)
            continue
        rows.append((rel, ctime if ctime < settled else -1))
    return rows, gone


def with_parents(paths: Iterable[str]) -> set[str]:
    """The folders holding ``paths`` (output-relative), and their parents up to "" (the top)."""
    out: set[str] = {""}
    for p in paths:
        d = p.rpartition("/")[0]
        while d and d not in out:
            out.add(d)
            d = d.rpartition("/")[0]
    return out


def prune_empty_dirs(top: Path) -> None:
    """Remove the empty folders under ``top`` (not ``top``), deepest first."""
    for root, _dirs, _files in os.walk(top, topdown=False):
        if Path(root) != top and not os.listdir(root):
            with contextlib.suppress(OSError):
                os.rmdir(root)


def prune_emptied(top: Path, removed: list[str], empty: bool) -> None:
    """Remove the folders under ``top`` left empty once ``removed`` (files, relative to ``top``) were
    deleted; ``empty``: a folder was empty before (the listing said so), then every folder is looked
    at (``prune_empty_dirs``). Else only the removed files' folders and their parents can be empty:
    an ``rmdir`` each, not a walk of the tree (a one-page edit replaces a search fragment file)."""
    if empty:
        prune_empty_dirs(top)
        return
    root = str(top)
    # deepest first: a folder whose last subfolder goes is tried after it
    for folder in sorted(
        {rel.rpartition("/")[0] for rel in removed}, key=lambda d: d.count("/"), reverse=True
    ):
        while folder:
            try:
                os.rmdir(f"{root}/{folder}")
            except OSError:  # not empty (or gone): nor are its parents emptied by this one
                break
            folder = folder.rpartition("/")[0]


def _output(dest: Path, made: set[str] | None) -> contextlib.AbstractContextManager[BinaryIO]:
    return atomic_file(dest, durable=False) if made is None else _new_file(dest, made)


def _size_mtime(f: BinaryIO) -> tuple[int, int]:
    # from the open file: its mtime is final once written (the rename and chmod do not change it)
    f.flush()
    st = os.fstat(f.fileno())
    return st.st_size, st.st_mtime_ns


def _new_file(dest: Path, made: set[str]) -> BinaryIO:
    return os.fdopen(_new_fd(dest, made), "wb")


def _new_fd(dest: Path, made: set[str]) -> int:
    # ``made``: the folders this process made (each page has its own: one mkdir, no failed open first)
    folder = os.path.dirname(dest)
    if folder not in made:
        try:
            os.mkdir(folder)
        except FileExistsError:  # made by another worker, or the output's top
            pass
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
        made.add(folder)
    fd = os.open(dest, _NEW_FILE, 0o644)
    try:
        os.fchmod(fd, 0o644)  # as atomic_write does, whatever the umask
    except OSError:
        os.close(fd)
        raise
    return fd
