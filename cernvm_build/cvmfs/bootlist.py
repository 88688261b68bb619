"""A boot list: the object names of a boot's working set, fetched ahead as soon as the mount is ready.

An image built with ``--boot-list`` carries ``/etc/cvmfs/boot.list`` in its initrd (names only, one
a line: ``<hash>[suffix]``); the mount daemon (``mount.py --boot-list``) hands it to ``start`` once
the kernel has the mount. One background thread then fetches the objects not in the cache yet in
pipelined batches (``ObjectStore.fetch_stored_many``: the same hash check, cache and quota as any
fetch), so the boot's readers, whose opens are scattered over the tree (libraries, Python packages,
unit files), find them on the disk instead of waiting a round trip each. The bytes still come from
the server, checked against their names; the list only says which to ask for.

Never fatal: an unreadable list, a line that is no object name, an object the server lacks or
delivers damaged is counted (``--stats``: ``~list-*``) and skipped. One thread and one connection,
batches of BATCH: the reader's own fetches go on other connections, and a reader that comes for an
object of a batch in flight waits for it, not fetches it twice (the store's claim on its key). A
reboot costs one look per name in the cache's in-memory holdings (no stat, no request).
Stdlib only: part of the initrd runtime.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ..errors import CvmfsError
from .objects import SUFFIXES, ObjectHash, parse_hash
from .repository import Repository

log = logging.getLogger(__name__)

#: bounds of a list, at build and when read: names, bytes (a boot reads ~1,700 objects)
MAX_NAMES = 200_000
MAX_BYTES = 16 << 20
#: objects per pipelined request (as the prefetcher's batches: ``prefetch.BATCH``)
BATCH = 8
#: the most stored bytes of one listed object, or inflated bytes of a file (larger ones are left
#: to their reader)
ITEM_LIMIT = 64 << 20
#: file objects of at most this many bytes go in the pipelined batches, held in memory whole until
#: written (a batch: 8 MB at most); larger ones are fetched one by one, streamed
WHOLE = 1 << 20
#: the suffixes of file contents (whole files, chunks): made inflated in the plain cache
FILE_SUFFIXES = ("", "P")


def parse_name(text: str) -> tuple[ObjectHash, str]:
    """``<hash>[suffix]`` -> (hash, suffix); ValueError for anything else."""
    suffix = text[-1] if text and text[-1] in SUFFIXES else ""
    if suffix == "T":
        raise ValueError(f"{text!r}: a temporary object")
    return parse_hash(text[: len(text) - len(suffix)]), suffix


def parse(lines: Iterable[str]) -> tuple[list[tuple[ObjectHash, str]], int]:
    """The object names of a list in order, deduplicated, at most MAX_NAMES, and how many lines were
    neither a name nor blank (skipped: a list is a hint, never a reason to fail)."""
    names: dict[tuple[ObjectHash, str], None] = {}
    bad = 0
    for line in lines:
        text = line.strip()
        if not text:
            continue
        try:
            names.setdefault(parse_name(text), None)
        except ValueError:
            bad += 1
            continue
        if len(names) >= MAX_NAMES:
            break
    return list(names), bad


def read(path: Path) -> tuple[list[tuple[ObjectHash, str]], int]:
    """``parse`` of the first MAX_BYTES of ``path`` (undecodable bytes spoil only their line)."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES)
    return parse(data.decode("utf-8", errors="replace").splitlines())


class BootList:
    """The background fetch of one list; ``stop`` ends it between batches (unmount)."""

    def __init__(self, repo: Repository, path: Path):
        self.repo = repo
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="boot_list", daemon=True)
        #: what it did, for the log and the stats: names read, found cached, fetched, failed, bad lines
        self.counts = {"names": 0, "cached": 0, "fetched": 0, "failed": 0, "stale": 0, "bad": 0}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
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
            names, bad = read(self.path)
        except OSError as e:
            log.warning("boot list %s: cannot be read: %s", self.path, e.strerror)
            return
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
        for k in range(0, len(others), BATCH):
            if self._stop.is_set():
                return
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                fetched, failed = store.fetch_stored_many(others[k : k + BATCH], limit=ITEM_LIMIT)
            except OSError as e:  # the cache's disk (full, gone): the readers will say so themselves
                log.warning("boot list %s: %s", self.path, e)
                return
            self._done(fetched, failed, t0, c0)
        if files and not self._stop.is_set():
            self._fetch_files(files, {f"{h}C" for h, s in names if s == "C"})
        with contextlib.suppress(Exception):
            log.info("boot list %s: %s", self.path, " ".join(f"{k} {v}" for k, v in self.counts.items()))

    def _done(self, fetched: int, failed: int, t0: float, c0: float) -> None:
        self.counts["fetched"] += fetched
        self.counts["failed"] += failed
        self._count("fetch", fetched, time.monotonic() - t0, time.thread_time() - c0)
        self._count("failed", failed)

    def _fetch_files(self, files: list[tuple[ObjectHash, str]], catalogs: set[str]) -> None:
        """The listed file objects into the plain cache, each under its declared size and compression
        (``sizes``); a name no listed catalog of this revision knows (a list of an older one) is
        skipped, never stored under a guessed size."""
        t0, c0 = time.monotonic(), time.thread_time()
        known = sizes(self.repo, files, catalogs)
        self._count("map", len(known), time.monotonic() - t0, time.thread_time() - c0)
        items: list[tuple[str, str, int, bool, str]] = []
        for h, s in files:
            name = str(h)
            found = known.get((name, s))
            if found is None:
                self.counts["stale"] += 1
            elif found[0] > ITEM_LIMIT:  # left to its reader
                self.counts["failed"] += 1
            else:
                items.append((name, s, found[0], found[1], f"listed object {name}{s}"))
        self._count("stale", self.counts["stale"])
        for k in range(0, len(items), BATCH):
            if self._stop.is_set():
                break
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                made, failed = self.repo.store.fetch_ahead_many(items[k : k + BATCH], keep=False, whole=WHOLE)
            except OSError as e:  # the cache's disk (full, gone): the readers will say so themselves
                log.warning("boot list %s: %s", self.path, e)
                break
            self._done(made, failed, t0, c0)


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
