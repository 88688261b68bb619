"""The limits on a tar stream's members, checked as each header is read (one implementation, used by
``hub ingest``'s layer scan and by the publisher's ``scan_tar``).

tarfile in stream mode skips a member's data by reading it: a 200-byte layer whose PAX header says
``size=10**40`` reads empty blocks at the end of the stream for ever. So a member's *stored* data end
(a sparse member's map, and where tarfile reads the next header) is refused past what the stream can
hold -- its stored size times the compression's largest ratio -- before tarfile goes past the header.
A sparse member's real size is what a reader writes, holes as zeros, with no data behind them (1 TiB
from 1 KB): the holes are capped on their own (``TarLimits.max_holes``), so a 10 KiB ``tar --sparse``
of a 100 MB file passes. ``hub ingest`` caps a layer further (``TarLimits``: ``--max-layer-bytes``/
``--max-layer-entries``), ``cvmfs publish`` likewise (``--max-tar-bytes``/``--max-tar-entries``);
what the publisher reads of the hub's layers, bounded by ingest first, or makes itself keeps only
what the stream can hold and the holes' cap (``STREAM``). A pipe, or bz2/xz, has no stored size to
bound a member by: ``tar_stream.TarStream`` bounds what it really holds as it is read.

Python 3.11's tarfile also keeps a negative size (a PAX ``size=-1024``) and moves its offset back by
it: a stream reader refuses to seek backwards, but a random-access one (``tarfile.open(path)``) reads
the same headers again for ever. So a member must not be negative and must start past the previous
one, and its uid/gid/mtime must fit the catalog -- checked here, once, for every reader: the
streams (``hub ingest``, ``scan_tar``, ``verify``'s layers) and the archive files (``members``).
"""

from __future__ import annotations

import math
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, cast

from ..errors import CvmfsError
from ..numtext import decimal
from .limits import MAX_SIZE, MAX_TAR_BYTES, MAX_TAR_ENTRIES, MAX_TAR_HEADER_BYTES, human

#: the most one stored byte inflates to, by tarfile's compression name: deflate's 1032:1 (its
#: longest match, 258 bytes, per code of at least 2 bits); a plain tar holds exactly what it stores.
#: bz2/xz reach far higher ratios: only ``TarLimits`` and what they really hold bound them.
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
    #: the flags that raise ``max_bytes``/``max_entries`` (``--max-FLAG-bytes``; "" for none)
    flag: str = "layer"


#: the limits of what is bounded before (the hub's layers) or made by us: none past what the stream
#: can hold (a size fits the catalog's signed 64-bit integer, so ``size=10**40`` is refused)
STREAM = TarLimits(max_bytes=MAX_SIZE, max_entries=MAX_SIZE, max_holes=MAX_TAR_BYTES, flag="")


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
    tar: tarfile.TarFile,
    bound: int,
    limits: TarLimits,
    where: str,
    expect: Callable[[tarfile.TarInfo, int], None] | None = None,
) -> Iterator[tarfile.TarInfo]:
    """``tar``'s members, each checked before it is handed out (so before tarfile reads or skips its
    data on the next step): a CvmfsError naming ``where`` and the member past a limit. ``expect``
    is told where each member's data ends (``TarStream``: a stream must hold it)."""
    declared = holes = 0
    after = -1  # where the previous member's data started: a member must start past it
    for count, m in enumerate(tar, 1):
        if count > limits.max_entries:
            raise CvmfsError(
                f"{where}: more than {limits.max_entries} members",
                hint=limit_hint(limits, "entries"),
            )
        # the stored data: a sparse member's map says what is stored (its size is the real one);
        # tar.offset is where tarfile reads the next header (an old GNU sparse header's own size)
        sparse = cast("list[tuple[int, int]] | None", m.sparse)  # typeshed says bytes: it is not
        data = m.size if sparse is None else sum(n for _, n in sparse)
        _check_fields(m, data, after, where)
        after = m.offset_data
        end = max(m.offset_data + data, tar.offset)
        if m.isreg():
            declared += m.size  # a sparse member at its real size: what a reader writes
            holes += max(0, m.size - data)
        if end > bound:
            raise _past_bound(m, data, end, bound, limits, where)
        if expect is not None:
            expect(m, end)
        if declared > limits.max_bytes:
            raise CvmfsError(
                f"{where}: tar {_what(m)} {m.name!r:.200} declares {m.size} bytes, "
                f"past the limit of {human(limits.max_bytes)}",
                hint=limit_hint(limits),
            )
        if holes > limits.max_holes:
            raise CvmfsError(
                f"{where}: tar sparse member {m.name!r:.200} declares {m.size} bytes, "
                f"its holes past the limit of {human(limits.max_holes)}",
                hint=HINT,
            )
        yield m


def _past_bound(
    m: tarfile.TarInfo, data: int, end: int, bound: int, limits: TarLimits, where: str
) -> CvmfsError:
    """A member whose stored data (or the next header) ends at ``end``, past ``bound``: the stream's
    own bound (what its stored size can hold) or, when that is larger, the limit."""
    held = bound < limits.max_bytes
    past = f"more than the stream can hold ({human(bound)})" if held else f"past the limit of {human(bound)}"
    said = data if m.offset_data + data > bound else end - m.offset_data
    return CvmfsError(
        f"{where}: tar {_what(m)} {m.name!r:.200} declares {said} bytes, {past}",
        hint=HINT if held else limit_hint(limits),
    )


def _what(m: tarfile.TarInfo) -> str:
    return "sparse member" if m.issparse() else "member"


def limit_hint(limits: TarLimits, what: str = "bytes") -> str:
    """The hint past a limit: ``hub ingest``'s and ``cvmfs publish``'s can be raised by a flag."""
    return f"{HINT} (or raise the limit: --max-{limits.flag}-{what})" if limits.flag else HINT


#: the catalog's bounds: uid/gid unsigned 32-bit less (uid_t)-1, which means 'no owner'; mtime int64
MAX_ID = 2**32 - 2
MTIMES = (-(2**63), 2**63)


def _check_fields(m: tarfile.TarInfo, data: int, after: int, where: str) -> None:
    """Refuse what tarfile takes as given from a (PAX or base-256) header but a catalog cannot
    hold, or that moves the reader back (negative sizes, a member starting before the last)."""
    why = None
    if m.size < 0 or data < 0:
        why = f"has a negative size ({m.size if m.size < 0 else data})"
    elif m.offset_data <= after:
        why = f"starts at byte {m.offset_data}, not past the previous member (at {after})"
    elif not 0 <= m.uid <= MAX_ID or not 0 <= m.gid <= MAX_ID:
        why = f"has uid {m.uid} / gid {m.gid}, outside 0..{MAX_ID}"
    elif not (math.isfinite(m.mtime) and MTIMES[0] <= m.mtime < MTIMES[1]):
        why = f"has mtime {m.mtime}, not a time a catalog holds"
    if why is not None:
        raise CvmfsError(f"{where}: tar member {m.name!r:.200} {why}", hint=HINT)


class BoundedTarInfo(tarfile.TarInfo):
    """tarfile's member header, whose extended headers (PAX, GNU long name/link) are refused past
    ``MAX_TAR_HEADER_BYTES`` before tarfile reads their data into memory whole (a pipe's 10 GiB of
    PAX records was one ``read`` of 10 GiB). Made per stream by ``bounded_tarinfo(where)``."""

    where = ""

    def _proc_pax(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        self._check_header_size()
        try:
            return super()._proc_pax(tar)  # type: ignore[misc,no-any-return]
        except ValueError as e:
            # tarfile's own int()/split of a GNU sparse map in the PAX records (formats 0.0 and 0.1)
            raise CvmfsError(
                f"{self.where}: tar PAX header {self.name!r:.200} at byte {self.offset}: "
                f"a GNU sparse map that cannot be read ({e})",
                hint=HINT,
            ) from None

    def _proc_gnusparse_10(
        self, next: tarfile.TarInfo, pax_headers: dict[str, str], tar: tarfile.TarFile
    ) -> None:
        """A GNU 1.0 sparse map (decimal lines opening the member's data: a count, then offset and
        size pairs) read as tarfile reads it, bounded: tarfile read a map of any length (~4x its
        bytes in memory: a 1 GiB layer, 4 GiB) and an unreadable line was a ValueError traceback."""
        numbers: list[int] = []
        buf, read, want = b"", 0, -1
        while want < 0 or len(numbers) < want:
            while b"\n" not in buf:
                block = tar.fileobj.read(tarfile.BLOCKSIZE)  # type: ignore[union-attr]
                read += len(block)
                if not block or read > MAX_TAR_HEADER_BYTES:
                    raise self._bad_map(
                        f"runs past {'the archive' if not block else human(MAX_TAR_HEADER_BYTES)}"
                    )
                buf += block
            line, buf = buf.split(b"\n", 1)
            n = decimal(line.decode("ascii", "replace"))
            if n is None:
                raise self._bad_map(f"holds {line[:40]!r}, not a number")
            if want < 0:
                want = 2 * n
                if want > MAX_TAR_HEADER_BYTES:
                    raise self._bad_map(f"declares {n} entries")
            else:
                numbers.append(n)
        next.offset_data = tar.fileobj.tell()  # type: ignore[union-attr]
        next.sparse = list(zip(numbers[::2], numbers[1::2], strict=True))  # type: ignore[assignment]

    def _bad_map(self, why: str) -> CvmfsError:
        return CvmfsError(
            f"{self.where}: tar member after {self.name!r:.200}: its GNU sparse map {why}", hint=HINT
        )

    def _proc_gnulong(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        self._check_header_size()
        return super()._proc_gnulong(tar)  # type: ignore[misc,no-any-return]

    def _check_header_size(self) -> None:
        if self.size > MAX_TAR_HEADER_BYTES:
            gnu = self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
            raise CvmfsError(
                f"{self.where}: tar {'GNU long-name' if gnu else 'PAX extended'} header {self.name!r:.200} "
                f"at byte {self.offset} declares {self.size} bytes, more than the "
                f"{human(MAX_TAR_HEADER_BYTES)} any member's header needs",
                hint=HINT,
            )


def bounded_tarinfo(where: str) -> type[tarfile.TarInfo]:
    """``BoundedTarInfo`` naming ``where`` in its errors, for ``tarfile.open(..., tarinfo=...)``
    (tarfile makes each header with the class it is given; a CvmfsError it raises passes through)."""
    return type("BoundedTarInfo", (BoundedTarInfo,), {"where": where})


def open_file(path: str | os.PathLike[str]) -> tarfile.TarFile:
    """An uncompressed tar file opened for random access (``tarfile.open(path, "r:")``) with
    ``bounded_tarinfo``: a PAX or GNU long-name header's declared data, read whole by tarfile, is
    refused past ``MAX_TAR_HEADER_BYTES`` here too, not only on a stream (a 3 GiB OVA that is one PAX
    header was 3 GiB of memory). A CvmfsError names ``path``; a TarError is the caller's to word."""
    return tarfile.open(path, "r:", tarinfo=bounded_tarinfo(os.fspath(path)))


def members(tar: tarfile.TarFile, where: str) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, an archive opened from a file (random access, ``tarfile.open(p)``),
    each checked as it is read (see the module's note: a backward size loops ``getmembers()`` for
    ever). Read to the end, ``tar`` keeps them, so ``extractfile(name)`` does not walk it again.
    A CvmfsError naming ``where`` and the member; a tarfile.TarError is left to the caller."""
    bound = stream_bound("tar", stored_size(cast("IO[bytes]", tar.fileobj)), STREAM)
    return list(checked_members(tar, bound, STREAM, where))
