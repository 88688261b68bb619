"""The sha256 of the site's non-Markdown files (static assets, the release files a site serves itself),
taken again only for files that changed.

Every build needs each asset's digest (asset URLs are versioned by content, ``plan._asset_jobs``) and
each served release file's sha256 (checked against the release index, ``links.check_release_files``);
reading and hashing them all on every build costs nothing for a few stylesheets and seconds for a site
serving release images. The rule is the Markdown sources' (``sources``), not the outputs' size + mtime:
an output is a file this tool wrote, an input is one anybody may change. A file's recorded digest is
used while its size, mtime, ctime and inode are the recorded ones, so an edit that keeps the size and
sets the mtime back (``touch -d``, ``cp -p``, ``rsync -t``) is still seen: writing a file or setting its
times moves its ctime, and nothing sets a ctime back. A file is recorded only once its mtime and ctime
are ``SETTLED_NS`` old, so a write in the same clock tick as the recorded stat is never missed.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
import time
from collections.abc import Mapping
from pathlib import Path

from ..fsutil import CHUNK, NotRegularFile, open_regular
from .ntuple import NamedTuple
from .sources import SETTLED_NS, not_regular

#: what the state knows of a file: path -> ((size, mtime, ctime, inode), sha256)
Known = dict[str, tuple[tuple[int, int, int, int], str]]


class Digests(NamedTuple):
    sha256: dict[str, str]  # the caller's name of each file -> sha256 of its bytes (hex)
    #: state rows of the files hashed now whose stat is settled (``State.put_files``), recorded files gone
    rows: list[tuple[str, int, int, int, int, str]]
    gone: set[str]
    known: Known  # what the state knew (``digests``' argument)


def digests(files: Mapping[str, Path], known: Known) -> Digests:
    """The sha256 of each of ``files`` (name -> path); ``known``: ``State.files()``."""
    settled = time.time_ns() - SETTLED_NS
    out: dict[str, str] = {}
    rows: list[tuple[str, int, int, int, int, str]] = []
    seen: set[str] = set()
    for name, path in files.items():
        full = str(path)
        seen.add(full)
        stat = _stat(full)
        got = known.get(full)
        if got is not None and got[0] == stat:
            out[name] = got[1]
            continue
        out[name] = digest = _sha256(full)
        # unchanged while it was read (else the digest may be of neither version: not recorded)
        if max(stat[1], stat[2]) < settled and _stat(full) == stat:
            rows.append((full, *stat, digest))
    return Digests(out, rows, known.keys() - seen, known)


def _sha256(full: str) -> str:
    """A file's sha256, if it is a regular file (``sources.not_regular``): a FIFO in static/ hung
    the build, and with it ``site serve``'s rebuilds."""
    h = hashlib.sha256()
    try:
        with open_regular(Path(full)) as f:
            while block := f.read(CHUNK):
                h.update(block)
    except NotRegularFile:
        raise not_regular(full) from None
    return h.hexdigest()


def _stat(full: str) -> tuple[int, int, int, int]:
    st = os.stat(full)
    if not stat_mod.S_ISREG(st.st_mode):  # (a socket: its open would fail with ENXIO, not this line)
        raise not_regular(full)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
