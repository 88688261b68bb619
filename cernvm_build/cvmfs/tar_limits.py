"""The limits on a tar stream's members, checked as each header is read (one implementation, used by
``hub ingest``'s layer scan and by the publisher's ``scan_tar``).

tarfile in stream mode skips a member's data by reading it: a 200-byte layer whose PAX header says
``size=10**40`` reads empty blocks at the end of the stream for ever. So a member's *stored* data end
(a sparse member's map, and where tarfile reads the next header) is refused past what the stream can
hold -- its stored size times the compression's largest ratio -- before tarfile goes past the header.
A sparse member's real size is what a reader writes, holes as zeros, with no data behind them (1 TiB
from 1 KB): the holes are capped on their own (``TarLimits.max_holes``), so a 10 KiB ``tar --sparse``
of a 100 MB file passes. ``hub ingest`` caps a layer further (``TarLimits``: ``--max-layer-bytes``/
``--max-layer-entries``); the publisher keeps only what the stream can hold and the holes' cap
(``STREAM``: a tree published from a tar may be as large as the user's).
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast

from ..errors import CvmfsError
from .limits import MAX_SIZE, MAX_TAR_BYTES, MAX_TAR_ENTRIES, human

#: the most one stored byte inflates to, by tarfile's compression name: deflate's 1032:1 (its
#: longest match, 258 bytes, per code of at least 2 bits); a plain tar holds exactly what it stores.
#: bz2/xz/zstd reach far higher ratios: only ``TarLimits`` bound them.
RATIO = {"tar": 1, "gz": 1032}

HINT = "the archive is damaged or hostile"


@dataclass(frozen=True)
class TarLimits:
    #: the data a stream may declare (decompressed bytes; sparse members at their real size)
    max_bytes: int = MAX_TAR_BYTES
    #: members (headers) of one stream
    max_entries: int = MAX_TAR_ENTRIES
    #: the bytes the sparse members' holes add past their stored data (zeros a reader writes)
    max_holes: int = MAX_TAR_BYTES


#: the publisher's limits: none past what the stream can hold (a pipe, or bz2/xz/zstd: a size fits
#: the catalog's signed 64-bit integer, so ``size=10**40`` is refused)
STREAM = TarLimits(max_bytes=MAX_SIZE, max_entries=MAX_SIZE, max_holes=MAX_TAR_BYTES)


def stored_size(stream: IO[bytes]) -> int | None:
    """The size of ``stream`` when it is a regular file (None for a pipe or a socket)."""
    try:
        st = os.fstat(stream.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def stream_bound(comptype: str, stored: int | None, limits: TarLimits) -> int:
    """The most data a stream of ``stored`` bytes compressed as ``comptype`` can hold."""
    ratio = RATIO.get(comptype)
    if stored is None or ratio is None:
        return limits.max_bytes
    return min(limits.max_bytes, stored * ratio)


def checked_members(
    tar: tarfile.TarFile, bound: int, limits: TarLimits, where: str
) -> Iterator[tarfile.TarInfo]:
    """``tar``'s members, each checked before it is handed out (so before tarfile reads or skips its
    data on the next step): a CvmfsError naming ``where`` and the member past a limit."""
    declared = holes = 0
    for count, m in enumerate(tar, 1):
        if count > limits.max_entries:
            raise CvmfsError(
                f"{where}: more than {limits.max_entries} members",
                hint=f"{HINT} (or raise the limit: --max-layer-entries)",
            )
        # the stored data: a sparse member's map says what is stored (its size is the real one);
        # tar.offset is where tarfile reads the next header (an old GNU sparse header's own size)
        sparse = cast("list[tuple[int, int]] | None", m.sparse)  # typeshed says bytes: it is not
        data = m.size if sparse is None else sum(n for _, n in sparse)
        end = max(m.offset_data + data, tar.offset)
        if m.isreg():
            declared += m.size  # a sparse member at its real size: what a reader writes
            holes += max(0, m.size - data)
        what = "sparse member" if m.issparse() else "member"
        flag = HINT if limits is STREAM else f"{HINT} (or raise the limit: --max-layer-bytes)"
        if end > bound:
            held = bound < limits.max_bytes  # the stream's own bound, not the limit
            past = (
                f"more than the stream can hold ({human(bound)})"
                if held
                else f"past the limit of {human(bound)}"
            )
            said = data if m.offset_data + data > bound else end - m.offset_data
            raise CvmfsError(
                f"{where}: tar {what} {m.name!r:.200} declares {said} bytes, {past}",
                hint=HINT if held else flag,
            )
        if declared > limits.max_bytes:
            raise CvmfsError(
                f"{where}: tar {what} {m.name!r:.200} declares {m.size} bytes, "
                f"past the limit of {human(limits.max_bytes)}",
                hint=flag,
            )
        if holes > limits.max_holes:
            raise CvmfsError(
                f"{where}: tar sparse member {m.name!r:.200} declares {m.size} bytes, "
                f"its holes past the limit of {human(limits.max_holes)}",
                hint=HINT,
            )
        yield m
