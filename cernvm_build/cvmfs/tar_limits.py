"""The limits on a tar stream's members, checked as each header is read (one implementation, used by
``hub ingest``'s layer scan and by the publisher's ``scan_tar``).

tarfile in stream mode skips a member's data by reading it: a 200-byte layer whose PAX header says
``size=10**40`` reads empty blocks at the end of the stream for ever, and a sparse member says its
real size (what the publisher writes) with no data behind it. So a member's declared data end, and
the sum of the members' real sizes, are refused past what the stream can hold -- its stored size
times the compression's largest ratio -- before tarfile goes past the header. ``hub ingest`` caps a
layer further (``TarLimits``: ``--max-layer-bytes``/``--max-layer-entries``); the publisher keeps only
what the stream can hold (``STREAM``: a tree published from a tar may be as large as the user's).
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

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


#: the publisher's limits: none past what the stream can hold (a pipe, or bz2/xz/zstd: a size fits
#: the catalog's signed 64-bit integer, so ``size=10**40`` is refused)
STREAM = TarLimits(max_bytes=MAX_SIZE, max_entries=MAX_SIZE)


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
    declared = 0
    for count, m in enumerate(tar, 1):
        if count > limits.max_entries:
            raise CvmfsError(
                f"{where}: more than {limits.max_entries} members",
                hint=f"{HINT} (or raise the limit: --max-layer-entries)",
            )
        end = m.offset_data + m.size
        if m.isreg():
            declared += m.size  # a sparse member at its real size: what a reader writes
        if end > bound or declared > bound:
            what = "sparse member" if m.issparse() else "member"
            held = bound < limits.max_bytes  # the stream's own bound, not the limit
            past = (
                f"more than the stream can hold ({human(bound)})"
                if held
                else f"past the limit of {human(bound)}"
            )
            raise CvmfsError(
                f"{where}: tar {what} {m.name!r:.200} declares {m.size} bytes, {past}",
                hint=HINT if held or limits is STREAM else f"{HINT} (or raise the limit: --max-layer-bytes)",
            )
        yield m
