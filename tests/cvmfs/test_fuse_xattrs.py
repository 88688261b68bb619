"""The mount's extended attributes: the built-in ones the real client answers, then a file's own."""

from __future__ import annotations

import stat
from types import SimpleNamespace
from typing import cast

from cernvm_build.cvmfs.catalog_rows import DirEntry
from cernvm_build.cvmfs.fuse import xattr_names, xattr_value
from cernvm_build.cvmfs.repository import Repository

# what xattr_value reads of the mounted revision (a whole signed repository adds nothing here)
REPO = cast(Repository, SimpleNamespace(fqrn="test.cern.ch", revision=7, root_hash="ab" * 20, tag="v1"))


def _file(xattrs: dict[str, bytes]) -> DirEntry:
    mode = stat.S_IFREG | 0o644
    return DirEntry(
        path="/dir/file", name="file", mode=mode, kind=stat.S_IFREG, size=1, mtime=0, mtime_ns=0,
        uid=0, gid=0, symlink="", hardlink_group=0, linkcount=1, flags=0, content_hash="cd" * 20,
        xattrs=xattrs,
    )  # fmt: skip


def test_a_files_own_attributes_do_not_shadow_the_built_in_ones() -> None:
    """pr17d: a published file carrying user.root_hash=000... showed it through the mount, in place of
    the verified root hash (``attr -g root_hash`` to see which revision is mounted)."""
    forged = {
        "user.root_hash": b"0" * 40,
        "user.fqrn": b"evil.example",
        "user.revision": b"999",
        "user.hash": b"f" * 40,
        "user.tag": b"forged",
        "user.origin": b"mine",
    }
    entry = _file(forged)
    assert xattr_value(REPO, entry, "user.root_hash") == b"ab" * 20
    assert xattr_value(REPO, entry, "user.fqrn") == b"test.cern.ch"
    assert xattr_value(REPO, entry, "user.revision") == b"7"
    assert xattr_value(REPO, entry, "user.hash") == b"cd" * 20
    assert xattr_value(REPO, entry, "user.tag") == b"v1"
    assert xattr_value(REPO, entry, "user.origin") == b"mine"
    assert xattr_value(REPO, entry, "user.none") is None
    assert xattr_names(entry).count("user.root_hash") == 1
    # built-in attributes off (the μCernVM root): the file's own, whatever their names
    assert xattr_value(REPO, entry, "user.root_hash", magic=False) == b"0" * 40
    assert xattr_value(REPO, entry, "user.none", magic=False) is None
