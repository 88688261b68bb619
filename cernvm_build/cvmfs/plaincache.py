"""The mount daemon's second cache: file contents already verified and inflated, read by pread.

The object cache (``cache.py``) keeps objects as the server sent them, because that layout is a
Stratum (``cvmfs replicate`` and local sources use it); reading from it means hashing and inflating
again in every process. The FUSE daemon reads file contents from here instead, as the real
``cvmfs2`` does from its cache: ``<cache>/<fqrn>/plain/XX/rest<suffix>`` holds the inflated bytes of
the object of that name, so a read is a ``pread`` (by libfuse) on a descriptor the open
file handle keeps, with no Python per byte.

- Made once, from a verified stream only: the store hashes the compressed object before it inflates
  it (``store.ObjectStore.inflated_fd``), inflating is bounded by the declared size, and the result
  is written to a temporary sibling that is renamed into place only when it is complete and of the
  declared size. A crash mid-write leaves a ``.*.tmp`` file, never looked up (``sweep`` removes it).
- Each file ends with an 8-byte trailer: a checksum of the content and a magic saying which one
  (``CVP2``: Adler-32, what new files get; ``CVP1``: CRC-32, what earlier versions wrote, still
  read). A file whose size is not the declared size plus the trailer is rejected at once (a
  truncated or torn file); on first use in each process the content is checked against the checksum
  (a disk error, a write torn by a power loss: objects are not fsynced). A bad file is deleted and
  made again from the object. The checksum is not a defence against someone who can write the cache
  directory: that directory is the daemon's own, as the real client's is.
- Adler-32 because a zlib stream ends with the Adler-32 of what it inflates to, which zlib checks
  while inflating: for a compressed object (nearly all) the store hands that value over
  (``put(adler32=...)``) and the content is not summed again. A CRC-32 was a second pass over every
  inflated byte (~32 MB/s under TCG: ~3 guest-s of an un-seeded first boot's ~100 MB, issue 13).
  Adler-32 is weak for a few hundred bytes or fewer (its sums do not spread over 32 bits), not for
  what it is here to catch: a block of zeros or stale data where content was.
- The size limit (``quota.py``) counts and evicts these files under the same rule as the objects; a
  descriptor kept open by a reader survives an eviction (the file is only unlinked).
- Catalogs and the history database are kept here too (``store.ObjectStore.database_file``), opened
  by SQLite by name (``database``), trailer and all: SQLite reads a database only up to the page
  count its header states, and only databases whose header states their size are kept. A restart
  then opens the mounted revision's catalogs without hashing and inflating them again (under TCG the
  root catalog's ~0.9 s of every boot); the check on first use stays. Being ``C`` files, the
  catalogs are pinned by the size limit as their objects are.
- A clean stop skips the next start's checksum checks (the classic clean-shutdown marker, bounded): the
  mount daemon, once unmounted, syncs the cache's file system and then writes ``plain/.clean`` with
  "SINCE BEGAN" (``mark_clean``): when this chain of clean stops began (the last start that found no
  valid marker, or a seed run's start) and when the sync began. μCernVM's shutdown program writes it
  too, in the same form, from the ``plain/.open`` ("SINCE", its first word) the daemon keeps while
  it owns the cache, where systemd made the disk read-only before the daemon could. The next daemon
  takes the marker away (renamed to ``plain/.open``) before it serves, durably before it writes a
  file (``take_clean``); a file whose inode last changed
  (``st_ctime``: the rename into place) in [SINCE, BEGAN - margin) was written in the chain and on
  the disk when the sync ended, so it is served without its check. A file from before the chain
  (a crash's torn write that no run has read since) or changed later (by another process between the
  two runs, or in this run) is checked as ever; without a valid marker (a crash, a power loss, an
  older cache, a time in the future) everything is. Under TCG a CRC-32 check was ~85-90 % of
  reading a cached file (``zlib.crc32`` at ~32 MB/s, note of h13g).

Standard library only: it runs in the μCernVM initrd.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..fsutil import (
    atomic_write,
    fsync_dir,
    process_umask,
    reclaim_stale_in,
    spread_subdirectories,
    syncfs,
    write_all,
)
from .objects import Holdings, refuse_symlinked_fan_out, refuse_symlinked_folder, sweep_temporaries

MAGIC = b"CVP2"  # the trailer's checksum is the content's Adler-32 (files written now)
MAGIC_CRC = b"CVP1"  # ... its CRC-32 (files of earlier versions; still read)
TRAILER = 8
BLOCK = 1 << 20
#: a temporary file older than this is a crash's leftover (a live write takes seconds at most)
STALE_TMP_S = 3600
#: the clean-stop marker, beside the fan-out directories (``mark_clean``): "SINCE BEGAN" in ns
CLEAN = ".clean"
#: while a daemon owns the cache: "SINCE" first (``take_clean``), the shutdown program's cue and bound
OPEN = ".open"
#: a file is trusted after a clean stop only if it changed this long before the sync began: the
#: kernel stamps ctime from a coarse clock that may lag ``time.time_ns`` by a tick
CLEAN_MARGIN_NS = 1_000_000_000


class SizeMismatch(Exception):
    """The bytes given to ``put`` were not the declared size (nothing was kept)."""

    def __init__(self, got: int):
        super().__init__(got)
        self.got = got


#: this process's id for temporary names (``os.getpid`` is a system call, and ``put`` runs per object)
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


#: a trailer from (checksum, magic)
_TRAILER = struct.Struct(">I4s").pack
#: how ``put`` opens its temporary: one descriptor to write and then to serve from, raw writes (no
#: buffered file per object) and the mode given at creation (a cold read makes thousands of these;
#: ``_create`` adds O_NOATIME: the reader served from this descriptor leaves the access time alone)
_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _summing(blocks: Iterable[bytes], into: list[int]) -> Iterator[bytes]:
    """``blocks``, their Adler-32 kept in ``into[0]`` as they go (which starts at 1)."""
    for block in blocks:
        into[0] = zlib.adler32(block, into[0])
        yield block


def _sum_for(trailer: bytes) -> Callable[[bytes | memoryview, int], int] | None:
    """The checksum a trailer's magic names (Adler-32 or an older file's CRC-32), None if neither."""
    magic = trailer[4:]
    if magic == MAGIC:
        return zlib.adler32
    if magic == MAGIC_CRC:
        return zlib.crc32
    return None


def _matches(content: memoryview, trailer: bytes) -> bool:
    """The content matches the checksum in its 8-byte trailer."""
    fn = _sum_for(trailer)
    start = 1 if fn is zlib.adler32 else 0
    return fn is not None and fn(content, start) == int.from_bytes(trailer[:4], "big")


class PlainCache:
    """One repository's inflated files: ``<root>/plain`` next to the object cache's ``<root>/data``."""

    def __init__(self, root: Path):
        self.dir = root / "plain"
        refuse_symlinked_folder(root)  # before the mkdir: plain/ is not made where it points
        self.dir.mkdir(parents=True, exist_ok=True)
        refuse_symlinked_folder(self.dir)
        self._base = str(self.dir)
        # Made up front, below a directory marked as the top of a hierarchy: their files' inodes
        # then spread over ext4's block groups, away from the parent's (in /tmp's group each new
        # file's allocation skipped every inode freed there lately: ~12 % of a cold read's CPU).
        spread_subdirectories(self.dir)
        # Only the missing ones: every start of the mount daemon comes here, and 256 refused mkdirs
        # (each a Python exception) took 0.07 s of the initrd's CPU under TCG (icount: 0.084 -> 0.014 s).
        there: set[str] = set()
        with os.scandir(self._base) as listing:
            for entry in listing:
                if len(entry.name) == 2:
                    refuse_symlinked_fan_out(self._base, entry)
                there.add(entry.name)
        for d in (f"{i:02x}" for i in range(256)):
            if d not in there:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(f"{self._base}/{d}")
        self._verified: set[str] = set()
        #: files whose ctime (ns) is in [low, high) were written since the cache was last all
        #: checked or fresh, and were on the disk at the last clean stop: they count as verified
        #: (``take_clean``); (0, 0): none
        self._trusted = (0, 0)
        #: since when (ns) this owner's chain of clean stops runs (``take_clean``), None: not owned
        self._since: int | None = None
        #: checksum checks done (what a clean stop saves; the tests count them)
        self.checks = 0
        #: whether ``take_clean`` found a valid marker (None: not taken, this process owns no chain)
        self.took_clean: bool | None = None
        #: ``take_clean``'s flush of the marker's removal, until a writer has waited for it (``_settle``)
        self._settled: threading.Thread | None = None
        self._settle_error: OSError | None = None
        #: made 0644 at creation unless the umask hides some of it (readers of the mount are others)
        self._chmod = bool(process_umask() & 0o644)
        #: Told of every file opened or made (the size limit's LRU, quota.py).
        self.on_use: Callable[[str], None] | None = None
        #: what the directory holds, where this process owns it (the mount daemon: ``hold``)
        self.held: Holdings | None = None

    def hold(self, *, sweep_before: float | None = None, background: bool = False) -> Holdings:
        """Keep in memory what the cache holds from now on (``objects.Holdings``): a miss then costs
        no failed open. Only for the process that owns the cache, the mount daemon (which sweeps
        its temporaries in the same listing: ``sweep_before``; ``background``: listed beside its
        start)."""
        self.held = Holdings(self.dir, sweep_before=sweep_before, background=background)
        return self.held

    def has(self, name: str, suffix: str) -> bool:
        """Whether the inflated object is (most likely) there: ``held`` if kept, else a ``stat``."""
        held = self.held
        if held is not None and (held.filled or name + suffix in held):
            return name + suffix in held
        return os.path.exists(self.where(name, suffix))

    def path(self, name: str, suffix: str) -> Path:
        return Path(self.where(name, suffix))

    def where(self, name: str, suffix: str) -> str:
        """``path`` as a string, built without pathlib (it is on every read's path)."""
        return f"{self._base}/{name[:2]}/{name[2:]}{suffix}"

    def open(self, name: str, suffix: str, size: int | None) -> int | None:
        """A read-only descriptor on the inflated object of ``size`` bytes (None: as long as the
        file less its trailer; the caller closes it); None if it is absent or bad (a bad one is
        removed)."""
        held = self.held
        if held is not None and held.filled and name + suffix not in held:
            return None
        key = p = self.where(name, suffix)
        try:
            fd = _open_to_read(p)
        except FileNotFoundError:  # gone behind our back: a miss (the caller makes it again)
            if held is not None:
                held.discard(name + suffix)
            return None
        try:
            st = os.fstat(fd)
            have = st.st_size
            if size is None:
                size = have - TRAILER
            good = (
                size >= 0
                and stat.S_ISREG(st.st_mode)  # a FIFO or device a seed ships is no object
                and have == size + TRAILER
                and (key in self._verified or self._trusts(st.st_ctime_ns) or self._check(fd, size))
            )
        except BaseException:
            os.close(fd)
            raise
        if not good:
            os.close(fd)
            self.discard(name, suffix)
            return None
        self._verified.add(key)
        if self.on_use is not None:
            self.on_use(p)
        return fd

    def database(self, name: str, suffix: str, size: int | None) -> str | None:
        """The path of the inflated database object (catalog, history) of ``size`` bytes (None:
        unknown), checked as ``open`` checks it, for SQLite to open by name; None if absent or bad
        (a bad one is removed)."""
        fd = self.open(name, suffix, size)
        if fd is None:
            return None
        os.close(fd)
        return self.where(name, suffix)

    def read_whole(self, name: str, suffix: str, size: int) -> bytes | None:
        """The whole inflated object of ``size`` bytes, checked as ``open`` checks it, in one read
        (content and trailer; the size from how much there was): None if absent or bad (a bad one
        is removed). For a read of a small file from start to end, the usual one: three system
        calls where a descriptor's ``fstat``, check and a read from it were six (issue 14, warm)."""
        data = self.read_whole_raw(name, suffix, size)
        return None if data is None else data[:size]

    def read_whole_raw(self, name: str, suffix: str, size: int) -> bytes | None:
        """``read_whole`` with its trailer still on: the first ``size`` bytes are the object (a
        caller that hands them on by length saves a copy of them, on every warm read)."""
        held = self.held
        if held is not None and held.filled and name + suffix not in held:
            return None
        p = self.where(name, suffix)
        try:
            fd = _open_to_read(p)
        except FileNotFoundError:
            if held is not None:
                held.discard(name + suffix)
            return None
        try:
            if p in self._verified:
                data = os.pread(fd, size + TRAILER + 1, 0)
            else:  # first read: a regular file (a FIFO cannot be pread), checked unless trusted
                st = os.fstat(fd)
                data = os.pread(fd, size + TRAILER + 1, 0) if stat.S_ISREG(st.st_mode) else b""
                if len(data) == size + TRAILER and not (self._trusted[1] and self._trusts(st.st_ctime_ns)):
                    self.checks += 1
                    if not _matches(memoryview(data)[:size], data[size:]):
                        data = b""
        finally:
            os.close(fd)
        if len(data) != size + TRAILER:
            self.discard(name, suffix)
            return None
        self._verified.add(p)
        if self.on_use is not None:
            self.on_use(p)
        return data

    def put(
        self,
        name: str,
        suffix: str,
        blocks: Iterable[bytes],
        size: int | None,
        *,
        durable: bool = False,
        adler32: list[int] | None = None,
    ) -> int:
        """Write ``blocks`` (the verified, inflated object) under its name and return a descriptor
        on it (the one it was written through, open before the size limit may evict the file
        again: a file larger than the limit is still served to this reader); SizeMismatch, and
        nothing kept, if they are not ``size`` bytes (None: not declared, the caller bounded them).
        ``durable``: fsynced before the rename (a catalog, read at every start: made again from its
        object only when its checksum fails, which a crash should not cause). ``adler32``: a list
        the producer of ``blocks`` puts the Adler-32 of all it yielded in once it has yielded them
        (an inflater hands over the zlib stream's own, checked by zlib): then it is not summed
        here."""
        if self._settled is not None:  # nothing renamed into place before the marker's removal is durable
            self._settle()
        d = f"{self._base}/{name[:2]}"
        dest = f"{d}/{name[2:]}{suffix}"
        # one writer per thread at a time: pid and thread make the name unique without mkstemp
        tmp = f"{d}/.{name[2:]}{suffix}.{_pid}-{threading.get_ident()}.tmp"
        try:
            fd = _create(tmp, _NEW)
        except FileExistsError:  # a crashed process's, of the same pid and thread number
            os.unlink(tmp)
            fd = _create(tmp, _NEW)
        try:
            adler = adler32
            if adler is None:  # (rare: an uncompressed object, no stream's sum handed over)
                adler = [1]  # Adler-32 starts at 1
                blocks = _summing(blocks, adler)
            got = 0
            last = b""  # written one block behind, so the last goes out with the trailer
            for block in blocks:
                if last:
                    write_all(fd, last)
                    got += len(last)
                last = block
            got += len(last)
            if size is not None and got != size:
                raise SizeMismatch(got)
            tail = _TRAILER(adler[0], MAGIC)  # the producer's, now that it has yielded everything
            # One write for a small file's content and its trailer (a syscall per object less on a
            # cold read, each a GIL hand-off among the daemon's threads).
            done = os.writev(fd, (last, tail))
            if done < len(last) + len(tail):
                write_all(fd, (bytes(last) + tail)[done:])
            if self._chmod:
                os.fchmod(fd, 0o644)
            if durable:
                os.fsync(fd)
            os.replace(tmp, dest)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._verified.add(dest)
        if self.held is not None:
            self.held.add(name + suffix)
        if self.on_use is not None:
            self.on_use(dest)
        return fd

    def discard(self, name: str, suffix: str) -> None:
        p = self.path(name, suffix)
        self._verified.discard(str(p))
        if self.held is not None:
            self.held.discard(name + suffix)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()

    def _check(self, fd: int, size: int) -> bool:
        self.checks += 1
        return _intact(fd, size)

    def _trusts(self, ctime_ns: int) -> bool:
        low, high = self._trusted
        return low <= ctime_ns < high

    def take_clean(self) -> bool:
        """For the process that owns the cache (the mount daemon), before it serves: if the last
        owner stopped cleanly (``mark_clean``), trust what that chain of clean stops wrote (no
        check on first use). The marker is replaced by ``OPEN``, durably before this process
        renames any file into place (``put`` waits for it), so that a crash of this run leaves
        none; without a valid one, the chain starts now, and a file from before (a crash's torn
        write, never checked) is checked on first use in every later run too. Whether it was there
        and valid."""
        now = time.time_ns()
        marker = f"{self._base}/{CLEAN}"
        text: bytes | None = None
        try:
            fd = _open_to_read(marker)  # never a FIFO waited on (it hung the daemon's start) or a link
        except FileNotFoundError:
            pass
        else:
            try:
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
                text = os.read(fd, 64) if regular else b""  # not a regular file: no marker, removed
            finally:
                os.close(fd)
        interval = _interval(text, now) if text is not None else None
        self._since = interval[0] if interval is not None else now
        if interval is not None:
            # One rename takes the marker away and leaves OPEN: its first word is SINCE, all the
            # shutdown program reads of it (BEGAN after it is left unread).
            os.replace(marker, f"{self._base}/{OPEN}")
        else:
            if text is not None:
                with contextlib.suppress(IsADirectoryError):  # a folder there is left, and no marker
                    os.unlink(marker)
            atomic_write(self.dir / OPEN, f"{self._since}\n".encode(), durable=False)
        # One flush of the directory makes the marker's removal durable (OPEN's content needs none:
        # it serves this boot's shutdown). It runs beside the mount's start (a host flush under
        # qemu, on a reboot ~0.1 guest-s before the mount was ready, issue 13); the first file
        # renamed into place waits for it (``_settle``): until then this run has written nothing
        # a surviving marker could vouch for.
        self._settled = threading.Thread(target=self._flush_dir, name="plaincache-settle", daemon=True)
        self._settled.start()
        self.took_clean = interval is not None
        if interval is None:
            return False
        self._trusted = (interval[0], max(interval[0], interval[1] - CLEAN_MARGIN_NS))
        return True

    def _flush_dir(self) -> None:
        # the markers' temporaries a killed daemon left (``.open``'s, ``.clean``'s: no fan-out
        # directory's, so ``sweep`` never saw them) go too, off the start's path, kept by this flush
        with contextlib.suppress(OSError):
            reclaim_stale_in(self.dir)
        try:
            fsync_dir(self.dir)
        except OSError as e:
            self._settle_error = e

    def _settle(self) -> None:
        """Wait until ``take_clean``'s removal of the marker is on the disk (at once after the first
        time); a flush that failed is tried again here, and raises as a write to the disk would."""
        t = self._settled
        if t is None:
            return
        t.join()
        if self._settle_error is not None:
            fsync_dir(self.dir)
            self._settle_error = None
        self._settled = None

    def mark_clean(self, *, sync: bool = True, since: int | None = None) -> None:
        """For the owner, once it has stopped writing (the mount is gone): sync the cache's file
        system, then say so in the marker ``take_clean`` reads: what was renamed into place since
        the chain began (``since``: a seed's start, else ``take_clean``'s) and before the sync
        began. A sync that fails leaves no marker (``OSError``). ``sync=False``: the caller makes
        the files durable as a whole (a seed: copied into a disk image renamed into place when
        complete, ctimes kept), and everything changed until now is covered."""
        low = self._since if since is None else since
        if low is None:  # never owned (no take_clean): nothing to vouch for
            return
        self._settle()
        began = time.time_ns()
        if sync:
            syncfs(self.dir, strict=True)
        else:
            began += CLEAN_MARGIN_NS
        # Its content is not flushed on its own: torn by a power loss, it is empty or a prefix (no
        # interval, or an earlier BEGAN: less trusted, never more). One flush of the directory then
        # keeps the rename and OPEN's removal (the shutdown waits for the daemon's end, issue 13).
        atomic_write(self.dir / CLEAN, f"{low} {began}\n".encode(), durable=False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self._base}/{OPEN}")
        fsync_dir(self.dir)

    def sweep(self) -> int:
        """Remove temporary files a crashed writer left (older than STALE_TMP_S); returns how many.
        (With a size limit the mount's start leaves this to ``Quota.scan``: one walk.)"""
        return sweep_temporaries(self.dir, time.time() - STALE_TMP_S)


#: Reads leave the files' access times alone: nothing uses them (the size limit orders by mtime,
#: ``quota.py``), and under relatime the first read of a file since it was written (or in 24 hours)
#: dirtied its inode. A seeded first boot read ~1,400 files the seed had made, each such read a
#: journalled inode write on the scratch disk and, on a qcow2 backed by the seed, new clusters in
#: the instance's disk (issue 13); a reboot a day later paid them again.
#: O_NOFOLLOW: a symbolic link in the cache is never an object (audit13c finding 9: one to a host
#: file was served as the signed file). O_NONBLOCK: opening a FIFO (a seed can ship one) returns at
#: once instead of waiting for a writer forever; the caller's fstat then finds it is no regular
#: file, removes it and counts a miss (audit13d finding 3). No effect on a regular file's reads.
_OPEN = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_READ = _OPEN | getattr(os, "O_NOATIME", 0)


def _open_to_read(path: str) -> int:
    """A read-only descriptor on ``path`` that leaves its access time alone where the kernel allows
    (O_NOATIME: the file's owner or CAP_FOWNER; a cache someone else owns is read as before). A
    symbolic link there is removed and is a miss (FileNotFoundError)."""
    try:
        try:
            return os.open(path, _READ)
        except PermissionError:
            return os.open(path, _OPEN)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        with contextlib.suppress(OSError):  # gone already, or a cache this reader cannot write
            os.unlink(path)
        raise FileNotFoundError(errno.ENOENT, "a symbolic link in the cache (removed)", path) from e


def _create(path: str, flags: int) -> int:
    """``os.open(path, flags | O_NOATIME, 0o644)`` for a new file, without O_NOATIME where the kernel
    refuses it: its owner check applies to the file just created too (a cache on NFS that squashes
    the owner), and then the file it made is removed before the plain create."""
    try:
        return os.open(path, flags | getattr(os, "O_NOATIME", 0), 0o644)
    except PermissionError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return os.open(path, flags, 0o644)


def _interval(text: bytes, now: int) -> tuple[int, int] | None:
    """A marker's "SINCE BEGAN" (ns), or None when it is not one (garbage, an older form) or lies
    in the future (a clock stepped back, or written by hand): then nothing is trusted."""
    try:
        low, high = (int(w) for w in text.decode("ascii").split())
    except (UnicodeDecodeError, ValueError):
        return None
    return (low, high) if 0 < low <= high <= now else None


def _intact(fd: int, size: int) -> bool:
    """The content matches the trailer's checksum (the file is ``size`` + TRAILER bytes long)."""
    trailer = os.pread(fd, TRAILER, size)
    fn = _sum_for(trailer) if len(trailer) == TRAILER else None
    if fn is None:
        return False
    value = 1 if fn is zlib.adler32 else 0
    pos = 0
    while pos < size:
        block = os.pread(fd, min(BLOCK, size - pos), pos)
        if not block:
            return False
        value = fn(block, value)
        pos += len(block)
    return value == int.from_bytes(trailer[:4], "big")
