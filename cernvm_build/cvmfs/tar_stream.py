"""A tar stream read once, front to back (one reader for the publisher's ``scan_tar``, ``hub ingest``'s
layer scan and ``container verify``'s layers): decompressed here, not by tarfile, counted, hashed
for a layer, and bounded as it is read.

Decompressed here because tarfile's own ``r|*`` inflates one gzip member and stops: a layer or
tarball made by pigz or ``cat a.gz b.gz`` published only its first part, while ``hub ingest``
(through ``GzipFile``) read and hashed all of it. ``GzipFile``, ``BZ2File`` and ``LZMAFile`` read
every member; the compression is told by the magic bytes, as ``r|*`` does, unless the stream
opens with a tar header (its checksum right): a plain tar whose first member is ``BZh.txt`` or
``]`` starts with bz2's or lzma's short magic, and was refused.

Bounds, beside the members' own (``tar_limits.checked_members``, at each header):

- the bytes produced are counted against ``TarLimits.max_bytes`` (a pipe, or bz2/xz, whose ratio
  has no useful bound, cannot be bounded by its stored size);
- a member whose data (where tarfile reads the next header) runs past the end of the stream is
  refused at the first read past the end: tarfile skips data by reading it, and a read at the end
  returns nothing, so a pipe or a 1 MB gzip declaring ``size=2**62`` looped for ever (or 10^8 times)
  on empty reads. So the time spent is that of the bytes the stream really holds. A running
  deflate ratio (produced <= 1032 x read) would add nothing: zlib never produces more than that;
- a layer (``TarStream.finish``) may hold after its end marker only zeros, at most ``TRAILER``.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
import zlib
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

from ..errors import CvmfsError
from .limits import KiB, MiB, human
from .tar_limits import (
    HINT,
    TarLimits,
    bounded_tarinfo,
    checked_members,
    limit_hint,
    stored_size,
    stream_bound,
)

#: read size of the compressed stream
_READ = 1 << 16

#: what a layer may hold after its tar end marker: GNU tar, bsdtar and Python's tarfile pad the
#: archive with zeros to a whole record (10 KiB, ``-b 20``); Go's archive/tar (docker, buildkit,
#: containerd, podman) writes the two zero blocks alone. 1 MiB allows ``tar -b 2048``.
TRAILER = 1 * MiB

#: the compressions by their magic bytes, looked at only when the stream does not open with a tar
#: header (tarfile's ``r|*`` knows the same, with longer magics and not zstd; these short ones
#: also tell ``bzip2 -1`` and ``lzma -9``, whose magics are not tarfile's)
_MAGIC = (
    (b"\x1f\x8b", "gz"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "xz"),  # lzma-alone, which LZMAFile reads too
    (b"\x28\xb5\x2f\xfd", "zst"),
)


class _Counted(io.RawIOBase):
    """The stored (compressed) stream: reads counted and, for a layer, hashed (the blob digest)."""

    def __init__(self, f: IO[bytes], hashed: bool) -> None:
        self.f, self.size = f, 0
        self.h = hashlib.sha256() if hashed else None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.f.read(len(b))
        n = len(data)
        b[:n] = data
        self.size += n
        if self.h is not None:
            self.h.update(data)
        return n


class TarStream(io.RawIOBase):
    """The decompressed tar of ``raw``, for ``tarfile.open(fileobj=..., mode="r|")``. ``layer``: hash
    it (the diff_id) and the stored bytes (the blob digest), and keep its tail for ``finish``."""

    def __init__(self, raw: IO[bytes], limits: TarLimits, where: str, *, layer: bool = False) -> None:
        self.limits, self.where = limits, where
        self.blob = _Counted(raw, hashed=layer)
        buffered = io.BufferedReader(self.blob, _READ)
        self.comptype = _comptype(buffered.peek(tarfile.BLOCKSIZE)[: tarfile.BLOCKSIZE])
        if self.comptype == "zst":
            raise CvmfsError(
                f"{where}: a zstd-compressed tar, which is not supported",
                hint="decompress it first (zstd -dc FILE) and give the tar, or '-' with the tar on stdin",
            )
        self._src: IO[bytes] = buffered
        if self.comptype == "gz":
            self._src = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
        elif self.comptype == "bz2":
            self._src = bz2.BZ2File(buffered)  # type: ignore[assignment]
        elif self.comptype == "xz":
            self._src = lzma.LZMAFile(buffered)  # type: ignore[assignment]  # noqa: SIM115
        #: the most data a member may declare (what the stored size can hold, else the limit)
        self.bound = stream_bound(self.comptype, stored_size(raw), limits)
        self.size = 0  # decompressed bytes produced
        self.h = hashlib.sha256() if layer else None
        self._recent: deque[tuple[int, bytes]] | None = deque() if layer else None
        self._need, self._member = 0, tarfile.TarInfo()
        self._ended = False  # the stream has ended (a read returned nothing)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes, counted and checked (tarfile reads through this, not ``readinto``:
        one copy less)."""
        try:
            data = self._src.read(-1 if size is None else size)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise CvmfsError(f"{self.where}: the tar stream cannot be read ({e})", hint=HINT) from None
        n = len(data)
        if not n and size != 0:
            self._ended = True
            if self.size < self._need:
                raise self._truncated()
            return data
        start, self.size = self.size, self.size + n
        if self.size > self.limits.max_bytes:
            raise CvmfsError(
                f"{self.where}: the tar holds more than {human(self.limits.max_bytes)}",
                hint=limit_hint(self.limits),
            )
        if self.h is not None:
            self.h.update(data)
        if self._recent is not None:
            self._recent.append((start, data))  # tarfile reads at most a record past its end
            while len(self._recent) > 1 and self._recent[1][0] <= self.size - 64 * KiB:
                self._recent.popleft()
        return data

    def expect(self, m: tarfile.TarInfo, end: int) -> None:
        """``m``'s data (and so where the next header is read) ends at ``end``: the stream must
        hold that much."""
        self._need, self._member = end, m

    def _truncated(self) -> CvmfsError:
        m = self._member
        return CvmfsError(
            f"{self.where}: tar member {m.name!r:.200} declares {self._need - m.offset_data} bytes, "
            f"but the stream ends {self.size - m.offset_data} bytes into it",
            hint=HINT,
        )

    def members(self, tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        """``tar``'s members (``tar`` opened on this stream), each checked (``checked_members``),
        then the end checked: tarfile takes a header cut short by the stream's end for the end of
        the archive, and a pipe cut there published what came before as if it were whole."""
        yield from checked_members(tar, self.bound, self.limits, self.where, self.expect)
        if self._ended and tar.offset < self.size < tar.offset + tarfile.BLOCKSIZE:
            raise CvmfsError(
                f"{self.where}: truncated tar header at byte {tar.offset} (the stream ends "
                f"{self.size - tar.offset} bytes into it)",
                hint=f"{HINT}: the stream was cut short",
            )

    def finish(self, tar: tarfile.TarFile) -> None:
        """Read a layer to its end (the diff_id covers it all): after the end marker, where tarfile
        stopped, at most ``TRAILER`` bytes, all zeros."""
        assert self._recent is not None, "finish is for a layer"
        end = tar.offset
        # tarfile reads at most a record past where it stopped: the kept chunks reach back to it
        assert not self._recent or self._recent[0][0] <= end, (self._recent[0][0], end)
        for start, data in self._recent:
            if start + len(data) > end and not _zeros(data[max(0, end - start) :]):
                raise self._past_end(end, "non-zero bytes")
        self._recent = None
        while self.size <= end + TRAILER:
            data = self.read(_READ)
            if not data:
                return
            if not _zeros(data):
                raise self._past_end(end, "non-zero bytes")
        raise self._past_end(end, f"more than {human(TRAILER)}")

    def _past_end(self, end: int, what: str) -> CvmfsError:
        return CvmfsError(
            f"{self.where}: the layer holds {what} after its tar end marker (at byte {end})",
            hint=f"{HINT}: tar writers put at most a record of zeros there",
        )

    @property
    def digests(self) -> tuple[str, str]:
        """A layer's (blob digest, diff_id), once ``finish`` has read it."""
        assert self.h is not None and self.blob.h is not None
        return "sha256:" + self.blob.h.hexdigest(), "sha256:" + self.h.hexdigest()


def _comptype(head: bytes) -> str:
    """The compression of a stream opening with ``head`` ("tar": none)."""
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")  # the header checksum, mostly
        return "tar"
    except tarfile.HeaderError:
        return next((c for magic, c in _MAGIC if head.startswith(magic)), "tar")


def _zeros(data: bytes) -> bool:
    return data.count(0) == len(data)


def open_tar(stream: TarStream) -> tarfile.TarFile:
    """tarfile on ``stream``: a TarError (not a tar) is the caller's to word."""
    return tarfile.open(fileobj=stream, mode="r|", tarinfo=bounded_tarinfo(stream.where))
