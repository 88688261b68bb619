"""Objects as the reader needs them: fetched, hash-checked, inflated and size-checked.

Compressed bytes are hashed *before* anything is inflated or cached, and the stream is cut off as
soon as it is longer than its declared size allows (``limits.zlib_bound``). Inflating stops as soon
as the output passes the declared size (or, where nothing is declared, the cap for the kind of
object), in steps of at most ``BLOCK`` bytes, so a zlib bomb costs a few MB — or, for a declared
size of at most ``WHOLE_MAX`` (16 MiB) where libdeflate is there, in one call into a buffer of that
size (``inflate.py``: at most ``AT_ONCE`` at once), so a bomb costs that buffer and its stored bytes.
Without a cache, stored bytes above ``SPILL`` go to a scratch file while they are fetched and hashed
(one inflated in one call is then read back whole: at most ``zlib_bound`` of 16 MiB). Inflated
objects are kept in a small in-memory LRU (so reading a chunk in 128 KiB FUSE pieces inflates it
once); objects larger than the LRU allows are inflated into a scratch file once and then read with
pread.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

from .. import lazylog
from ..errors import CvmfsError, IntegrityError
from ..fsutil import remove_own_tree, reraise_naming, write_all
from . import inflate
from .cache import ObjectCache
from .diskfull import FullDisk
from .fetch import Fetcher
from .inflate import WHOLE_MAX
from .limits import human, zlib_bound
from .objects import ObjectHash, new_hasher, object_path, parse_hash
from .plaincache import TRAILER, PlainCache, SizeMismatch
from .quota import Quota

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import BinaryIO, TypeVar

    from .fetch import Item

    _T = TypeVar("_T")
log = lazylog.get(__name__)
#: a claimed object's lock once given back (``_claimed_many``)
_DONE = threading.Lock()

BLOCK = 1 << 20
LRU_BYTES = 64 << 20
LRU_MAX_ITEM = 24 << 20
#: what an LRU entry costs besides its bytes (its key, the bytes object, the ordered dict's slot),
#: charged to LRU_BYTES: counting the bytes alone kept every object of a tree of small files (an
#: export of 200,000 7-byte files held 200,000 entries, ~33 MB; a million empty ones would be held
#: for nothing at all)
LRU_ENTRY_COST = 256
#: cached objects up to this size are read (and checked) in one go
SMALL = 1 << 20
#: without a cache, stored bytes beyond this go to a scratch file while they are hash-checked
SPILL = 8 << 20
#: fetched ahead (``fetch_ahead``): contents up to AHEAD_ITEM bytes (what one FUSE READ of a whole
#: small file asks for) are handed to the read that follows, AHEAD_BYTES of them at most
AHEAD_ITEM = 128 << 10
AHEAD_BYTES = 8 << 20


def sqlite_states_its_size(header: bytes, length: int) -> bool:
    """The SQLite database of ``length`` bytes whose first 100 bytes are ``header`` states its size
    in its header (page size times page count, valid: the change counter matches the
    version-valid-for number), so SQLite reads no further and bytes after it (the plain cache's
    trailer) are never taken for a page. Every SQLite since 3.7.0 (2010) writes it so."""
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00") or header[24:28] != header[92:96]:
        return False
    page = int.from_bytes(header[16:18], "big")
    if page == 1:
        page = 1 << 16
    return int.from_bytes(header[28:32], "big") * page == length


def stored_limit(size: int | None, compressed: bool, cap: int | None) -> int | None:
    """The most stored bytes an object of inflated ``size`` (None: unknown, then ``cap``) can have."""
    if size is None:
        return None if cap is None else (zlib_bound(cap) if compressed else cap)
    return zlib_bound(size) if compressed else size


class Phases(dict[str, list[float]]):
    """Where making objects goes (``mount --stats``, the initrd's ``cvmfs_stats``): per phase
    [count, seconds, CPU seconds of the thread]. For a reader's miss ``fetch`` (the GET with its hash
    check, waiting on the network included), ``inflate``, ``write`` (into the plain cache), or
    for an object too big to keep in memory ``big-inflate`` and ``big-write`` (one phase,
    ``inflate+write``, before issue 13's split showed both waiting the same 4.5x their CPU in the
    guest: the one vCPU's sharing, not the disk); ``ahead-*`` the same for
    objects fetched ahead in pipelined batches. Names have no spaces (the file's lines are split)."""

    def add(self, name: str, seconds: float, cpu: float) -> None:
        rec = self.get(name)
        if rec is None:
            rec = self[name] = [0, 0.0, 0.0]
        rec[0] += 1  # GIL-held; a lost update under contention does not matter here
        rec[1] += seconds
        rec[2] += cpu


class _Laps:
    """A stopwatch over one object's phases: ``lap(name)`` adds the time since the last lap (or
    ``restart``) to ``name`` and starts the next; ``_NO_LAPS`` when no one asked for the figures."""

    __slots__ = ("c0", "phases", "t0")

    def __init__(self, phases: Phases) -> None:
        self.phases = phases
        self.restart()

    def restart(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.thread_time()

    def lap(self, name: str) -> None:
        # the clocks read once, the end of this phase and the start of the next: ``thread_time`` is
        # a system call (no vDSO), and osboot's guest runs with ``cvmfs_stats`` (issue 13)
        t, c = time.perf_counter(), time.thread_time()
        self.phases.add(name, t - self.t0, c - self.c0)
        self.t0, self.c0 = t, c


class _NoLaps:
    def restart(self) -> None:
        pass

    def lap(self, name: str) -> None:
        pass


_NO_LAPS = _NoLaps()


def _laps(phases: Phases | None) -> _Laps | _NoLaps:
    return _NO_LAPS if phases is None else _Laps(phases)


def _owned(block: bytes) -> bytes:
    """``block`` as bytes of its own: a view of an ``inflate.reusable`` buffer copied out of it."""
    return block if type(block) is bytes else bytes(block)


def _lapped(blocks: Iterator[bytes], laps: _Laps, name: str) -> Iterator[bytes]:
    """``blocks``, each one's making timed as ``name`` (its consumer's work before it asks for the
    next one goes to that next one: whole objects come in one block)."""
    for block in blocks:
        laps.lap(name)
        yield block


def _blocks(parts: list[bytes], spill: BinaryIO | None) -> Iterator[bytes]:
    """The blocks of an object ``_fetched`` returned, from their start (read again from ``spill``)."""
    if spill is None:
        return iter(parts)
    spill.seek(0)
    return iter(lambda: spill.read(BLOCK), b"")


#: the largest object a mount on a full plain-cache disk serves from memory (a ``memfd``): bounded,
#: so that a full disk does not turn into a full memory; a larger one is still the read's ENOSPC
PASS_THROUGH_MAX = 64 << 20
#: the most bytes of such objects held in memory at once (memfds still open anywhere in this
#: process): one object's bound alone let N files open at once hold N x PASS_THROUGH_MAX
PASS_THROUGH_BUDGET = 256 << 20
#: a write's errors that mean the cache's disk (or quota) is full
_FULL = (errno.ENOSPC, errno.EDQUOT)
_MEMFD_PREFIX = "cvmfs-"
#: held while the budget is checked and a memfd made against it: the budget is the process's (the
#: mount daemon's stores, one per repository, share it), so is the lock
_MEMFD_LOCK = threading.Lock()


class _NotInMemory(OSError):
    """An object a full cache disk left unkept that cannot be served from memory either (too large,
    or the memory budget spent): the read's error, not a reason to try memory once more."""


def _memfds_alive() -> int:
    """The bytes of this process's pass-through memfds still open (by any descriptor): read from
    /proc, so a descriptor closed anywhere (the FUSE release, a prefetcher, an error path) gives
    its bytes back without a hook at each close. Only the full-disk path calls it."""
    sizes: dict[int, int] = {}  # by inode: a memfd open twice (a dup) is counted once
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: nothing counted is nothing bounded, so the budget is taken as spent
        return PASS_THROUGH_BUDGET
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("/memfd:" + _MEMFD_PREFIX):
                st = os.stat(f"/proc/self/fd/{fd}")
                sizes[st.st_ino] = st.st_size
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            continue
    return sum(sizes.values())


class ObjectStore:
    def __init__(self, fetcher: Fetcher, cache: ObjectCache | None, *, repo: str):
        self.fetcher = fetcher
        self.cache = cache
        self.repo = repo
        self._scratch: Path | None = None
        #: removes a scratch folder this store made itself (close, collection or the exit of this process)
        self._cleanup: Callable[[], object] | None = None
        self._lru: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lru_bytes = 0
        self._spilled: dict[str, Path] = {}
        self._lock = threading.RLock()
        self._key_locks: dict[str, threading.Lock] = {}
        #: how many ``_once`` makes have ended (only ever grows): read before a look that may miss,
        #: it tells ``whole`` whether something was made since
        self.made = 0
        #: the mount daemon's cache of inflated file contents (``plaincache.py``); None elsewhere
        self.plain_cache: PlainCache | None = None
        #: the caches' size limit where the mount daemon has one (the boot list watches its evictions)
        self.quota: Quota | None = None
        #: inflated contents made by ``fetch_ahead`` and not yet read, oldest first, and their size
        self._ahead: dict[str, bytes] = {}
        self._ahead_bytes = 0
        self._ahead_lock = threading.Lock()
        self.stats = {"fetched": 0, "fetched_bytes": 0, "cache_hits": 0}
        #: a full cache disk was said (once: a read of a whole tree would say it for every object)
        self._said_full = False
        #: the plain cache's disk was found full: the prefetcher makes nothing ahead (each object
        #: would be made in memory and dropped at once, then fetched again by its reader) until it
        #: has room again (``diskfull.py``)
        self.disk = FullDisk()
        #: the memory budget of objects served without the cache was said spent (once)
        self._said_budget = False
        #: the time each phase of making objects took, when asked for (``mount --stats``)
        self.phases: Phases | None = None

    @property
    def plain_full(self) -> bool:
        return self.disk.full

    def _found_full(self, e: OSError) -> None:
        self.disk.found(self.quota.evicted.files if self.quota is not None else 0)
        self._full(e)

    def _ahead_skipped(self, count: int, need: int) -> bool:
        """Whether the prefetcher skips ``count`` objects (the smallest ``need`` bytes), the plain
        cache's disk known full: while it still has no room for them (``FullDisk.skip``)."""
        plain = self.plain_cache
        assert plain is not None
        evicted = self.quota.evicted.files if self.quota is not None else 0
        return self.disk.skip(str(plain.dir), count, need + TRAILER, evicted)

    # -- scratch -----------------------------------------------------------------------------------
    def scratch(self) -> Path:
        with self._lock:
            if self._scratch is None:
                if self.cache:
                    self._scratch = self.cache.scratch()
                else:
                    import tempfile  # deliberate lazy import (see fsutil._temp_file)

                    self._scratch = Path(tempfile.mkdtemp(prefix="cvmfs-reader-"))
                    # a caller that never closes (a script, a library user) leaves no folder behind
                    # either: removed when the store is collected or the interpreter exits, by the
                    # process that made it (a forked child that exits must not take it from its parent)
                    self._cleanup = weakref.finalize(self, remove_own_tree, self._scratch, os.getpid())
            return self._scratch

    def close(self) -> None:
        with self._lock:
            if self._cleanup is not None:  # the one removal of a scratch of our own (runs once)
                self._cleanup()
                self._cleanup = None
            elif self._scratch is not None:
                import shutil  # deliberate lazy import (see fsutil._temp_file)

                shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
            self._lru.clear()
            self._lru_bytes = 0
            self._spilled.clear()

    def _mismatch(self, h: ObjectHash, suffix: str, actual: str, what: str) -> IntegrityError:
        return IntegrityError(
            f"{self.repo}: {what} {h}{suffix}: content hash mismatch (got {actual})",
            hint="the server or a proxy delivered damaged or tampered data; nothing was cached",
        )

    # -- compressed (stored) bytes ----------------------------------------------------------------
    @contextlib.contextmanager
    def _stored(
        self, h: ObjectHash, suffix: str, what: str, limit: int | None = None, *, cached: bool = True
    ) -> Iterator[Iterator[bytes]]:
        """The verified stored bytes of an object, as a stream of blocks (from cache or network).

        ``limit``: the most stored bytes it may have (TooLarge beyond, while it streams). With
        ``cached=False`` a fetched object does not go into the cache (a certificate before the
        signature chain it is part of holds); one already there was put there after that check.
        """
        cache = self.cache
        path: Path | None = None
        if cache is not None and not cached and cache.missing(h, suffix):
            cache = None  # known absent and not to be kept: no lookup (a cold read's every object)
        if cache is not None:
            try:
                small = cache.read_small(h, suffix, SMALL)
            except FileNotFoundError:
                small, path = None, None
            else:
                if small is not None and (limit is None or len(small) <= limit):
                    self.stats["cache_hits"] += 1
                    yield iter((small,))
                    return
                path = cache.lookup(h, suffix)
            if path is not None and limit is not None and path.stat().st_size > limit:
                cache.discard(h, suffix)
                path = None
            if path is None and not cached:
                cache = None
        if cache is not None:
            if path is None:
                try:
                    path = self.fetcher.fetch(
                        h.path(suffix),
                        lambda b: cache.store(h, suffix, b, what=what),
                        what=f"{what} {h}{suffix}",
                        limit=limit,
                    )
                except OSError as e:
                    if e.errno not in _FULL:
                        raise
                    # a full cache disk (or quota): the object is served as without a cache (the
                    # store removed its partial copy), and the next read tries the cache again. A
                    # mount on a full cache disk answered every uncached read with ENOSPC (pr28a)
                    self._full(e)
                else:
                    self.stats["fetched"] += 1
                    self.stats["fetched_bytes"] += path.stat().st_size
            else:
                self.stats["cache_hits"] += 1
            if path is not None:
                with open(path, "rb") as f:
                    yield iter(lambda: f.read(BLOCK), b"")
                return

        parts, spill = self._fetched(h, suffix, what, limit)
        try:
            yield _blocks(parts, spill)
        finally:
            if spill is not None:
                spill.close()

    def _fetched(
        self, h: ObjectHash, suffix: str, what: str, limit: int | None
    ) -> tuple[list[bytes], BinaryIO | None]:
        """The object's stored bytes from the server (no cache), hash-checked: in memory, or above
        ``SPILL`` in a scratch file (the caller closes it: it is deleted then)."""

        def collect(blocks: Iterator[bytes]) -> tuple[list[bytes], BinaryIO | None, int]:
            # Called afresh on every attempt of the fetcher: a spill file of a failed one is closed
            # (and so deleted) on the way out.
            hasher = new_hasher(h.algorithm)
            parts: list[bytes] = []
            spill: BinaryIO | None = None
            got = 0
            try:
                for block in blocks:
                    hasher.update(block)
                    got += len(block)
                    if spill is None and got > SPILL:
                        import tempfile  # deliberate lazy import (see fsutil._temp_file)

                        spill = tempfile.TemporaryFile(dir=self.scratch())  # noqa: SIM115 - returned open
                        spill.writelines(parts)
                        parts = []
                    if spill is not None:
                        spill.write(block)
                    else:
                        parts.append(block)
                actual = hasher.hexdigest()
                if actual != h.hex:
                    raise self._mismatch(h, suffix, actual, what)
            except BaseException:
                if spill is not None:
                    spill.close()
                raise
            return parts, spill, got

        name = str(h)  # once: its path and its message text (each fetched object)
        parts, spill, got = self.fetcher.fetch(
            object_path(name, suffix), collect, what=f"{what} {name}{suffix}", limit=limit
        )
        self.stats["fetched"] += 1
        self.stats["fetched_bytes"] += got
        return parts, spill

    def raw(
        self, name: str | ObjectHash, suffix: str, *, what: str, limit: int | None = None, cached: bool = True
    ) -> bytes:
        """Verified stored bytes (still compressed), at most ``limit`` of them."""
        h = parse_hash(name) if isinstance(name, str) else name
        with self._stored(h, suffix, what, limit, cached=cached) as blocks:
            return b"".join(blocks)

    def cached_path(self, name: str, suffix: str, *, what: str, limit: int | None = None) -> Path:
        """The verified stored object's file in the object cache, fetched into it on a miss (a seed
        fills a cache ahead of its reader: ``bootloader/seed.py``). Needs a cache."""
        assert self.cache is not None
        h = parse_hash(name)
        with self._stored(h, suffix, what, limit):
            pass
        return self.cache.path(h, suffix)

    def keep(self, name: str, suffix: str, stored: bytes, *, what: str) -> None:
        """Put verified stored bytes into the cache (if there is one), e.g. the certificate once
        the signature chain holds, so that an offline start can check it again."""
        if self.cache is not None and self.cache.lookup(parse_hash(name), suffix) is None:
            h = parse_hash(name)
            self.cache.store(h, suffix, iter((stored,)), what=what)

    def _drop(self, h: ObjectHash, suffix: str) -> None:
        if self.cache is not None:
            self.cache.discard(h, suffix)

    def _inflate_blocks(
        self,
        h: ObjectHash,
        suffix: str,
        blocks: Iterator[bytes],
        compressed: bool,
        what: str,
        size: int | None = None,
        cap: int | None = None,
        adler32: list[int] | None = None,
        into: bytearray | None = None,
    ) -> Iterator[bytes]:
        """The inflated blocks, each at most BLOCK bytes (or the whole object in one, declared size
        above ``inflate.WHOLE_MIN`` and at most WHOLE_MAX, inflated by libdeflate: ``inflate.py``);
        stops with IntegrityError as soon as the output passes ``size`` (declared) or, with no size
        declared, ``cap``.
        ``adler32`` (compressed objects only): a list the Adler-32 of all the blocks is put in once
        they are all out (``PlainCache.put``'s): the zlib stream's last four bytes, which zlib (or
        libdeflate) has checked against what it inflated by then (no second pass over the output).
        ``into``: an ``inflate.reusable`` buffer for the whole object's output (its block is then a
        view of it: the caller must be done with it before that buffer is used again)."""
        limit = size if size is not None else cap
        if not compressed:  # no stream to take a sum from: PlainCache.put sums what it writes
            yield from blocks
            return
        if size is not None and inflate.WHOLE_MIN < size <= WHOLE_MAX:
            # in one call with libdeflate: a fraction of zlib's instructions (inflate.py); the
            # stored bytes are then whole in memory (also a spilled object's: at most zlib_bound),
            # joined only with a slot (at most AT_ONCE at once, none without libdeflate): without
            # one the blocks stream as they are
            whole = data = None
            with inflate.slot() as whole_now:
                if whole_now:
                    data = b"".join(blocks)
                    try:
                        whole = inflate.inflate_exact(data, size, into)
                    except (inflate.Overflow, inflate.Damaged):
                        # rare: zlib below says exactly what is wrong (libdeflate calls a cut trailer
                        # an overflow) and stops at the declared size, so every host gives the same
                        # message
                        whole = None
            if whole is not None and data is not None:
                trailer = data[-4:]
                del data  # only the output is held while the caller takes it
                if whole:  # the bytearray itself: every consumer takes a bytes-like (writev, join)
                    yield whole  # type: ignore[misc]
                if adler32 is not None:  # checked by libdeflate against what it inflated
                    adler32.append(int.from_bytes(trailer, "big"))
                return
            if data is not None:
                # zlib in 1 MiB slices: fed one 16 MiB block, it would copy the rest of its input
                # (``unconsumed_tail``) after every 1 MiB of output, ~4x the CPU
                view = memoryview(data)
                blocks = (view[i : i + BLOCK] for i in range(0, len(data), BLOCK))  # type: ignore[misc]
        d = zlib.decompressobj()
        got = 0
        last4 = b""  # the last four bytes of the stream so far (its Adler-32 once it has ended)
        try:
            for block in blocks:
                last4 = bytes(block[-4:]) if len(block) >= 4 else (last4 + bytes(block))[-4:]
                data = block
                while data:
                    out = d.decompress(data, BLOCK)
                    data = d.unconsumed_tail
                    if out:
                        got += len(out)
                        if limit is not None and got > limit:
                            raise self._overflow(h, suffix, what, size, cap)
                        yield out
                    if d.eof:
                        break
            # Once all input is in, what zlib still holds is bounded (a pending match, a few bits).
            tail = d.flush()
            if tail:
                got += len(tail)
                if limit is not None and got > limit:
                    raise self._overflow(h, suffix, what, size, cap)
                yield tail
        except zlib.error as e:
            self._drop(h, suffix)
            raise IntegrityError(f"{self.repo}: {what} {h}{suffix}: cannot be inflated ({e})") from e
        if not d.eof or d.unused_data:
            self._drop(h, suffix)
            raise IntegrityError(f"{self.repo}: {what} {h}{suffix}: truncated or over-long zlib stream")
        if adler32 is not None:  # the stream ended exactly with its checked trailer
            adler32.append(int.from_bytes(last4, "big"))

    def _overflow(
        self, h: ObjectHash, suffix: str, what: str, size: int | None, cap: int | None
    ) -> IntegrityError:
        self._drop(h, suffix)
        if size is not None:
            return IntegrityError(
                f"{self.repo}: {what} {h}{suffix}: inflates to more than the {size} bytes declared for it",
                hint="the object does not match its catalog entry (a zlib bomb?); inflating stopped there",
            )
        return IntegrityError(
            f"{self.repo}: {what} {h}{suffix}: inflates to more than {human(cap or 0)}, the most it can be",
            hint="a damaged or hostile repository (a zlib bomb?); inflating stopped there",
        )

    def _size_error(self, h: ObjectHash, suffix: str, got: int, expected: int, what: str) -> IntegrityError:
        self._drop(h, suffix)
        return IntegrityError(
            f"{self.repo}: {what} {h}{suffix}: inflated size {got} differs from the catalog's {expected}",
            hint="the catalog and the object disagree; the repository is damaged",
        )

    # -- inflated bytes ---------------------------------------------------------------------------
    def plain(
        self,
        name: str,
        suffix: str,
        *,
        size: int | None,
        compressed: bool = True,
        what: str,
        cap: int | None = None,
    ) -> bytes:
        """The whole inflated object, size-checked (``size`` None: at most ``cap``). Kept in the LRU."""

        def make() -> bytes:
            h = parse_hash(name)
            with self._stored(h, suffix, what, stored_limit(size, compressed, cap)) as blocks:
                data = b"".join(self._inflate_blocks(h, suffix, blocks, compressed, what, size, cap))
            if size is not None and len(data) != size:
                raise self._size_error(h, suffix, len(data), size, what)
            return data

        return self._once(name + suffix, self._lru_get, make, self._lru_put)

    def _lru_get(self, key: str) -> bytes | None:
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None:
                self._lru.move_to_end(key)
            return hit

    def _lru_put(self, key: str, data: bytes) -> None:
        if len(data) <= LRU_MAX_ITEM:
            with self._lock:
                old = self._lru.pop(key, None)
                if old is not None:
                    self._lru_bytes -= len(old) + LRU_ENTRY_COST
                self._lru[key] = data
                self._lru_bytes += len(data) + LRU_ENTRY_COST
                while self._lru_bytes > LRU_BYTES and len(self._lru) > 1:
                    _, old = self._lru.popitem(last=False)
                    self._lru_bytes -= len(old) + LRU_ENTRY_COST

    def _once(
        self,
        key: str,
        get: Callable[[str], _T | None],
        make: Callable[[], _T],
        put: Callable[[str, _T], None] | None = None,
        *,
        since: int | None = None,
    ) -> _T:
        """``get(key)``, else ``make()`` (and ``put`` it): the one caching rule of the store, for the
        in-memory LRU, the scratch files and the plain cache. Threads asking for the same key at once
        make it once (libfuse reads one object in many pieces from several threads; a reader and
        the prefetcher ask for the same file): who waited for the other looks again. ``get`` and
        ``put`` take what locks they need (the plain cache's ``get`` is a file open: it must not
        hold the store's lock). ``since``: the caller's own first look found nothing after it read
        ``made`` (that count): not looked again here unless something was made since."""
        if since is None:
            made = self.made
            hit = get(key)
            if hit is not None:
                return hit
        else:
            made = since
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        try:
            with key_lock:
                # Looked again only if something was made since the first look (perhaps this, by
                # the thread this one waited for): on a cold read the second look was a failed
                # open per object.
                if self.made != made:
                    hit = get(key)
                    if hit is not None:
                        return hit
                value = make()
                if put is not None:
                    put(key, value)
                with self._lock:  # before the key's lock is let go: its waiter must see it
                    self.made += 1
                return value
        finally:
            with self._lock:
                self._key_locks.pop(key, None)

    def plain_file(
        self,
        name: str,
        suffix: str,
        *,
        size: int | None,
        compressed: bool = True,
        what: str,
        cap: int | None = None,
    ) -> Path:
        """The inflated object as a scratch file (catalogs for SQLite, very large file objects);
        ``size`` None: at most ``cap`` bytes."""
        return self._once(
            name + suffix,
            self._spilled.get,
            lambda: self._make_scratch(name, suffix, size, compressed, what, cap),
            self._spilled.__setitem__,
        )

    def _make_scratch(
        self, name: str, suffix: str, size: int | None, compressed: bool, what: str, cap: int | None
    ) -> Path:
        h = parse_hash(name)
        dest = self.scratch() / (name + suffix)
        import tempfile  # deliberate lazy import (see fsutil._temp_file)

        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=dest.parent)
        try:
            got = 0
            limit = stored_limit(size, compressed, cap)
            with os.fdopen(fd, "wb") as f, self._stored(h, suffix, what, limit) as blocks:
                for out in self._inflate_blocks(h, suffix, blocks, compressed, what, size, cap):
                    got += len(out)
                    f.write(out)
            if size is not None and got != size:
                raise self._size_error(h, suffix, got, size, what)
            os.replace(tmp, dest)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            # a full scratch disk ($TMPDIR): the write's ENOSPC named no file, so the line said only
            # "No space left on device" (a container build with TMPDIR on a small disk)
            reraise_naming(e, dest)
        return dest

    def database_file(self, name: str, suffix: str, *, size: int | None, what: str, cap: int) -> Path:
        """A database object (a catalog, the history) inflated into a file for SQLite; ``size``
        None: at most ``cap`` bytes. With a plain cache the file is its inflated copy, kept across
        restarts (checked by its checksum on first use, as file contents are: no hash and no inflating
        of the object again); else a scratch file of this process (``plain_file``)."""
        plain = self.plain_cache
        if plain is None:
            return self.plain_file(name, suffix, size=size, what=what, cap=cap)

        def get(key: str) -> Path | None:
            known = self._spilled.get(key)
            if known is not None:
                return known
            found = plain.database(name, suffix, size)
            if found is None:
                return None
            self.stats["cache_hits"] += 1
            return Path(found)

        def make() -> Path:
            h = parse_hash(name)
            with self._stored(h, suffix, what, stored_limit(size, True, cap)) as blocks:
                adler: list[int] = []
                inflated = self._inflate_blocks(h, suffix, blocks, True, what, size, cap, adler)
                try:
                    fd = plain.put(name, suffix, inflated, size, durable=True, adler32=adler)
                except SizeMismatch as e:
                    raise self._size_error(h, suffix, e.got, size or 0, what) from None
            try:
                header = os.pread(fd, 100, 0)
                length = os.fstat(fd).st_size - TRAILER
            finally:
                os.close(fd)
            if not sqlite_states_its_size(header, length):
                # SQLite would take the trailer for part of the database: a scratch file instead
                plain.discard(name, suffix)
                return self._make_scratch(name, suffix, size, True, what, cap)
            return Path(plain.where(name, suffix))

        return self._once(name + suffix, get, make, self._spilled.__setitem__)

    def inflated_fd(self, name: str, suffix: str, *, size: int, compressed: bool, what: str) -> int:
        """A descriptor (the caller closes it) on the inflated object of ``size`` bytes in the plain
        cache, made there on a miss: hash-checked before it is inflated, size-checked, then kept.
        The compressed object is not kept beside it (read from the object cache if it is there)."""
        plain = self.plain_cache
        assert plain is not None

        def get(_key: str) -> int | None:
            fd = plain.open(name, suffix, size)
            if fd is not None:
                self.stats["cache_hits"] += 1
            return fd

        return self._once(name + suffix, get, lambda: self._make_plain(name, suffix, size, compressed, what))

    def _full(self, e: OSError) -> None:
        if not self._said_full:
            self._said_full = True
            log.warning("%s: the cache is full (%s): objects are served without it", self.repo, e)

    def _make_plain(
        self, name: str, suffix: str, size: int, compressed: bool, what: str, keep: list[bytes] | None = None
    ) -> int:
        """Fetch, check and inflate the object into the plain cache; a descriptor on it. ``keep``:
        a list the inflated blocks are also put in (the caller bounds ``size``). On a full cache disk
        (or quota) an object up to ``PASS_THROUGH_MAX`` is served from memory instead
        (``_in_memory``): a mount on a full cache disk answered every read of an uncached file with
        ENOSPC (pr28a finding 10)."""
        try:
            return self._make_plain_kept(name, suffix, size, compressed, what, keep)
        except OSError as e:
            if e.errno not in _FULL or isinstance(e, _NotInMemory):
                raise
            # full before the object was in hand (a spill onto a full scratch disk, one read from
            # the object cache): fetched or read again
            h = parse_hash(name)
            with self._stored(h, suffix, what, stored_limit(size, compressed, None), cached=False) as blocks:
                return self._in_memory(e, h, name, suffix, blocks, size, compressed, what, keep)

    def _in_memory(
        self,
        e: OSError,
        h: ObjectHash,
        name: str,
        suffix: str,
        blocks: Iterator[bytes],
        size: int,
        compressed: bool,
        what: str,
        keep: list[bytes] | None,
    ) -> int:
        """The checked stored ``blocks`` inflated into a memfd, as the plain cache's disk (error
        ``e``) holds no copy: at most ``PASS_THROUGH_MAX`` bytes, and at most
        ``PASS_THROUGH_BUDGET`` of them alive at once (else ``_NotInMemory``, ENOSPC)."""
        self._found_full(e)
        if keep is not None:
            keep.clear()
        fd = self._memfd(name, suffix, size, e)
        try:
            got = 0
            for block in self._inflate_blocks(h, suffix, blocks, compressed, what, size):
                got += len(block)
                write_all(fd, block)
                if keep is not None:
                    keep.append(bytes(block))
            if got != size:
                raise self._size_error(h, suffix, got, size, what)
            os.lseek(fd, 0, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _memfd(self, name: str, suffix: str, size: int, e: OSError) -> int:
        """An empty memfd of ``size`` bytes' room, counted against the budget from its creation (it is
        sized at once: a sparse file, its pages come with the writes) so that two threads cannot
        both take the last room."""
        if size > PASS_THROUGH_MAX:
            raise _NotInMemory(e.errno, f"{e.strerror} (and {human(size)} is too large to serve from memory)")
        with _MEMFD_LOCK:
            alive = _memfds_alive()
            if alive + size > PASS_THROUGH_BUDGET:
                if not self._said_budget:
                    self._said_budget = True
                    log.warning(
                        "%s: the cache disk is full and the memory budget of objects served without it"
                        " (%s) is reached: reads of uncached files fail until some are closed",
                        self.repo,
                        human(PASS_THROUGH_BUDGET),
                    )
                raise _NotInMemory(
                    errno.ENOSPC,
                    f"the cache disk is full and {human(alive)} of objects are served from memory"
                    f" already (at most {human(PASS_THROUGH_BUDGET)})",
                )
            fd = os.memfd_create(f"{_MEMFD_PREFIX}{name}{suffix}", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, size)
            except BaseException:
                os.close(fd)
                raise
            return fd

    def _make_plain_kept(
        self, name: str, suffix: str, size: int, compressed: bool, what: str, keep: list[bytes] | None = None
    ) -> int:
        h = parse_hash(name)
        laps = _laps(self.phases)
        limit = stored_limit(size, compressed, None)
        cache = self.cache
        if cache is None or cache.missing(h, suffix):
            # A cold read's object (known absent from the object cache, and not to be kept there):
            # fetched and checked here, as ``_stored`` would, without its generator context
            # manager around it (issue 13: ~3 % of a demand-fetched object's instructions)
            parts, spill = self._fetched(h, suffix, what, limit)
            try:
                return self._into_plain(
                    h, name, suffix, _blocks(parts, spill), size, compressed, what, keep, laps
                )
            except OSError as e:
                if e.errno not in _FULL:
                    raise
                # fetched and checked already (a spill file is on the scratch disk, which held it):
                # served from memory without a second fetch
                return self._in_memory(
                    e, h, name, suffix, _blocks(parts, spill), size, compressed, what, keep
                )
            finally:
                if spill is not None:
                    spill.close()
        with self._stored(h, suffix, what, limit, cached=False) as blocks:
            return self._into_plain(h, name, suffix, blocks, size, compressed, what, keep, laps)

    def _into_plain(
        self,
        h: ObjectHash,
        name: str,
        suffix: str,
        blocks: Iterator[bytes],
        size: int,
        compressed: bool,
        what: str,
        keep: list[bytes] | None,
        laps: _Laps | _NoLaps,
    ) -> int:
        """``_make_plain``'s inflating and writing of the checked stored ``blocks``."""
        plain = self.plain_cache
        assert plain is not None
        with inflate.reusable() as into:
            laps.lap("fetch")
            adler: list[int] | None = [] if compressed else None  # the zlib stream's, else put's own
            # Inflated into a kept buffer (``inflate.reusable``): a copy only written is done with once
            # ``put`` returns, before ``reusable`` ends; one the caller keeps is copied out of it
            # once, as bytes (``_owned``). A fresh buffer per object was a zeroed allocation, then
            # copied all the same by the caller's join (issue 13: ~13k instructions an object).
            inflated = self._inflate_blocks(
                h, suffix, blocks, compressed, what, size, adler32=adler, into=into
            )
            if keep is not None:
                keep += map(_owned, inflated)  # all of it checked before any of it is written
                inflated = iter(keep)
                laps.lap("inflate")
            elif isinstance(laps, _Laps):
                inflated = _lapped(inflated, laps, "big-inflate")
            try:
                fd = plain.put(name, suffix, inflated, size, adler32=adler)
            except SizeMismatch as e:
                raise self._size_error(h, suffix, e.got, size, what) from None
            self.disk.wrote()  # (a reader's object kept: the prefetcher may make objects again)
            laps.lap("write" if keep is not None else "big-write")  # a failed put is no write
            return fd

    def fetch_ahead(self, name: str, suffix: str, *, size: int, compressed: bool, what: str) -> None:
        """Make the inflated object in the plain cache ahead of its reader (the prefetcher): nothing
        if it is there already; a small one's contents are also kept for the whole read that comes
        next (``read``), which then costs no open and read of the copy just written."""
        plain = self.plain_cache
        assert plain is not None
        key = name + suffix
        # (on a full disk it would be made in memory and dropped at once)
        if (self.disk.full and self._ahead_skipped(1, size)) or plain.has(name, suffix):
            return
        if size > AHEAD_ITEM:
            os.close(self.inflated_fd(name, suffix, size=size, compressed=compressed, what=what))
            return
        keep: list[bytes] = []
        made = self._once(
            key,
            lambda _key: plain.open(name, suffix, size),
            lambda: self._make_plain(name, suffix, size, compressed, what, keep),
        )
        os.close(made)
        if not keep:  # made by another thread meanwhile (its reader has it)
            return
        self._keep_ahead(key, b"".join(keep))  # one block: that block itself, not a copy

    def _keep_ahead(self, key: str, data: bytes) -> None:
        with self._ahead_lock:
            if key not in self._ahead:
                self._ahead[key] = data
                self._ahead_bytes += len(data)
                while self._ahead_bytes > AHEAD_BYTES:  # the oldest, never read, go first
                    self._ahead_bytes -= len(self._ahead.pop(next(iter(self._ahead))))

    def fetch_ahead_many(
        self,
        items: Sequence[tuple[str, str, int, bool, str]],
        *,
        keep: bool = True,
        whole: int = AHEAD_ITEM,
        retry: bool = True,
    ) -> tuple[int, int]:
        """``fetch_ahead`` of several objects, each (name, suffix, size, compressed, what): those of
        at most ``whole`` bytes not in any cache in one pipelined fetch (``_claimed_many``: a
        directory's next small files cost one wake-up of the fetching thread and one round trip, not
        one each; each is held in memory whole; one a reader is waiting for is not fetched twice),
        the others one by one. Each object is still hash-checked before it is inflated, then
        size-checked and written with its checksum, and one that fails fails alone (logged: its
        reader meets the error itself). ``keep`` False: the contents are not kept in memory for a
        read that follows (a boot list's objects are read later, if at all, and would push out the
        prefetcher's). ``retry`` False: what the pipeline does not deliver fails at once
        (``Fetcher.fetch_many``: its claim given back), not fetched again one by one. Returns how
        many were made (or found made) and how many failed."""
        plain = self.plain_cache
        assert plain is not None
        if items and self.disk.full and self._ahead_skipped(len(items), min(item[2] for item in items)):
            return 0, len(items)  # nothing is made ahead on a full cache disk (``diskfull.py``)
        cache = self.cache
        made = failed = 0
        alone: list[tuple[str, str, int, bool, str]] = []
        batch: list[tuple[str, Item[list[bytes]]]] = []
        meta: list[tuple[ObjectHash, str, str, int, bool, str]] = []  # batch[i]'s, hash parsed once
        for name, suffix, size, compressed, what in items:
            if plain.has(name, suffix):
                continue
            h = parse_hash(name)
            if size > whole or (cache is not None and not cache.missing(h, suffix)):
                alone.append((name, suffix, size, compressed, what))
                continue
            limit = stored_limit(size, compressed, None)
            batch.append(
                (
                    name + suffix,
                    (h.path(suffix), self._checked(h, suffix, what), f"{what} {name}{suffix}", limit),
                )
            )
            meta.append((h, name, suffix, size, compressed, what))
        laps = _laps(self.phases)
        with (
            contextlib.closing(self._claimed_many(batch, retry=retry)) as results,
            inflate.reusable() as into,  # one output buffer for the objects in turn (see _make_plain)
        ):
            for i, got in results:
                h, name, suffix, size, compressed, what = meta[i]
                try:
                    if isinstance(got, CvmfsError):
                        raise got
                    laps.lap("ahead-fetch")
                    self.stats["fetched"] += 1
                    self.stats["fetched_bytes"] += sum(map(len, got))
                    adler: list[int] | None = [] if compressed else None  # as in _make_plain
                    contents = list(
                        self._inflate_blocks(
                            h, suffix, iter(got), compressed, what, size, adler32=adler, into=into
                        )
                    )
                    laps.lap("ahead-inflate")
                    try:
                        os.close(plain.put(name, suffix, contents, size, adler32=adler))
                    except SizeMismatch as e:
                        raise self._size_error(h, suffix, e.got, size, what) from None
                    laps.lap("ahead-write")
                    if keep:  # one copy, out of the buffer the next object is inflated into
                        self._keep_ahead(name + suffix, b"".join(contents))
                    contents = []  # no view of ``into`` held while the next one is inflated
                    made += 1
                except CvmfsError as e:
                    failed += 1
                    log.debug("fetch ahead of %s failed: %s", what, e)
                except OSError as e:
                    # a full cache disk: nothing made ahead (the read makes it, in memory), and no
                    # traceback of the prefetcher's thread in the daemon's log
                    if e.errno not in _FULL:
                        raise
                    self._found_full(e)
                    failed += 1
                finally:
                    laps.restart()  # the next item's wait starts here, whatever this one did
        for name, suffix, size, compressed, what in alone:
            if self.disk.full:  # found full meanwhile: the rest are not made either
                failed += 1
                continue
            try:
                if keep:
                    self.fetch_ahead(name, suffix, size=size, compressed=compressed, what=what)
                else:
                    os.close(self.inflated_fd(name, suffix, size=size, compressed=compressed, what=what))
                made += 1
            except CvmfsError as e:
                failed += 1
                log.debug("fetch ahead of %s failed: %s", what, e)
            except OSError as e:
                # as the batch's: one past PASS_THROUGH_MAX on a full cache disk was an OSError out
                # of the prefetcher's thread (a traceback in the daemon's log, the rest not made)
                if e.errno not in _FULL:
                    raise
                self._full(e)
                failed += 1
        return made, failed

    def fetch_stored_many(self, items: Sequence[tuple[ObjectHash, str]], *, limit: int) -> tuple[int, int]:
        """Objects known by name only (a boot list: ``bootlist.py``) into the object cache, as
        stored: no size is known, so no inflated copy; the reader that comes inflates from the cache
        without a fetch. Those in either cache already are left out; the rest go in one pipelined
        fetch (``_claimed_many``: one a reader is waiting for is not fetched twice), each streamed
        through ``ObjectCache.store`` (hash-checked, nothing kept on a mismatch, counted by the
        quota) and at most ``limit`` stored bytes. Returns (fetched, failed); one that fails
        (absent, damaged, too large, not delivered by the pipeline: never fetched again here) fails
        alone, logged; the cache's OSError (its disk full) is raised."""
        cache, plain = self.cache, self.plain_cache
        assert cache is not None

        def into_cache(h: ObjectHash, suffix: str) -> Callable[[Iterator[bytes]], Path]:
            return lambda blocks: cache.store(h, suffix, blocks, what="listed object")

        batch = [
            (f"{h}{suffix}", (h.path(suffix), into_cache(h, suffix), f"listed object {h}{suffix}", limit))
            for h, suffix in items
            if not ((plain is not None and plain.has(str(h), suffix)) or not cache.missing(h, suffix))
        ]
        fetched = failed = 0
        # a reader waiting for one of them must not wait for the others' retries: no retry
        with contextlib.closing(self._claimed_many(batch, retry=False)) as results:
            for _, got in results:
                if isinstance(got, CvmfsError):
                    failed += 1
                    log.info("boot list: %s", got)
                else:
                    fetched += 1
                    self.stats["fetched"] += 1
                    self.stats["fetched_bytes"] += got.stat().st_size
        return fetched, failed

    def _claimed_many(
        self, items: Sequence[tuple[str, Item[_T]]], *, retry: bool
    ) -> Generator[tuple[int, _T | CvmfsError], None, None]:
        """One pipelined fetch (``Fetcher.fetch_many``) of the items, each (key, fetch item), whose
        key this thread claims first: the key its reader's ``_once`` takes, so a reader that comes
        for one while it is in flight waits for it instead of fetching it a second time; one being
        made by another thread (a reader, the prefetcher) is left out. Yields (index in ``items``,
        what the item's consumer returned or its error) in order; each claim is given back when the
        caller asks for the next result (it has handled this one: written it, or failed), all
        still held when the caller stops early or raises (close the generator:
        ``contextlib.closing``). The one claim rule of both pipelined fetches."""
        claimed: list[tuple[int, str, threading.Lock]] = []
        try:
            for i, (key, _) in enumerate(items):
                lock = threading.Lock()
                lock.acquire()
                with self._lock:
                    if self._key_locks.setdefault(key, lock) is not lock:
                        continue  # being made by another thread
                claimed.append((i, key, lock))
            for j, got in self.fetcher.fetch_many([items[i][1] for i, _, _ in claimed], retry=retry):
                i, key, lock = claimed[j]
                try:
                    yield i, got
                finally:
                    claimed[j] = (i, key, _DONE)
                    self._unclaim(key, lock)
        finally:
            for _, key, lock in claimed:
                if lock is not _DONE:
                    self._unclaim(key, lock)

    def _unclaim(self, key: str, lock: threading.Lock) -> None:
        """Give a claim back. ``made`` moves first, under the store's lock, so the reader that
        waited for the key looks again (and finds what was made, or makes it)."""
        with self._lock:
            self.made += 1
            if self._key_locks.get(key) is lock:
                del self._key_locks[key]
        lock.release()

    def _checked(self, h: ObjectHash, suffix: str, what: str) -> Callable[[Iterator[bytes]], list[bytes]]:
        """A consumer of an object's stored blocks: them all, once they match the object's hash."""

        def collect(blocks: Iterator[bytes]) -> list[bytes]:
            hasher = new_hasher(h.algorithm)
            parts = []
            for block in blocks:
                hasher.update(block)
                parts.append(block)
            actual = hasher.hexdigest()
            if actual != h.hex:
                raise self._mismatch(h, suffix, actual, what)
            return parts

        return collect

    def handed_over(self, key: str, n: int) -> bytes | None:
        """The first ``n`` bytes of contents fetched ahead and not read yet, if held (left held)."""
        with self._ahead_lock:
            data = self._ahead.get(key)
            return None if data is None else data[:n]

    def _take_ahead(self, key: str) -> bytes | None:
        """Contents fetched ahead for ``key``, taken; the caller checked that some are held (on a
        warm cache none ever are: no call and no lock)."""
        with self._ahead_lock:
            data = self._ahead.pop(key, None)
            if data is not None:
                self._ahead_bytes -= len(data)
        return data

    def cached_whole(self, name: str, suffix: str, size: int) -> bytes | None:
        """The whole inflated object of ``size`` bytes if it is at hand (handed over from its fetch
        ahead, else read and checked from the plain cache, trailer still on: its first ``size``
        bytes), else None: ``whole``'s first look without its closures and ``_once``, for a warm
        read of a small file (issue 14: on every one)."""
        plain = self.plain_cache
        if plain is None:
            return None
        data = self._take_ahead(name + suffix) if self._ahead else None  # (warm: none, no call)
        if data is not None and len(data) != size:
            data = None  # fetched ahead for an entry of another size: the checked path says which
        if data is None:
            data = plain.read_whole_raw(name, suffix, size)
        if data is not None:
            self.stats["cache_hits"] += 1
        return data

    def whole(
        self, name: str, suffix: str, size: int, compressed: bool, what: str, *, since: int | None = None
    ) -> bytes:
        """The whole inflated object from the plain cache: handed over from its fetch ahead, else one
        read of the copy that also checks it, else made (by this thread, or by the fetch ahead it
        waits for); a small one made here is returned from memory, not read back from its copy.
        ``since``: the caller read ``made`` (that count), then looked (``cached_whole``) and found
        nothing: that look is not repeated (``_once``; a cold FUSE read of a small file looked
        twice, issue 13)."""
        key = name + suffix

        def get(_key: str) -> bytes | None:
            data = self.cached_whole(name, suffix, size)
            return None if data is None else data[:size]  # the copy's trailer off

        def make() -> bytes:
            if size > AHEAD_ITEM:
                fd = self._make_plain(name, suffix, size, compressed, what)
                try:
                    return os.pread(fd, size, 0)
                finally:
                    os.close(fd)
            keep: list[bytes] = []
            os.close(self._make_plain(name, suffix, size, compressed, what, keep))
            return b"".join(keep)

        return self._once(key, get, make, since=since)

    def read(
        self, name: str, suffix: str, *, size: int, offset: int, length: int, compressed: bool, what: str
    ) -> bytes:
        """``length`` bytes at ``offset`` of the inflated object of ``size`` bytes."""
        plain = self.plain_cache
        if plain is not None:
            if offset == 0 and length >= size:
                return self.whole(name, suffix, size, compressed, what)
            fd = self.inflated_fd(name, suffix, size=size, compressed=compressed, what=what)
            try:
                return os.pread(fd, min(length, size - offset), offset)
            finally:
                os.close(fd)
        if size > LRU_MAX_ITEM:
            path = self.plain_file(name, suffix, size=size, compressed=compressed, what=what)
            with open(path, "rb") as f:
                return os.pread(f.fileno(), length, offset)
        data = self.plain(name, suffix, size=size, compressed=compressed, what=what)
        return data[offset : offset + length]

    def check(
        self,
        name: str,
        suffix: str,
        *,
        size: int | None,
        compressed: bool = True,
        what: str,
        cap: int | None = None,
        sink: Callable[[bytes], object] | None = None,
    ) -> int:
        """Fetch, hash-check, inflate and size-check an object without keeping it; returns its size.
        ``sink`` is given each inflated block in order (verify's digest of a file's bytes)."""
        h = parse_hash(name)
        got = 0
        with self._stored(h, suffix, what, stored_limit(size, compressed, cap)) as blocks:
            for out in self._inflate_blocks(h, suffix, blocks, compressed, what, size, cap):
                got += len(out)
                if sink is not None:
                    sink(out)
        if size is not None and got != size:
            raise self._size_error(h, suffix, got, size, what)
        return got
