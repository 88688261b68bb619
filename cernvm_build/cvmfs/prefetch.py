"""Fetching ahead of a reader, in a bounded pool of threads (the FUSE client's, issue 14).

A program that opens a file in a directory is very likely to open its siblings next (``find``,
``tar``, ``cp -r``, an interpreter importing a package, a boot reading ``/usr/lib``). Opening a file
therefore fetches the next small files of its directory (in the name order readdir showed) whole,
in parallel, while the reader is still on the first: over HTTP, the round trip per object is what
costs, not the bytes. They go in batches (``BATCH`` files a job: one wake-up of a worker, all the
requests pipelined on one connection). Past a directory's last small file the window goes on into
the directories after it in its parent (name order), as ``find``, ``tar`` and ``os.walk`` go. A
sequential reader of a chunked file gets its next chunk fetched the same way.

Nothing is fetched on readdir or lookup alone, so ``find``/``ls -l`` cost no bandwidth. The window is
bounded in files and in bytes and the number of queued fetches is capped, so memory stays within the
store's LRU; a failed fetch ahead is only logged: the reader meets (and reports) the error itself.
Every object still goes through the store, so hash and size checks are the same as on a plain read.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import queue
import threading
from collections.abc import Callable, Sequence
from stat import S_IFDIR, S_IFREG

from .. import lazylog
from ..errors import CernVMError
from .catalog import DirEntry, chunk_at
from .catalog_rows import FLAG_CHUNKED, FLAG_EXTERNAL
from .repository import Repository

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import Any

log = lazylog.get(__name__)

WORKERS = 8
#: whole files up to this size are fetched ahead (larger ones are chunked and read ahead by chunk)
SMALL_FILE = 1 << 20
#: how far ahead of the opened file: at most this many files and bytes (inflated)
WINDOW_FILES = 32
WINDOW_BYTES = 8 << 20
#: whole files fetched by one job, pipelined on one connection (the window moves on by this many)
BATCH = 8
#: directories after the opened file's that the window may go on into, at most; it is topped up
#: again only when fewer than half of them are left ahead of the reader (whole batches, see _beyond)
BEYOND_DIRS = 16
#: fetches queued or running at most (a reader jumping between directories cannot pile them up)
MAX_PENDING = 64
#: directory listings remembered (name order, small files only), each of at most MAX_LISTING entries
MAX_DIRS = 256
MAX_LISTING = 10_000
#: listings read ahead of the reader, kept whole for its readdir (``take_children``): at most this
#: many, of at most SHARED_LISTING entries each
SHARED_DIRS = 64
SHARED_LISTING = 256
#: after this many files in a row looked up ahead and found in the plain cache already (counted by
#: file, not by open: in a tree of small directories most opens look at nothing new, their window
#: having been looked at from the directory before), only one open in PROBE_EVERY looks ahead (and
#: listings are not kept meanwhile): a warm cache needs no fetching, and looking cost a quarter of a
#: warm read's Python work; any file found missing ends it
QUIET_AFTER = 16
PROBE_EVERY = 16


class _Listing:
    __slots__ = ("entries", "names", "next")

    def __init__(self, entries: Sequence[DirEntry]):
        self.entries = [e for e in entries if _small_file(e)]
        self.names = [e.name for e in self.entries]
        self.next = 0  # the first index not yet scheduled


class _Subdirs:
    """A parent's subdirectories (name order) and how far the window has gone into them."""

    __slots__ = ("ahead", "entries", "paths")

    def __init__(self, entries: list[DirEntry]):
        self.entries = entries
        self.paths = [e.path for e in entries]
        self.ahead = 0  # index of the first subdirectory the window has not gone into yet


def _small_file(e: DirEntry) -> bool:
    # DirEntry's is_file, is_chunked, is_external inline (this runs for every entry listed)
    flags = e.flags
    return (
        e.kind == S_IFREG
        and 0 < e.size <= SMALL_FILE
        and not flags & FLAG_EXTERNAL
        and not (flags & FLAG_CHUNKED and e.chunks)
    )


class Prefetcher:
    def __init__(self, repo: Repository, *, workers: int = WORKERS):
        self.repo = repo
        self.workers = workers
        self._lock = threading.Lock()
        self._dirs: collections.OrderedDict[str, _Listing] = collections.OrderedDict()
        self._pending: set[str] = set()
        #: subdirectories of the directories whose children were opened last
        self._subdirs: collections.OrderedDict[str, _Subdirs] = collections.OrderedDict()
        #: listings read here that readdir has not taken yet (see take_children)
        self._shared: collections.OrderedDict[str, list[DirEntry]] = collections.OrderedDict()
        self._pool: _Pool | None = None
        self._quiet = 0  # files in a row found cached ahead, then opens while quiet (see QUIET_AFTER)
        plain = repo.store.plain_cache
        self._plain = plain is not None
        #: what is in the mount's plain cache needs no fetch (a warm start would otherwise queue a
        #: thread's work per file for nothing); the daemon knows that without a stat (``Holdings``)
        self._have: Callable[[str, str], bool] = plain.has if plain else (lambda name, suffix: False)

    def close(self, *, finish: bool = False) -> None:
        """Stop the pool; fetches not started yet are dropped unless ``finish``."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(finish=finish)

    def listed(self, path: str, children: Sequence[DirEntry]) -> None:
        """readdir saw these children of ``path`` (name order): keep them for opens that follow."""
        if self._quiet < QUIET_AFTER:
            self._keep(path, children)

    def _keep(self, path: str, children: Sequence[DirEntry]) -> None:
        """Keep ``path``'s listing unless one is kept already: a revision never changes, and the kept
        one knows how far the window went (readdir of a directory the window went into ahead of the
        reader would otherwise have its files looked at, and the window moved on, a second time)."""
        with self._lock:
            if path in self._dirs:
                self._dirs.move_to_end(path)
                return
        listing = _Listing(children)
        with self._lock:
            listing = self._dirs.setdefault(path, listing)
            self._dirs.move_to_end(path)
            while len(self._dirs) > MAX_DIRS:
                self._dirs.popitem(last=False)

    def _list(self, path: str, entry: DirEntry | None = None) -> _Listing | None:
        """``path``'s listing (``entry``: its own, if known: not looked up again), read from its
        catalog and kept (None if that fails: a prefetch is only a hint); the one kept under the lock
        is returned, which a concurrent readdir may have set. A small one is also kept whole for the
        reader's readdir, which follows (``take_children``)."""
        try:
            # one query, no stream (None: more than MAX_LISTING, not looked ahead in)
            children = self.repo.listing(entry or path, MAX_LISTING)
        except CernVMError as err:
            log.debug("prefetch: listing %s failed: %s", path, err)
            return None
        self._keep(path, children or [])
        with self._lock:
            if children is not None and len(children) <= SHARED_LISTING:
                self._shared[path] = children
                while len(self._shared) > SHARED_DIRS:
                    self._shared.popitem(last=False)
            return self._dirs.get(path)

    def take_children(self, path: str) -> list[DirEntry] | None:
        """The children of ``path`` if they were read here ahead of the reader (once: readdir takes
        them instead of reading its catalog a second time; the kernel keeps the listing after)."""
        if not self._shared:  # a GIL-held check: readdir of a directory not read ahead, most often
            return None
        with self._lock:
            return self._shared.pop(path, None)

    def opened(self, entry: DirEntry) -> None:
        """``entry`` was opened: fetch the next small files of its directory."""
        probe = self._quiet >= QUIET_AFTER
        if probe:  # a warm cache: look now and then (a GIL-held counter: a lost update is harmless)
            self._quiet += 1
            if (self._quiet - QUIET_AFTER) % PROBE_EVERY:
                return
        parent = entry.path.rpartition("/")[0] or "/"  # posixpath.dirname: four calls, per open
        with self._lock:
            listing = self._dirs.get(parent)
        if listing is None:
            listing = self._list(parent)
            if listing is None:
                return
        i = bisect.bisect_right(listing.names, entry.name)
        todo: list[DirEntry] = []
        with self._lock:
            start = i if probe else max(i, listing.next)  # a probe looks again at what was cached
            if start > i + WINDOW_FILES - BATCH:
                return  # less than a batch of the window left to fetch: it moves on by whole batches
            budget = WINDOW_BYTES
            j = start
            checked = 0  # candidates looked up in the plain cache
            while j < len(listing.entries) and j < i + WINDOW_FILES and len(self._pending) < MAX_PENDING:
                e = listing.entries[j]
                if e.size > budget:
                    break
                budget -= e.size
                j += 1
                if e.content_hash is None or e.content_hash in self._pending:
                    continue
                checked += 1
                if not self._have(e.content_hash, ""):
                    self._pending.add(e.content_hash)
                    todo.append(e)
            listing.next = max(listing.next, j)
        if not probe and j >= len(listing.entries):
            more, seen = self._beyond(parent, i + WINDOW_FILES - j, budget)
            todo += more
            checked += seen
        if todo or checked:
            with self._lock:
                if todo:
                    self._quiet = 0
                elif probe:  # counted by open from here on (see PROBE_EVERY)
                    self._quiet += 1
                else:
                    self._quiet = min(QUIET_AFTER, self._quiet + checked)
        for k in range(0, len(todo), BATCH):
            batch = todo[k : k + BATCH]
            self._submit_job((self._fetch_batch, batch), [e.content_hash or "" for e in batch])

    def _beyond(self, path: str, room: int, budget: int) -> tuple[list[DirEntry], int]:
        """The window went past the end of ``path``'s small files: the small files of the directories
        that follow it in its parent (name order, as ``find``, ``tar`` or ``os.walk`` go on), up to
        ``room`` files and ``budget`` bytes. Most directories of a software tree hold a few files:
        without this the reader met each directory's first file cold and most jobs were one file.
        The window goes up to BEYOND_DIRS directories ahead and is topped up only when fewer than
        half of those are left: each top-up is several directories' files, so jobs are whole batches
        (one top-up per directory made jobs of one directory's two files on the bench tree).
        Returns the files to fetch and how many were looked up in the cache: those found there count
        towards the quiet of a warm cache as the opened directory's do (else a warm read of a tree of
        small directories listed ahead all along: its window in the directory opened is always
        looked at already, by the look beyond from the directory before)."""
        up = path.rpartition("/")[0] or "/"
        subdirs = self._subdirs_of(up)
        first = bisect.bisect_right(subdirs.paths, path)  # the directory after ``path``
        with self._lock:
            start = max(first, subdirs.ahead)
        if start - first >= BEYOND_DIRS // 2:
            return [], 0
        todo: list[DirEntry] = []
        checked = 0
        end = min(len(subdirs.paths), first + BEYOND_DIRS)
        ahead = start
        for sibling in subdirs.entries[start:end]:
            if room <= 0:
                break
            with self._lock:
                listing = self._dirs.get(sibling.path)
            if listing is None:
                listing = self._list(sibling.path, sibling)
                if listing is None:
                    break
            with self._lock:
                k = listing.next
                while k < len(listing.entries) and room > 0 and len(self._pending) < MAX_PENDING:
                    e = listing.entries[k]
                    if e.size > budget:
                        room = 0
                        break
                    budget -= e.size
                    room -= 1
                    k += 1
                    if e.content_hash is None or e.content_hash in self._pending:
                        continue
                    checked += 1
                    if not self._have(e.content_hash, ""):
                        self._pending.add(e.content_hash)
                        todo.append(e)
                listing.next = max(listing.next, k)
                if k < len(listing.entries):  # stopped inside it: its own opens go on from there
                    break
            ahead += 1
        with self._lock:
            subdirs.ahead = max(subdirs.ahead, ahead)
        return todo, checked

    def _subdirs_of(self, up: str) -> _Subdirs:
        """``up``'s subdirectories, read from its catalog once and kept (for MAX_DIRS parents)."""
        with self._lock:
            subdirs = self._subdirs.get(up)
        if subdirs is None:
            try:
                listed = itertools.islice(self.repo.iterdir(up), MAX_LISTING)
                dirs = [c for c in listed if c.kind == S_IFDIR]
            except CernVMError as err:
                log.debug("prefetch: listing %s failed: %s", up, err)
                dirs = []
            with self._lock:
                subdirs = self._subdirs.setdefault(up, _Subdirs(dirs))
                self._subdirs.move_to_end(up)
                while len(self._subdirs) > MAX_DIRS:
                    self._subdirs.popitem(last=False)
        return subdirs

    def next_chunk(self, entry: DirEntry, pos: int) -> None:
        """A sequential reader of a chunked file is at ``pos``, past the middle of a chunk: fetch the
        next chunk, so the network overlaps with the consumer."""
        chunks = entry.chunks
        i = chunk_at(chunks, pos)
        if i < 0 or i + 1 >= len(chunks) or pos - chunks[i].offset < chunks[i].size // 2:
            return
        nxt = chunks[i + 1]
        if self._have(nxt.hash, "P"):
            return
        with self._lock:
            if nxt.hash in self._pending or len(self._pending) >= MAX_PENDING:
                return
            self._pending.add(nxt.hash)
        self._submit(entry, nxt.offset, i + 1, nxt.hash)

    def _submit(self, entry: DirEntry, offset: int, part: int, key: str) -> None:
        """Fetch ``entry``'s object ``part`` (the chunk at ``offset``; 0 for a whole file)."""
        self._submit_job((self._fetch, entry, offset, part, key), [key])

    def _submit_job(self, job: tuple[Any, ...], keys: list[str]) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = _Pool(self.workers)
            pool = self._pool
        if not pool.submit(job):  # shut down meanwhile (unmount)
            with self._lock:
                self._pending.difference_update(keys)

    def _fetch_batch(self, entries: list[DirEntry]) -> None:
        """Whole small files of one directory, in one go (one wake-up of this thread, one pipelined
        round trip: ``Repository.fetch_ahead_many``)."""
        try:
            if self._plain:
                self.repo.fetch_ahead_many(entries)
            else:
                for e in entries:
                    self._fetch(e, 0, 0, e.content_hash or "")
        except CernVMError as e:
            log.debug("prefetch of %d files of %s failed: %s", len(entries), entries[0].path, e)
        finally:
            with self._lock:
                self._pending.difference_update(e.content_hash for e in entries)

    def _fetch(self, entry: DirEntry, offset: int, part: int, key: str) -> None:
        try:
            if self._plain:  # made in the plain cache (its contents handed to the read that follows)
                self.repo.fetch_ahead(entry, part)
            else:  # one byte is enough: the store fetches, checks and keeps the whole object
                self.repo.read(entry, offset, 1)
        except CernVMError as e:
            log.debug("prefetch of %s at %d failed: %s", entry.path, offset, e)
        finally:
            with self._lock:
                self._pending.discard(key)


class _Pool:
    """Up to ``workers`` threads taking ``(function, *args)`` jobs from one queue; one more is started
    only when a job comes and none is idle (as ``concurrent.futures`` does: a cold read on a loaded
    machine keeps few busy, and each extra one is more contention for the GIL). Not
    ``concurrent.futures`` itself: nobody waits for a fetch ahead's result, and a future per job
    (its condition, lock and callbacks) is Python work per fetched object for nothing (cProfile of a
    cold read: ~4 of a file's ~155 Python calls)."""

    def __init__(self, workers: int):
        self.workers = workers
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one count per worker waiting for a job
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._open = True
        self._cancel = False

    def submit(self, job: tuple[Any, ...]) -> bool:
        """Queue ``job``; False if the pool was shut down."""
        with self._lock:  # not queued after shutdown's ends: each worker takes one and leaves
            if not self._open:
                return False
            self._jobs.put(job)
            if not self._idle.acquire(timeout=0) and len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, name=f"prefetch_{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
        return True

    def _work(self) -> None:
        get, idle = self._jobs.get, self._idle
        while (job := get()) is not None:
            if not self._cancel:
                try:
                    job[0](*job[1:])
                except Exception:  # a job's own errors are its to report: the worker goes on
                    log.debug("prefetch job failed", exc_info=True)
            idle.release()

    def shutdown(self, *, finish: bool) -> None:
        """No more jobs; the queued ones run (``finish``) or are dropped; waits for the workers."""
        with self._lock:
            self._open = False
            self._cancel = not finish
            threads = list(self._threads)
            for _ in threads:
                self._jobs.put(None)
        for t in threads:
            t.join()
