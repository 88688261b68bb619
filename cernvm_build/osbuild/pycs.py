"""Debian's byte-compiled Python made cheap to import from CernVM-FS.

``py3compile`` runs in the maintainer scripts with ``SOURCE_DATE_EPOCH`` set, so Python writes
*checked-hash* pycs: every import of such a module reads the whole ``.py`` beside it and hashes it.
From CernVM-FS that is one more object fetched (and read through FUSE on every boot) for each module
the boot imports: cloud-init's imports made 454 of a first boot's objects (7.5 MB, 27 %) sources that
only served this check (ob20b). A timestamp pyc needs only the source's stat, which the catalog
answers. The tree's times are all set to the build's epoch (``debian._scrub``), so a timestamp pyc is
as deterministic as a hash one; and a source edited in the instance's overlay gets a new time and
size, so Python still compiles the edited module (an *unchecked* hash pyc would keep the old code).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: pyc header flags (PEP 552): bit 0 hash-based, bit 1 check the source
_CHECKED_HASH = 0b11
_HEADER = 16


def timestamp_pycs(tree: Path, epoch: int) -> int:
    """Turn each checked-hash pyc under ``tree`` whose source is a regular file beside it into a
    timestamp pyc for a source of time ``epoch`` and its present size; return how many. Neither a
    pyc nor a source that is a symbolic link is touched (its target may lie outside the tree), nor a
    pyc of another kind. ``os.walk`` does not follow links to folders."""
    count = 0
    for dirpath, _dirs, files in os.walk(tree):
        if os.path.basename(dirpath) != "__pycache__":
            continue
        parent = os.path.dirname(dirpath)
        for name in files:
            module, _, tail = name.partition(".")  # name.cpython-311.pyc, name.cpython-311.opt-1.pyc
            if not tail.endswith(".pyc"):
                continue
            pyc = os.path.join(dirpath, name)
            try:
                source = os.lstat(os.path.join(parent, module + ".py"))
                regular = stat.S_ISREG(source.st_mode) and stat.S_ISREG(os.lstat(pyc).st_mode)
            except FileNotFoundError:
                continue
            if regular and _rewrite(pyc, epoch, source.st_size):
                count += 1
    return count


def _rewrite(pyc: str, epoch: int, size: int) -> bool:
    fd = os.open(pyc, os.O_RDWR | os.O_NOFOLLOW)
    try:
        header = os.pread(fd, _HEADER, 0)
        if len(header) < _HEADER or int.from_bytes(header[4:8], "little") != _CHECKED_HASH:
            return False
        fields = (0).to_bytes(4, "little") + (epoch & 0xFFFFFFFF).to_bytes(4, "little")
        os.pwrite(fd, fields + (size & 0xFFFFFFFF).to_bytes(4, "little"), 4)
        return True
    finally:
        os.close(fd)
