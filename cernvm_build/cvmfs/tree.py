"""A repository subtree as a ``cernvm_build.tree.TreeSource``: what ``cvmfs export`` and the
container builds write, through the one tree writer and the one tar writer.

Entries come depth-first, children sorted by their UTF-8 bytes, walked with an explicit stack (a
1,500-deep chain does not meet Python's recursion limit). Hard links are recognised by
``DirEntry.link_key`` (catalog, directory, group, content, chunks, mode, owner, xattrs), as
CernVM-FS links only within one directory; a group a hostile catalog claims more widely is written
as separate files.
Entries hidden by the server (the ``/.cvmfs`` virtual snapshot directory) are left out.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from ..errors import CvmfsError
from ..tree import BLOCK, CHAR, FILE, SYMLINK, Entry, bad_name, depth_first, kind_of_mode, sort_key
from .catalog import FLAG_HIDDEN, DirEntry

if TYPE_CHECKING:
    from .repository import Repository

_SMALL = 256 * 1024


def entry_of(d: DirEntry, rel: str) -> Entry:
    """``d`` as a tree entry at the relative path ``rel``."""
    try:
        kind = kind_of_mode(d.mode)
    except ValueError as e:
        raise CvmfsError(f"{d.path}: {e}", hint="the catalog is corrupt or hostile") from e
    return Entry(
        path=rel,
        kind=kind,
        mode=stat.S_IMODE(d.mode),
        size=d.size if kind == FILE else 0,
        mtime=d.mtime,
        mtime_nsec=d.mtime_ns % 1_000_000_000 if d.mtime_ns // 1_000_000_000 == d.mtime else 0,
        uid=d.uid,
        gid=d.gid,
        target=d.symlink if kind == SYMLINK else "",
        link_id=d.link_key if kind == FILE else None,
        xattrs=dict(sorted(d.xattrs.items())),
        rdev=(os.major(d.rdev), os.minor(d.rdev)) if kind in (CHAR, BLOCK) else (0, 0),
        ref=d,
    )


class RepositoryTree:
    """The subtree at ``path`` of an opened repository snapshot; ``with_root`` adds the subtree's
    own directory first, as the entry with path "" (export keeps its mode and times)."""

    def __init__(self, repo: Repository, path: str = "/", *, with_root: bool = False) -> None:
        self.repo = repo
        self.with_root = with_root
        where = f"{repo.fqrn}@{repo.tag or 'revision ' + str(repo.revision)}"
        top = repo.lookup(path)
        if top is None or not top.is_dir:
            what = "does not exist" if top is None else "is not a directory"
            raise CvmfsError(f"{where}: {path} {what} in the repository")
        self.top = top
        self.base = top.path
        self.description = f"cvmfs://{repo.fqrn}{self.base}@{repo.tag or repo.root_hash}"

    def entries(self) -> Iterator[Entry]:
        if self.with_root:
            yield entry_of(self.top, "")
        yield from depth_first(self._children(self.base), self._subtree)

    def _subtree(self, entry: Entry) -> Iterator[Entry]:
        assert isinstance(entry.ref, DirEntry)
        return self._children(entry.ref.path)

    def _children(self, directory: str) -> Iterator[Entry]:
        """The entries of ``directory``, sorted; a name that cannot be one path component, or that
        appears twice, is an error here too (whatever the reader let through)."""
        cut = len(self.base.rstrip("/")) + 1
        prefix = directory.rstrip("/") + "/"
        previous: bytes | None = None
        # The reader streams a directory in the order of the names' UTF-8 bytes (``sort_key``), so
        # a million-entry directory is never a list here.
        for d in self.repo.iterdir(directory):
            # the name as the row gives it (the path's last part would hide a '/' inside it)
            name = d.path[len(prefix) :] if d.path.startswith(prefix) else d.path
            why = bad_name(name)
            key = sort_key(name)
            if why is None and previous is not None and key <= previous:
                # the order is checked, not trusted: a duplicate is only adjacent in order
                why = (
                    "the name appears twice in its directory (a duplicate entry)"
                    if key == previous
                    else "the directory's entries are not in name order"
                )
            if why is not None:
                raise CvmfsError(
                    f"{self.repo.fqrn}: {directory}: entry {name!r}: {why}",
                    hint="the repository is corrupt or hostile; nothing was written outside the output",
                )
            previous = key
            if not d.flags & FLAG_HIDDEN:
                yield entry_of(d, d.path[cut:])

    def open(self, entry: Entry) -> BinaryIO:
        ref = entry.ref
        if isinstance(ref, DirEntry) and ref.path == self.base.rstrip("/") + "/" + entry.path:
            if ref.size <= _SMALL:  # one read, no buffered file object: most files are small
                return io.BytesIO(self.repo.read(ref))
            return self.repo.open(ref)
        return self.repo.open(self.base.rstrip("/") + "/" + entry.path)
