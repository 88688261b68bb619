"""The local content-addressed cache.

Layout: ``<cache>/<fqrn>/`` holds a Stratum directory's ``data/XX/rest<suffix>``, objects exactly as
the server sent them (compressed), so an entry is self-verifying (its name is the hash of its bytes),
and the signed files last verified as one file, ``.cvmfssigned`` (``repository.keep_signed``; older
versions kept ``.cvmfspublished``, ``.cvmfswhitelist`` and ``.cvmfscertificate``): it is usable
offline for what it holds, but it is no Stratum a reader or ``cvmfs serve`` could open as such.

- Verified on write: bytes are hashed while they stream into a temporary sibling, and only renamed
  into place when the hash matches the name. A partial or bad download never appears under its name.
- Safe for concurrent readers and writers: rename is atomic; two processes fetching the same object
  both write identical bytes and the last rename wins.
- Checked again on first use in each process (a disk error or a meddler may change a file later); a
  bad entry is deleted and fetched again.
- No fsync for objects: a torn write after a crash is caught by that first-use check.
- A writer killed mid-object (SIGKILL) leaves its temporary in its own folder of temporaries,
  ``tmp/.objects.<pid>.<rnd>.tmp``: the next open of the cache (``sweep``, one listing of ``tmp``,
  never on the per-object path) removes the folders of processes that no longer run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import CvmfsError, IntegrityError
from ..fsutil import (
    NotRegularFile,
    TooLarge,
    atomic_write,
    lock_dir,
    read_capped,
    reclaim_dead_named,
    reclaim_scratch,
    reclaim_stale_in,
    remove_own_tree,
    reraise_naming,
    temp_prefix,
)
from .objects import Holdings, ObjectHash, new_hasher, object_path

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import BinaryIO

BLOCK = 1 << 20
#: the prefix of a process's scratch folder in ``tmp`` (``scratch``); older versions added their pid
_SCRATCH = "proc-"
_OLD_SCRATCH = r"proc-(\d+)-[a-z0-9_]{8}"

#: this process's id, for its folder of temporaries (``os.getpid`` is a system call, and ``store``
#: runs per object); a forked child (the mount daemon) makes a folder of its own
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


#: O_NONBLOCK: an object path that is a FIFO (a seed can ship one) opens at once and reads as empty,
#: which no object hashes to, instead of waiting for a writer forever; no effect on a regular file.
#: O_NOFOLLOW: a symbolic link there is never an object (one to /dev/zero was hashed for ever, one to
#: a host file read whole), as in plaincache.py.
_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW


def _open_object(path: str) -> BinaryIO | None:
    """An object file opened to read; None for a folder or a symbolic link where the object belongs
    (bad, as a FIFO's empty read: the caller removes it); FileNotFoundError if absent."""
    try:
        fd = os.open(path, _READ)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise
    try:
        return open(fd, "rb")
    except IsADirectoryError:
        os.close(fd)  # open() does not close a descriptor it refused
        return None


def hash_file(path: Path, algorithm: str) -> str:
    """The file's hash; "" (no object's) for anything but a regular file there: read to its end, a
    device a seed ships (``/dev/zero``'s numbers) would never end."""
    f = _open_object(str(path))
    if f is None:
        return ""
    h = new_hasher(algorithm)
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return ""
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


class ObjectCache:
    """One repository's part of the cache: ``root = <cache dir>/<fqrn>``."""

    def __init__(self, root: Path, *, repo: str):
        self.root = root
        self._base = str(root)
        self.repo = repo
        try:
            (root / "data").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CvmfsError(
                f"{repo}: cache directory {root} cannot be created: {e.strerror}",
                hint="pass a writable --cache DIR",
            ) from e
        self._verified: set[str] = set()
        #: Told of every object read from or stored into the cache (the size limit's LRU, quota.py).
        self.on_use: Callable[[Path], None] | None = None
        #: what ``data`` holds, where this process owns the cache (the mount daemon: ``hold``)
        self.held: Holdings | None = None
        #: (pid, folder) of the process's temporaries, made on its first ``store`` (``_temp_dir``)
        self._temps: tuple[int, str] | None = None
        self._temps_lock = threading.Lock()
        self.sweep()

    def sweep(self) -> list[Path]:
        """Remove what writers that no longer run left in ``tmp``: the folder of temporaries of a
        fetch killed mid-object (``_temp_dir``), the scratch of a killed process (``scratch``, its
        lock free; older versions named it by pid, ``proc-<pid>-XXXXXXXX``). Listings of ``tmp`` at
        open, a dead writer's folder holds one temporary per thread: bounded, and never on the
        per-object path. Returns what was removed."""
        tmp = self.root / "tmp"
        return [
            *reclaim_stale_in(tmp),
            *reclaim_scratch(tmp, _SCRATCH),
            *reclaim_dead_named(tmp, _OLD_SCRATCH),
        ]

    def _temp_dir(self) -> str:
        """This process's folder for objects being written, ``tmp/.objects.<pid>.<rnd>.tmp``: the
        pid in the name tells ``sweep`` of a later run whether its writer still runs."""
        temps = self._temps
        if temps is not None and temps[0] == _pid:
            return temps[1]
        with self._temps_lock:
            if self._temps is None or self._temps[0] != _pid:
                import tempfile  # deliberate lazy import (see fsutil._temp_file)

                base = self.root / "tmp"
                base.mkdir(exist_ok=True)
                made = tempfile.mkdtemp(prefix=temp_prefix(base / "objects"), suffix=".tmp", dir=base)
                # relative when the cache root is (see scratch)
                folder = str(base / Path(made).name)
                self._check_same_device(folder)
                weakref.finalize(self, remove_own_tree, folder, _pid)  # at its end
                self._temps = (_pid, folder)
            return self._temps[1]

    def _check_same_device(self, folder: str) -> None:
        """Objects are renamed from the folder of temporaries into ``data/``: on another file system
        (``tmp`` a mount point, or a link to one) every store failed with EXDEV, "Invalid
        cross-device link" naming neither folder. Checked once, when the folder is made."""
        data = self.root / "data"
        if os.stat(folder).st_dev == os.stat(data).st_dev:
            return
        with contextlib.suppress(OSError):
            os.rmdir(folder)
        raise CvmfsError(
            f"{self.repo}: cache folder {self.root / 'tmp'} is on another file system than {data}",
            hint="objects are renamed from one into the other: make tmp/ a plain folder of the cache "
            "(not a mount point or a link elsewhere), or move the whole cache",
        )

    def hold(self, *, background: bool = False) -> Holdings:
        """Keep in memory what ``data`` holds from now on (``objects.Holdings``): a miss then costs
        no failed open. Only for the process that owns the cache, the mount daemon (``background``:
        listed beside its start)."""
        self.held = Holdings(self.root / "data", background=background)
        return self.held

    def missing(self, h: ObjectHash, suffix: str) -> bool:
        """Known not to be here (``held``); False when unknown or present. While ``held`` is being
        filled a name it lacks is looked up on the disk (the boot list and the fetch ahead skip
        what is not missing)."""
        held = self.held
        if held is None:
            return False
        name = str(h)
        if name + suffix in held:
            return False
        return held.filled or not os.path.exists(f"{self._base}/{object_path(name, suffix)}")

    def _gone(self, h: ObjectHash, suffix: str) -> None:
        """A file ``held`` named was not there (removed behind this process's back)."""
        if self.held is not None:
            self.held.discard(str(h) + suffix)

    def path(self, h: ObjectHash, suffix: str) -> Path:
        return self.root / object_path(str(h), suffix)

    def lookup(self, h: ObjectHash, suffix: str) -> Path | None:
        """The cached file if present and intact (checked once per process); a bad one is removed."""
        p = self.path(h, suffix)
        key = str(p)
        if key in self._verified:
            if p.exists():
                self._used(p)
                return p
            self._verified.discard(key)
        if self.missing(h, suffix):
            return None
        try:
            actual = hash_file(p, h.algorithm)
        except FileNotFoundError:
            self._gone(h, suffix)
            return None
        if actual != h.hex:
            self._gone(h, suffix)
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                p.unlink()
            return None
        self._verified.add(key)
        self._used(p)
        return p

    def read_small(self, h: ObjectHash, suffix: str, limit: int) -> bytes | None:
        """The verified bytes of a cached object of at most ``limit`` bytes, read once (the check on
        first use and the caller share the read); None if larger or bad (then removed);
        FileNotFoundError if absent (the caller need not look it up again: on a cold read that
        second failed open was one of a fetched object's syscalls, each a GIL hand-off)."""
        name = str(h)
        held = self.held
        if held is not None and held.filled and name + suffix not in held:  # no failed open for a known miss
            raise FileNotFoundError(name + suffix)
        # the path as a string: this open is tried for every object a cold read fetches, and
        # building a pathlib path was most of its cost
        key = f"{self._base}/{object_path(name, suffix)}"
        # a raw open first: a miss costs no file object
        try:
            f = _open_object(key)
        except FileNotFoundError:
            self._gone(h, suffix)
            raise
        data = b""
        if f is not None:
            with f:
                data = f.read(limit + 1)
        if len(data) > limit:
            return None
        if key not in self._verified:
            hasher = new_hasher(h.algorithm)
            hasher.update(data)
            if hasher.hexdigest() != h.hex:
                self._gone(h, suffix)
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(key)
                return None
            self._verified.add(key)
        self._used(Path(key))
        return data

    def store(self, h: ObjectHash, suffix: str, blocks: Iterator[bytes], *, what: str) -> Path:
        """Stream ``blocks`` into the cache under ``h``; IntegrityError (and nothing stored) on mismatch."""
        dest = self.path(h, suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # deliberate lazy import (see fsutil._temp_file)

        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self._temp_dir())
        try:
            hasher = new_hasher(h.algorithm)
            with os.fdopen(fd, "wb") as f:
                for block in blocks:
                    hasher.update(block)
                    f.write(block)
            actual = hasher.hexdigest()
            if actual != h.hex:
                raise IntegrityError(
                    f"{self.repo}: {what} {h}{suffix}: content hash mismatch (got {actual})",
                    hint="the server or a proxy delivered damaged or tampered data; nothing was cached",
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            # a full cache disk: the write's ENOSPC named no file ("No space left on device" alone)
            reraise_naming(e, dest)
        self._verified.add(str(dest))
        if self.held is not None:
            self.held.add(str(h) + suffix)
        self._used(dest)
        return dest

    def _used(self, p: Path) -> None:
        if self.on_use is not None:
            self.on_use(p)

    def discard(self, h: ObjectHash, suffix: str) -> None:
        p = self.path(h, suffix)
        self._verified.discard(str(p))
        self._gone(h, suffix)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()

    # -- the signed files, kept for offline use (only after they verified) -----------------------
    def save_meta(self, name: str, data: bytes) -> bool:
        """Keep a verified signed file; not written again when it holds these bytes already (a
        restart on an unchanged revision: each write is two fsyncs, a host flush under qemu).
        Whether it was written."""
        if self.load_meta(name, len(data)) == data:
            return False
        atomic_write(self.root / name, data)
        return True

    def load_meta(self, name: str, limit: int = 1 << 20) -> bytes | None:
        """A saved signed file; None if absent, (not written by us) larger than ``limit``, or no
        regular file (a FIFO there hung every later open; a link is not followed)."""
        try:
            return read_capped(self.root / name, limit, follow_links=False)
        except (FileNotFoundError, NotRegularFile, TooLarge):
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None
            raise

    def scratch(self) -> Path:
        """A private scratch directory for this process (inflated catalogs, large objects),
        ``tmp/proc-XXXXXXXX``, ``flock``ed for as long as this cache lives (a forked child, the mount
        daemon, holds the lock too): ``sweep`` removes the ones whose lock is free, a killed
        process's. A pid in the name would not do: a folder made before a fork outlives its maker's
        pid while the daemon uses it, and a dead one's pid may be another process's by then."""
        base = self.root / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        import fcntl
        import tempfile  # deliberate lazy import (see fsutil._temp_file)

        while True:
            # Keep it relative when the cache root is (see mount.py; mkdtemp answers absolute on 3.12+).
            path = base / Path(tempfile.mkdtemp(prefix=_SCRATCH, dir=base)).name
            # between the mkdir and the lock, another open's sweep may have taken it for a dead one's
            fd = lock_dir(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if fd is not None and os.fstat(fd).st_nlink > 0:
                break
            if fd is not None:
                os.close(fd)
        weakref.finalize(self, os.close, fd)
        return path
