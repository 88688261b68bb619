"""Content-addressed objects: hash algorithms, object names and paths, zlib.

An object is named by the hash of its *stored* (normally zlib-compressed) bytes, written as lowercase
hex plus an algorithm id (``""`` for SHA-1, ``-rmd160``, ``-shake128``), and lives at
``data/<first two hex>/<rest of hex><id><suffix>``; the suffix letter says what kind of object it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import CvmfsError

#: Object kinds (the letter appended to the path).
SUFFIX_FILE = ""
SUFFIX_CATALOG = "C"
SUFFIX_PARTIAL = "P"
SUFFIX_HISTORY = "H"
SUFFIX_CERTIFICATE = "X"
SUFFIX_METAINFO = "M"
SUFFIX_MICROCATALOG = "L"
SUFFIX_TEMPORARY = "T"
SUFFIXES = frozenset("CPHXMLT")

#: Algorithm names and their ids in object names, in catalog flag order (flags bits 8-10 hold index).
ALGORITHM_IDS: dict[str, str] = {"sha1": "", "rmd160": "-rmd160", "shake128": "-shake128"}
ALGORITHM_ORDER = ("sha1", "rmd160", "shake128")
DIGEST_SIZE = 20

_HASH_RE = re.compile(r"^([0-9a-f]{40})(-rmd160|-shake128)?\Z")
_MD5_RE = re.compile(r"^[0-9a-f]{32}\Z")


class ObjectHash:
    """A content hash: the hex digest and its algorithm. Compared and hashed by value; not to be
    changed once made (a plain class, not a frozen dataclass: see ``catalog_rows.DirEntry``)."""

    __slots__ = ("algorithm", "hex")

    def __init__(self, hex: str, algorithm: str = "sha1") -> None:
        self.hex = hex
        self.algorithm = algorithm

    def __eq__(self, other: object) -> bool:
        if type(other) is not ObjectHash:
            return NotImplemented
        return self.hex == other.hex and self.algorithm == other.algorithm

    def __hash__(self) -> int:
        return hash((self.hex, self.algorithm))

    def __str__(self) -> str:
        return self.hex + ALGORITHM_IDS[self.algorithm]

    @property
    def digest(self) -> bytes:
        return bytes.fromhex(self.hex)

    def path(self, suffix: str = "") -> str:
        """``data/XX/rest<id><suffix>``, relative to the repository base."""
        return object_path(str(self), suffix)


def parse_hash(text: str) -> ObjectHash:
    """Parse ``<40 hex>[-rmd160|-shake128]``; raises ValueError for anything else."""
    m = _HASH_RE.match(text.strip().lower())
    if not m:
        raise ValueError(f"not a CernVM-FS content hash: {text!r}")
    algo = {None: "sha1", "-rmd160": "rmd160", "-shake128": "shake128"}[m.group(2)]
    return ObjectHash(m.group(1), algo)


def is_md5(text: str) -> bool:
    return bool(_MD5_RE.match(text))


def from_digest(digest: bytes, algorithm: str = "sha1") -> ObjectHash:
    return ObjectHash(digest.hex(), algorithm)


def algorithm_from_flags(flags: int) -> str:
    index = (flags >> 8) & 7
    if index >= len(ALGORITHM_ORDER):
        raise ValueError(f"unknown hash algorithm index {index} in catalog flags {flags}")
    return ALGORITHM_ORDER[index]


class _Shake128:
    """SHAKE-128 truncated to 160 bits, with the update/hexdigest interface of the others."""

    def __init__(self) -> None:
        self._h = hashlib.shake_128()

    def update(self, data: bytes, /) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest(DIGEST_SIZE)

    def hexdigest(self) -> str:
        return self._h.hexdigest(DIGEST_SIZE)


TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import Protocol

    class _Digest(Protocol):
        def update(self, data: bytes, /) -> None: ...
        def digest(self) -> bytes: ...
        def hexdigest(self) -> str: ...


def new_hasher(algorithm: str = "sha1") -> _Digest:
    if algorithm == "sha1":
        return hashlib.sha1()
    if algorithm == "rmd160":
        try:
            return hashlib.new("ripemd160")
        except ValueError:  # no OpenSSL (the initrd) or OpenSSL 3 without the legacy provider
            from .ripemd160 import Ripemd160

            return Ripemd160()
    if algorithm == "shake128":
        return _Shake128()
    raise ValueError(f"unknown hash algorithm {algorithm!r}")


def hash_bytes(data: bytes, algorithm: str = "sha1") -> ObjectHash:
    h = new_hasher(algorithm)
    h.update(data)
    return ObjectHash(h.hexdigest(), algorithm)


def hash_chunks(chunks: Iterable[bytes], algorithm: str = "sha1") -> ObjectHash:
    h = new_hasher(algorithm)
    for c in chunks:
        h.update(c)
    return ObjectHash(h.hexdigest(), algorithm)


def object_path(name: str, suffix: str = "") -> str:
    """``data/XX/rest+suffix`` for an object name ``<hex><id>``."""
    if suffix and suffix not in SUFFIXES:
        raise ValueError(f"unknown object suffix {suffix!r}")
    return f"data/{name[:2]}/{name[2:]}{suffix}"


def fanned_out_files(
    base: Path, *, sweep_before: float | None = None, swept: list[str] | None = None
) -> Iterator[os.DirEntry[str]]:
    """The files in ``base``'s ``XX`` directories, temporaries (dot files) left out; not stat'ed
    here (``DirEntry.stat`` if the caller wants sizes and times: the plain cache's sweep does not).
    With ``sweep_before`` (a time), temporaries (``.*.tmp``) last changed before it are a crashed
    writer's and are removed on the way (appended to ``swept``): the mount's start walks the cache
    once for both."""
    with contextlib.suppress(FileNotFoundError), os.scandir(base) as top:
        for d in top:
            if not d.is_dir(follow_symlinks=False):
                continue
            with os.scandir(d.path) as files:
                for f in files:
                    if f.name.startswith("."):
                        if (
                            sweep_before is not None
                            and f.name.endswith(".tmp")
                            and _sweep_one(f.path, sweep_before)
                            and swept is not None
                        ):
                            swept.append(f.path)
                    elif f.is_file(follow_symlinks=False):
                        yield f


def _sweep_one(path: str, before: float) -> bool:
    """Remove the temporary ``path`` if it was last changed before ``before``; whether it was."""
    try:
        if os.lstat(path).st_mtime < before:
            os.unlink(path)
            return True
    except FileNotFoundError:
        pass
    return False


def sweep_temporaries(base: Path, before: float) -> int:
    """Remove the temporaries (``XX/.*.tmp``) in ``base``'s fan-out directories last changed before
    ``before`` (a crashed writer's); how many."""
    swept: list[str] = []
    for _ in fanned_out_files(base, sweep_before=before, swept=swept):
        pass
    return len(swept)


def _symlinked(shown: str, remove: str) -> CvmfsError:
    return CvmfsError(
        f"cache {shown} is a symbolic link, not a directory: objects would be read from and written "
        "to where it points",
        hint=f"the cache was tampered with; remove {remove}",
    )


def refuse_symlinked_fan_out(base: str, entry: os.DirEntry[str]) -> None:
    """A cache's ``XX`` directory must not be a symbolic link: objects would be read from and
    written to where it points (audit13c finding 9). Free where the caller lists anyway (d_type)."""
    if entry.is_symlink():
        raise _symlinked(f"{base}: {entry.name}", base)


def refuse_symlinked_folder(path: Path) -> None:
    """A cache's own folders (the repository's, ``plain``) must not be symbolic links, for the same
    reason (audit13d finding 4). The folder the user names as the cache may be one (a cache on
    another disk); what it holds is the cache's."""
    if path.is_symlink():
        raise _symlinked(str(path), str(path))


class Holdings(set[str]):
    """What a cache's fan-out directory holds (``XX/rest`` files, by ``XX + rest``), in memory, so
    that a miss costs no failed open: on a cold read through the mount every object missed in the
    plain cache, in the object cache and in the prefetcher's look, each a system call and, among
    the daemon's threads, a hand-off of the interpreter lock (issue 14).

    For the process that owns the directory, the mount daemon: taken stock of once (one listing per
    ``XX`` directory), then told of every file the process makes, removes or evicts. A hint both
    ways, never trusted for what is served: a file gone behind its back (another process's size
    limit, a user clearing the cache) makes the open after a "held" answer fail, and the caller
    forgets it and fetches as on a miss; a file another process added is fetched again (the same
    bytes, renamed into place atomically).

    A set of those keys itself (``in``, ``add``, ``discard`` are C calls: several per object on a
    cold read).

    ``sweep_before`` (a time): on the way, as ``sweep_temporaries`` does, a crashed writer's
    temporaries (``.*.tmp``) last changed before it are removed: the mount's start lists the
    directory once for both (each listing of its 256 directories is a few ms of a TCG guest's CPU).

    ``background``: the ``XX`` directories are listed by a thread while the caller goes on (a
    reboot's mount waited ~0.24 guest-s for both caches' cold listings under TCG, issue 13). Until
    ``filled``, a name not held is no miss (the caller looks on the disk), a name held is there as
    ever; what the process adds or removes meanwhile is kept (a removal the listing had not seen
    yet may come back: a hint, as above). The fan-out's symbolic-link check stays before return."""

    def __init__(self, base: Path, *, sweep_before: float | None = None, background: bool = False):
        super().__init__()
        self.base = str(base)
        #: the stock is all taken: from then on a name not held is a miss (set once, never unset)
        self.filled = False
        fan_out: list[str] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.base) as listing:
            for entry in listing:
                if len(entry.name) == 2:
                    refuse_symlinked_fan_out(self.base, entry)
                    fan_out.append(entry.name)
        if background:
            threading.Thread(
                target=self._fill, args=(fan_out, sweep_before), name="holdings", daemon=True
            ).start()
        else:
            self._fill(fan_out, sweep_before)

    def _fill(self, fan_out: list[str], sweep_before: float | None) -> None:
        for d in fan_out:
            try:
                names = os.listdir(f"{self.base}/{d}")
            except (NotADirectoryError, FileNotFoundError):
                continue
            except OSError:  # a directory not read: its names unknown, never ``filled``
                return
            self.update(d + n for n in names if n[0] != ".")
            if sweep_before is not None:
                for n in names:
                    if n[0] == "." and n.endswith(".tmp"):
                        # best effort: one the process may not remove (a read-only cache) is left; in
                        # the listing's thread it was a traceback and a stock never filled
                        with contextlib.suppress(OSError):
                            _sweep_one(f"{self.base}/{d}/{n}", sweep_before)
        self.filled = True

    def forget_path(self, path: str) -> None:
        """``path`` (a file of this directory, e.g. one the size limit evicted) is gone."""
        base = self.base
        if path.startswith(base) and path[len(base) : len(base) + 1] == "/":
            rel = path[len(base) + 1 :]
            self.discard(rel[:2] + rel[3:])


def compress(data: bytes) -> bytes:
    """zlib stream with header, as the server writes (Z_DEFAULT_COMPRESSION)."""
    return zlib.compress(data)


class InflateLimit(ValueError):
    """The stream inflates to more than the limit given (inflating stopped there)."""


def decompress(data: bytes, limit: int | None = None) -> bytes:
    """Inflate a whole zlib stream; raises zlib.error on damaged data or trailing garbage, and
    InflateLimit as soon as the output would pass ``limit`` bytes (nothing more is inflated)."""
    d = zlib.decompressobj()
    if limit is None:
        out = d.decompress(data)
    else:
        out = d.decompress(data, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise InflateLimit(f"inflates to more than {limit} bytes")
    out += d.flush()
    if limit is not None and len(out) > limit:
        raise InflateLimit(f"inflates to more than {limit} bytes")
    if not d.eof or d.unused_data:
        raise zlib.error("incomplete or over-long zlib stream")
    return out
