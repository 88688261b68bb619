"""A boot list: the object names of a boot's working set, fetched ahead as soon as the mount is ready.

An image built with ``--boot-list`` carries ``/etc/cvmfs/boot.list`` in its initrd (a header ``#
<fqrn> revision N root <hash>``, then names only, one a line: ``<hash>[suffix]``); the mount daemon
(``mount.py --boot-list``) hands it to ``start`` once the kernel has the mount. One background
thread then fetches the objects not in the cache yet in pipelined batches — files as their
inflated copies (``ObjectStore.fetch_ahead_many``, sizes from the catalogs), catalogs and other
objects as stored (``fetch_stored_many``): the same hash check, cache and quota as any fetch — so the
boot's readers, whose opens are scattered over the tree (libraries, Python packages, unit files),
find them on the disk instead of waiting a round trip each. The bytes still come from the server,
checked against their names; the list only says which to ask for.

A list made for another repository (user data switched it) is skipped whole; one of another
revision is fetched all the same (unchanged files keep their names). Only a first line of the
header's shape is a header (``# my boot list`` is a comment); it may be MAX_HEADER long. The
file must be a regular one (opened without blocking: a FIFO never holds up the unmount), is read to
MAX_BYTES at most, a line over MAX_LINE is skipped unread, and after MAX_BAD bad lines the rest is
not read.

Never fatal: an unreadable list, a line that is no object name, an object the server lacks or
delivers damaged is counted (``--stats``: ``~list-*``) and skipped. One thread and one connection,
batches of BATCH: the reader's own fetches go on other connections, and a reader that comes for an
object of a batch in flight waits for it, not fetches it twice (the store's claim on its key). A
reboot costs one look per name in the cache's in-memory holdings (no stat, no request).
Stdlib only: part of the initrd runtime.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .. import lazylog
from ..errors import CvmfsError
from ..fsutil import open_regular
from .objects import SUFFIXES, ObjectHash, parse_hash
from .repository import Repository
from .store import AHEAD_ITEM

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import BinaryIO

log = lazylog.get(__name__)

#: bounds of a list, at build and when read: names, bytes (a boot reads ~1,700 objects)
MAX_NAMES = 200_000
MAX_BYTES = 16 << 20
#: a line longer than this is no name (the longest, ``<40 hex>-shake128C``, is 50): skipped unread
MAX_LINE = 100
#: the first line may be a header this long (fqrn, revision and a shake128 root exceed MAX_LINE)
MAX_HEADER = 300
#: bad lines after which the rest of a file is not read (it is no list)
MAX_BAD = 1_000
#: objects per pipelined request (as the prefetcher's batches: ``prefetch.BATCH``)
BATCH = 8
#: how long unmount waits for a batch in flight (``stop``)
STOP_WAIT = 0.5
#: the most stored bytes of one listed object, or inflated bytes of a file (larger ones are left
#: to their reader)
ITEM_LIMIT = 64 << 20
#: file objects of at most this many bytes go in the pipelined batches, held in memory whole until
#: written (a batch: 1 MB at most: what a reader of its last object waits behind, as the
#: prefetcher's); larger ones are fetched one by one, streamed
WHOLE = AHEAD_ITEM
#: batches in a row that fetched nothing (server down, names all gone) after which the list stops
GIVE_UP = 2
#: the suffixes of file contents (whole files, chunks): made inflated in the plain cache
FILE_SUFFIXES = ("", "P")


def parse_name(text: str) -> tuple[ObjectHash, str]:
    """``<hash>[suffix]`` -> (hash, suffix); ValueError for anything else."""
    suffix = text[-1] if text and text[-1] in SUFFIXES else ""
    if suffix == "T":
        raise ValueError(f"{text!r}: a temporary object")
    return parse_hash(text[: len(text) - len(suffix)]), suffix


class Listing:
    """What a list file held: its names in order (deduplicated, at most MAX_NAMES), how many lines
    were neither a name, a comment nor blank, and its header (``header``) if it has one."""

    def __init__(self) -> None:
        self.names: list[tuple[ObjectHash, str]] = []
        self.bad = 0
        #: the repository (and, when the build knew them, revision and root hash) it was made for
        self.fqrn: str | None = None
        self.revision: int | None = None
        self.root_hash: str | None = None


def header(fqrn: str, revision: int | None = None, root_hash: str | None = None) -> str:
    """The first line of a list an image carries: which repository (revision, root) its names are
    of. The daemon skips a list made for another repository (user data switched it)."""
    rest = (f" revision {revision}" if revision is not None else "") + (
        f" root {root_hash}" if root_hash else ""
    )
    return f"# {fqrn}{rest}\n"


#: the header: ``# <fqrn> revision N root <hash>`` (revision and root optional). Only a first line
#: of this shape is one: ``# my boot list`` is a comment (a hand-written list is trusted whole)
_HEADER = re.compile(
    r"#\s*([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+)(?:\s+revision\s+([0-9]{1,18}))?(?:\s+root\s+([0-9a-f]{40}(?:-[a-z0-9]+)?))?",
    re.ASCII,
)


def _header(text: str, into: Listing) -> None:
    m = _HEADER.fullmatch(text)
    if m is None:
        return
    into.fqrn = m[1]
    into.revision = int(m[2]) if m[2] else None
    into.root_hash = m[3]


def moved(listing: Listing, revision: int, root_hash: str) -> bool:
    """Whether the list was made for another revision than the mounted one (its root or its
    revision, when the header gives them, differs): its catalog names are then not fetched."""
    return (listing.root_hash is not None and listing.root_hash != root_hash) or (
        listing.revision is not None and listing.revision != revision
    )


def parse(lines: Iterable[str | None]) -> Listing:
    """The list's names and header (a first line ``# <fqrn> ...``; later ``#`` lines are comments).
    A line that is no name (or None: over MAX_LINE, cut by the reader) is counted and skipped: a
    list is a hint, never a reason to fail. After MAX_BAD such lines the rest is not read: it is
    no list (a hostile or wrong file costs the daemon a bounded amount of CPU)."""
    names: dict[tuple[ObjectHash, str], None] = {}
    out = Listing()
    first = True
    for line in lines:
        text = line.strip() if line is not None else None
        if text == "":
            continue
        if text is not None and text.startswith("#"):
            if first:
                _header(text, out)
            first = False
            continue
        first = False
        try:
            if text is None or len(text) > MAX_LINE:
                raise ValueError("too long")
            names.setdefault(parse_name(text), None)
        except ValueError:
            out.bad += 1
            if out.bad >= MAX_BAD:
                break
            continue
        if len(names) >= MAX_NAMES:
            break
    out.names = list(names)
    return out


def _lines(f: BinaryIO) -> Iterator[str | None]:
    """The lines of the first MAX_BYTES of ``f``, None for one over MAX_LINE (its bytes are read
    in bounded pieces, never held); undecodable bytes spoil only their line."""
    left, limit = MAX_BYTES, MAX_HEADER
    while left > 0:
        line = f.readline(min(limit + 2, left))
        if not line:
            return
        left, limit = left - len(line), MAX_LINE
        if len(line) > limit and not line.endswith(b"\n"):  # cut: skip the rest of it
            while left > 0 and line and not line.endswith(b"\n"):
                line = f.readline(min(1 << 16, left))
                left -= len(line)
            yield None
            continue
        yield line.decode("utf-8", errors="replace")


def read(path: Path) -> Listing:
    """``parse`` of ``path``, a regular file: opened without blocking (a FIFO or a device is refused
    at once, never waited on: the daemon's unmount must not hang on its list)."""
    with open_regular(path) as f:  # NotRegularFile: an OSError, "not a regular file"
        return parse(_lines(f))


class BootList:
    """The background fetch of one list; ``stop`` ends it between batches (unmount)."""

    def __init__(self, repo: Repository, path: Path):
        self.repo = repo
        self.path = path
        self._stop = threading.Event()
        self._empty = 0  # batches in a row that fetched nothing (``_done``)
        self._evicted = 0  # the quota's evictions when the list began
        self._thread = threading.Thread(target=self._run, name="boot_list", daemon=True)
        #: what it did, for the log and the stats: names read, found cached, fetched, failed, bad lines
        self.counts = {"names": 0, "cached": 0, "fetched": 0, "failed": 0, "stale": 0, "bad": 0}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Ends the list at its next batch; waits at most ``timeout`` for a batch in flight (the
        daemon exits right after: a copy cut short is a ``.tmp`` the next start sweeps)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _count(self, phase: str, n: int, seconds: float = 0.0, cpu: float = 0.0) -> None:
        phases = self.repo.store.phases
        if phases is not None and n:
            rec = phases.setdefault(f"list-{phase}", [0, 0.0, 0.0])
            rec[0] += n
            rec[1] += seconds
            rec[2] += cpu

    def _run(self) -> None:
        try:
            self._fetch_all()
        except Exception:  # never the mount's failure: its readers fetch what they need themselves
            log.warning("boot list %s: stopped", self.path, exc_info=True)

    def _fetch_all(self) -> None:
        store = self.repo.store
        cache, plain = store.cache, store.plain_cache
        if cache is None:
            return
        try:
            listing = read(self.path)
        except OSError as e:
            log.warning("boot list %s: cannot be read: %s", self.path, e.strerror)
            return
        repo = self.repo
        if listing.fqrn is not None and listing.fqrn != repo.fqrn:
            # user data switched the repository: the names are another repository's
            log.warning(
                "boot list %s: made for %s, not the mounted %s: skipped", self.path, listing.fqrn, repo.fqrn
            )
            return
        stale = moved(listing, repo.revision, repo.root_hash)
        if stale:
            # another revision (the pin moved on): most file names are still the boot's (unchanged
            # files keep their hashes; those the mounted catalogs lack are skipped as stale), but
            # its catalogs are not fetched as listed: an older revision's would stay pinned in the
            # cache for ever (quota.pinned); the mounted revision's are loaded as readers load them
            log.info(
                "boot list %s: made for revision %s, revision %s mounted: its files only",
                self.path,
                listing.revision if listing.revision is not None else listing.root_hash,
                repo.revision,
            )
        names, bad = listing.names, listing.bad
        self.counts["names"], self.counts["bad"] = len(names), bad
        self._count("bad-line", bad)
        # what a reboot finds: one look each in the caches' in-memory holdings, no stat
        todo = [
            (h, s)
            for h, s in names
            if not ((plain is not None and plain.has(str(h), s)) or not cache.missing(h, s))
        ]
        self.counts["cached"] = len(names) - len(todo)
        self._count("cached", self.counts["cached"])
        # File objects become their reader's inflated copy at once (``plain/``), as a reader's own
        # fetch makes it; the rest (catalogs) go into the object cache as stored, first: the
        # catalogs say the files' sizes.
        files = [(h, s) for h, s in todo if s in FILE_SUFFIXES] if plain is not None else []
        others = [(h, s) for h, s in todo if s not in FILE_SUFFIXES or plain is None]
        if stale:
            self.counts["stale"] += sum(1 for _, s in others if s == "C")
            others = [(h, s) for h, s in others if s != "C"]
        quota = store.quota
        self._evicted = quota.evicted.files if quota is not None else 0
        for k in range(0, len(others), BATCH):
            if self._stop.is_set():
                return
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                fetched, failed = store.fetch_stored_many(others[k : k + BATCH], limit=ITEM_LIMIT)
            except OSError as e:  # the cache's disk (full, gone): the readers will say so themselves
                log.warning("boot list %s: %s", self.path, e)
                return
            if not self._done(fetched, failed, t0, c0):
                return
        if files and not self._stop.is_set():
            self._fetch_files(files, {f"{h}C" for h, s in names if s == "C"})
        with contextlib.suppress(Exception):
            log.info("boot list %s: %s", self.path, " ".join(f"{k} {v}" for k, v in self.counts.items()))

    def _done(self, fetched: int, failed: int, t0: float, c0: float) -> bool:
        """Counts a batch; False (with one log line) when the list should stop: GIVE_UP batches in
        a row fetched nothing (the server is down, or the names are gone: each further batch
        would only cost requests), or the cache's size limit began evicting (the list would push
        out what the boot has read, or its own first objects, before they are read)."""
        self.counts["fetched"] += fetched
        self.counts["failed"] += failed
        self._count("fetch", fetched, time.monotonic() - t0, time.thread_time() - c0)
        self._count("failed", failed)
        self._empty = self._empty + 1 if failed and not fetched else 0
        if self._empty >= GIVE_UP:
            log.warning("boot list %s: %d batches in a row fetched nothing: stopped", self.path, GIVE_UP)
            return False
        quota = self.repo.store.quota
        if quota is not None and quota.evicted.files > self._evicted:
            log.warning("boot list %s: the cache is full (its size limit evicts): stopped", self.path)
            return False
        return True

    def _fetch_files(self, files: list[tuple[ObjectHash, str]], catalogs: set[str]) -> None:
        """The listed file objects into the plain cache, each under its declared size and compression
        (``sizes``); a name no listed catalog of this revision knows (a list of an older one) is
        skipped, never stored under a guessed size."""
        t0, c0 = time.monotonic(), time.thread_time()
        known = sizes(self.repo, files, catalogs)
        self._count("map", len(known), time.monotonic() - t0, time.thread_time() - c0)
        items: list[tuple[str, str, int, bool, str]] = []
        over = 0
        for h, s in files:
            name = str(h)
            found = known.get((name, s))
            if found is None:
                self.counts["stale"] += 1
            elif found[0] > ITEM_LIMIT:  # left to its reader, which streams it
                over += 1
                log.info(
                    "boot list %s: %s%s is %d bytes, over %d: left to its reader",
                    self.path,
                    name,
                    s,
                    found[0],
                    ITEM_LIMIT,
                )
            else:
                items.append((name, s, found[0], found[1], f"listed object {name}{s}"))
        self.counts["failed"] += over
        self._count("failed", over)
        self._count("stale", self.counts["stale"])
        for k in range(0, len(items), BATCH):
            if self._stop.is_set():
                break
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                made, failed = self.repo.store.fetch_ahead_many(
                    items[k : k + BATCH], keep=False, whole=WHOLE, retry=False
                )
            except OSError as e:  # the cache's disk (full, gone): the readers will say so themselves
                log.warning("boot list %s: %s", self.path, e)
                break
            if not self._done(made, failed, t0, c0):
                break


def sizes(
    repo: Repository, files: list[tuple[ObjectHash, str]], catalogs: set[str]
) -> dict[tuple[str, str], tuple[int, bool]]:
    """(name, suffix) -> (inflated size, compressed) of the listed file objects, from the root
    catalog and the nested ones the list names (loaded as a reader loads them: they are the boot's),
    each asked once for its rows among the listed hashes (SQL filters: ``Catalog.objects_among``).
    A catalog that cannot be read is logged and its names stay unknown."""
    wanted = {(str(h), s) for h, s in files}
    digests = sorted({h.digest for h, _ in files})
    known: dict[tuple[str, str], tuple[int, bool]] = {}

    def problem(e: CvmfsError) -> None:
        log.info("boot list: %s", e)

    for cat in repo.catalogs(problem, descend=lambda ref: f"{ref.hash}C" in catalogs):
        try:
            for ref in cat.objects_among(digests):
                key = (ref.name, ref.suffix)
                if key in wanted:
                    known.setdefault(key, (ref.size, ref.compressed))
        except CvmfsError as e:
            problem(e)
    return known
