"""Atomic outputs and content hashes.

Everything that others may read appears atomically: written to a temporary sibling, fsynced, then
renamed into place. A crash leaves either the old file or the new one, never half of one.
``durable=False`` skips the fsyncs, for outputs whose caller notices a lost file and writes it again
(the site keeps every output's size and mtime): still never half a file for a reader.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import os
import re
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import Any, BinaryIO, NoReturn

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class NotRegularFile(OSError):
    """``open_regular``'s refusal (errno EINVAL, "not a regular file"): a FIFO, a device, a folder."""


def open_regular(path: Path, *, follow_links: bool = True) -> BinaryIO:
    """``path`` opened for reading if it is a regular file. The open does not block (O_NONBLOCK): a
    FIFO or a device that input names is refused at once, never waited on or read for ever.
    ``follow_links=False``: a symbolic link there is ELOOP (a file the toolkit wrote itself)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags if follow_links else flags | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int, *, follow_links: bool = True) -> bytes:
    """At most ``limit`` + 1 bytes of the regular file ``path`` (``open_regular``): more than
    ``limit`` says the file is larger, without reading the rest."""
    with open_regular(path, follow_links=follow_links) as f:
        return f.read(limit + 1)


class TooLarge(OSError):
    """``read_capped``'s refusal (errno EFBIG): the file holds more than ``cap`` bytes. Its
    ``strerror`` says the cap ("larger than 64 KiB"), so a caller's ``except OSError`` line that
    prints ``e.strerror`` names it; a caller with its own wording catches ``TooLarge`` first."""

    strerror: str  # always set: "larger than <cap>"

    def __init__(self, path: Path, cap: int):
        super().__init__(errno.EFBIG, f"larger than {size_text(cap)}", str(path))
        self.cap = cap


def read_capped(path: Path, cap: int, *, follow_links: bool = True) -> bytes:
    """The whole regular file ``path`` (``open_regular``) when it holds at most ``cap`` bytes, read
    in one go; ``TooLarge`` (an OSError) without reading the rest when it holds more. The one place
    that pairs ``read_regular`` with its length check: a caller that forgot the check took
    ``cap + 1`` bytes of a huge file as the file."""
    data = read_regular(path, cap, follow_links=follow_links)
    if len(data) > cap:
        raise TooLarge(path, cap)
    return data


def size_text(n: int) -> str:
    """A cap as people write it: the largest binary unit that divides it exactly (``64 KiB``,
    ``16 MiB``), else bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PendingSync:
    """New files that must be on disk before something names them (a manifest), made durable at once.

    A few are fsynced one by one with their directories; past ``per_file_max`` the whole file system
    holding them is synced once (``syncfs``), which is far cheaper than thousands of fsyncs and, unlike
    ``sync``, does not wait for every other writer of the machine. Thread-safe.

    ``flush_every`` (seconds): once past ``per_file_max``, a background thread also runs ``syncfs``
    at that interval while files keep coming, so the disk writes overlap with whatever produces the
    files (a replica's downloads) and ``sync`` waits only for the last interval's. Why: the final
    ``syncfs`` of a 2,000-object replica took 0.2-0.6 s of its ~2.7 s (the ext4 allocation and
    writeback of everything at once); with a 0.25 s interval it took 0.01-0.05 s. ``stop`` ends the
    thread when the files are abandoned (``sync`` ends it too)."""

    def __init__(self, root: Path, per_file_max: int = 512, flush_every: float | None = None):
        self.root = root
        self.per_file_max = per_file_max
        self.flush_every = flush_every
        self._paths: list[str] | None = []
        self._lock = threading.Lock()
        self._added = 0  # files added since the background thread's last syncfs
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None

    def add(self, path: Path | str) -> None:
        with self._lock:
            self._added += 1
            if self._paths is not None:
                self._paths.append(str(path))
                if len(self._paths) > self.per_file_max:
                    self._paths = None  # too many for one fsync each: the file system at once
                    if self.flush_every is not None and not self._stopping.is_set():
                        self._flusher = threading.Thread(target=self._flush, name="pending-sync", daemon=True)
                        self._flusher.start()

    def _flush(self) -> None:
        assert self.flush_every is not None
        while not self._stopping.wait(self.flush_every):
            with self._lock:
                added, self._added = self._added, 0
            if added:
                syncfs(self.root)

    def stop(self) -> None:
        """End the background syncs (if any); idempotent."""
        self._stopping.set()
        with self._lock:
            flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.join()

    def sync(self) -> None:
        self.stop()
        with self._lock:
            paths, self._paths = self._paths, []
        if paths is not None:
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for d in sorted({os.path.dirname(p) for p in paths}):
                fsync_dir(Path(d))
            return
        syncfs(self.root)


def syncfs(path: Path, *, strict: bool = False) -> None:
    """Flush the file system holding ``path`` (``os.sync`` where the C library has no syncfs).
    ``strict``: a syncfs that fails (an I/O error: what was written may not be on the disk) raises
    ``OSError`` instead of falling back to ``os.sync``, which reports nothing."""
    import ctypes  # deliberate lazy import: ~1.4 ms that every command importing fsutil paid

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if libc.syncfs(fd) == 0:
                return
            err = ctypes.get_errno()
            if strict and err != errno.ENOSYS:
                raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
        finally:
            os.close(fd)
    except AttributeError:
        pass
    except OSError:
        if strict:
            raise
    os.sync()


# A temporary sibling is named ``.<dest name>.<pid>.<random>.tmp``: the pid says whose it is, so a
# later run can tell the half output of a killed run (its process is gone) from a live one's.
_TEMP_REST = re.compile(r"(\d+)\.[^./]+\.tmp")


#: a temporary sibling's name as a path's part (``temp_prefix``, a number or mkstemp's letters, ``.tmp``;
#: ``atomic_dir``'s ``-old``): group 2 is the name it stands for. Compiled (re's cache) by the first
#: error line that needs it, not by every import of fsutil (the CLI's, the initrd mount's): ~0.17 ms
_TEMP_PART = r"(^|/)\.([^/]+)\.\d+\.[^./]+?(?:-old)?\.tmp(?=/|$)"


def shown(path: str) -> str:
    """``path`` as an error line says it: a temporary sibling's part named as what it becomes
    (``out/.exp.123.x1y2.tmp/a`` → ``out/exp/a``). The temporary is gone when the line is read, and
    its name, which the user never gave, was what a read-only, foreign-owned or full output's line
    named (``cvmfs export``, ``site build``)."""
    return re.sub(_TEMP_PART, r"\1\2", path)


def temp_prefix(dest: Path) -> str:
    """The prefix of this process's temporary siblings of ``dest`` (for mkstemp/mkdtemp)."""
    return f".{dest.name}.{os.getpid()}."


#: Linux's largest pid (``PID_MAX_LIMIT`` on 64 bits): a temporary's name past it names no process
PID_MAX = 1 << 22


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (one of another user counts): the owner of a pid-named temporary."""
    # 0 would signal our own process group, a huge number overflowed os.kill (a traceback that
    # ended atomic_dir and cvmfs export): neither is a process that could own a temporary
    if not 0 < pid <= PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended and waits to be reaped (signal 0 still reaches it): a killed run
    whose parent does not wait (a container whose init reaps nothing, a killed ``timeout``) stays
    one for ever, and its temporaries were kept as a running process's (pr20a finding 4)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read(4096)
    except OSError:  # no /proc (or it just went): as signal 0 said
        return False
    # ``pid (comm) S ...``: the command may hold spaces and parentheses, the state follows the last ')'
    end = text.rfind(b")")
    return text[end + 2 : end + 3] in (b"Z", b"X")


def _reclaim_dead(folder: Path, owner: Callable[[str], str | None]) -> list[Path]:
    """Remove the entries of ``folder`` whose ``owner`` (the pid in a temporary's name, None for any
    other name) no longer runs. Returns what was removed."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        pid = owner(name)
        if pid is None or process_alive(int(pid)):
            continue
        path = folder / name
        with contextlib.suppress(OSError):
            remove_tree(path)
            removed.append(path)
    return removed


def reclaim_stale(dest: Path) -> list[Path]:
    """Remove the temporary siblings of ``dest`` that a process which no longer runs left behind
    (an export or build killed with SIGKILL), so that a re-run finishes the job and leaves nothing
    of the dead run. A running process's temporaries are kept. Returns what was removed."""
    head = f".{dest.name}."

    def owner(name: str) -> str | None:
        m = _TEMP_REST.fullmatch(name[len(head) :]) if name.startswith(head) else None
        return m.group(1) if m else None

    return _reclaim_dead(dest.parent, owner)


#: any output's temporary: ``.<name>.<pid>.<random>.tmp`` (the name may hold dots, the random part not)
_ANY_TEMP = re.compile(r"\..+\.(\d+)\.[^./]+\.tmp")


def reclaim_stale_in(folder: Path) -> list[Path]:
    """``reclaim_stale`` for every output in ``folder``: a cache of entries named by the key of their
    inputs, where a killed build's half entry of inputs no later run asks for (they changed since)
    was otherwise kept for ever. A running process's temporaries are kept. Returns what was removed."""

    def owner(name: str) -> str | None:
        m = _ANY_TEMP.fullmatch(name)
        return m.group(1) if m else None

    return _reclaim_dead(folder, owner)


def reclaim_dead_named(folder: Path, pattern: str) -> list[Path]:
    """Remove the entries of ``folder`` whose whole name matches ``pattern`` and whose pid (its
    first group) no longer runs: an older version's pid-named scratch. Returns what was removed."""
    named = re.compile(pattern)

    def owner(name: str) -> str | None:
        m = named.fullmatch(name)
        return m.group(1) if m else None

    return _reclaim_dead(folder, owner)


@contextlib.contextmanager
def scratch_beside(dest: Path) -> Iterator[Path]:
    """A scratch directory beside ``dest``, named for this process (``.<dest name>.<pid>.<rnd>.tmp``)
    and removed after; a killed run's (its pid gone) is removed first (``reclaim_stale``), so a
    SIGKILL never leaves one behind for good."""
    import tempfile  # deliberate lazy import (see _temp_file)

    reclaim_stale(dest)
    path = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent))
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            remove_tree(path)


_temp_numbers = itertools.count()


def _temp_file(dest: Path) -> tuple[int, str]:
    """A new temporary sibling of ``dest`` (mode 0600), named by ``temp_prefix`` and a counter: a
    replica writes thousands of objects, and the directory usually exists (no mkdir, no random
    names unless a dead process with our pid left the same name)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    tmp = f"{dest.parent}/{temp_prefix(dest)}{next(_temp_numbers)}.tmp"
    try:
        return os.open(tmp, flags, 0o600), tmp
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass
    import tempfile  # deliberate lazy import (the rare path): ~2 ms of every command's start

    return tempfile.mkstemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent)


@contextlib.contextmanager
def atomic_file(dest: Path, mode: int = 0o644, *, durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``dest`` on success and vanishes on failure."""
    fd, tmp = _temp_file(dest)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, dest)
        if durable:
            fsync_dir(dest.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        reraise_naming(e, dest)


def reraise_naming(e: BaseException, path: Path | str) -> NoReturn:
    """Raise ``e`` (being handled) again: a write's ENOSPC or EDQUOT as ``full_disk_error`` names it.
    The tail of every ``except`` that cleans up after a failed write of ``path``."""
    named = full_disk_error(e, path)
    if named is None:
        raise e
    raise named from e


def full_disk_error(e: BaseException, path: Path | str) -> OSError | None:
    """For a write's ENOSPC or EDQUOT, which names no file, the same error naming ``path`` (the CLI's
    line said only "No space left on device"); None for any other exception."""
    if isinstance(e, OSError) and e.filename is None and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(e.errno, e.strerror, str(path))
    return None


def copytree_error(e: OSError) -> OSError:
    """``shutil.copytree``'s one error for all its files (``shutil.Error``: no errno, its argument a
    list of (src, dst, why)) as its first file's OSError, named by that file's destination: the CLI
    showed it as a traceback (a full or inode-less disk under ``release publish``'s copy of the site)."""
    failures = e.args[0] if e.args and isinstance(e.args[0], list) else []
    if e.errno is not None or not failures or not isinstance(failures[0], tuple) or len(failures[0]) != 3:
        return e
    _src, dst, why = failures[0]
    found = re.match(r"\[Errno (\d+)\] ([^:]*)", str(why))
    return e if found is None else OSError(int(found[1]), found[2], str(dst))


def atomic_write(dest: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    with atomic_file(dest, mode, durable=durable) as f:
        f.write(data)


def atomic_copy(src: Path, dest: Path, mode: int = 0o644, *, durable: bool = True) -> None:
    """``src``'s bytes as ``dest`` (not its metadata), by rename."""
    import shutil  # deliberate lazy import: ~1.5 ms (bz2, lzma) of a command that copies nothing

    with atomic_file(dest, mode, durable=durable) as f, open(src, "rb") as s:
        shutil.copyfileobj(s, f, CHUNK)


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``dest`` on success and is removed on failure
    (a killed run's leftover beside ``dest`` is removed first: ``reclaim_stale``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    reclaim_stale(dest)
    import tempfile  # deliberate lazy import (see _temp_file)

    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        place_dir(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            remove_tree(tmp)
        raise


def place_dir(tmp: Path, dest: Path) -> None:
    """Rename the complete folder ``tmp`` (on ``dest``'s file system) to ``dest``, in place of any
    folder there, and make that durable."""
    # the earlier folder is moved aside to a name of this process's (a killed run's is reclaimed by
    # its pid), and again when another run's swap put a folder there meanwhile: a fixed '.NAME.old'
    # shared by runs at once, and a folder arriving between the two renames, were ENOTEMPTY
    # tracebacks (last one in wins, whole)
    old = tmp.with_name(f"{tmp.name.removesuffix('.tmp')}-old.tmp")  # (.NAME.<pid>.<rnd>-old.tmp)
    for _ in range(100):
        with contextlib.suppress(FileNotFoundError):
            os.rename(dest, old)
        try:
            os.rename(tmp, dest)
            break
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        with contextlib.suppress(OSError):
            remove_tree(old)
    else:
        os.rename(tmp, dest)  # (livelocked a hundred times: this one's error stands)
    with contextlib.suppress(OSError):
        remove_tree(old)
    fsync_dir(dest.parent)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: directory descriptors (each with its listing) ``remove_tree`` keeps open at once
_HELD = 64


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it, never following a symlink inside it, whatever its
    depth (no recursion, at most ``_HELD`` directories open) and its modes (a 0500 directory the
    caller owns is made writable first). For partial outputs and scratch trees the toolkit wrote."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    as_root = os.geteuid() == 0

    def enter(fd: int) -> Any:  # the listing holds a descriptor of its own: close it with the level
        if not as_root:
            os.fchmod(fd, 0o700)
        return os.scandir(fd)

    # each level: [name in its parent, (dev, ino), fd or None, listing or None]
    top = os.open(path, _DIR_FLAGS)
    levels: list[list[Any]] = [["", (st.st_dev, st.st_ino), top, enter(top)]]
    first_held = 0
    try:
        while levels:
            level = levels[-1]
            entry = next(level[3], None)
            if entry is not None:
                if entry.is_dir(follow_symlinks=False):
                    fd = os.open(entry.name, _DIR_FLAGS, dir_fd=level[2])
                    cst = os.fstat(fd)
                    levels.append([entry.name, (cst.st_dev, cst.st_ino), fd, enter(fd)])
                    if len(levels) - first_held > _HELD:
                        lowest = levels[first_held]
                        lowest[3].close()
                        os.close(lowest[2])
                        lowest[2] = lowest[3] = None
                        first_held += 1
                else:
                    os.unlink(entry.name, dir_fd=level[2])
                continue
            levels.pop()
            if not levels:
                os.close(level[2])
                break
            parent = levels[-1]
            reopened = parent[2] is None
            if reopened:  # reopen through "..", and make sure it is the same directory
                fd = os.open("..", _DIR_FLAGS, dir_fd=level[2])
                pst = os.fstat(fd)
                if (pst.st_dev, pst.st_ino) != parent[1]:
                    os.close(fd)
                    raise OSError(f"{path}: a directory was moved while it was being removed")
                parent[2] = fd
                first_held = len(levels) - 1
            os.close(level[2])
            os.rmdir(level[0], dir_fd=parent[2])
            if reopened:  # listed again from the start: what was removed is gone from it
                parent[3] = enter(parent[2])
    finally:
        for level in levels:
            if level[2] is not None:
                with contextlib.suppress(OSError):
                    level[3].close()
                    os.close(level[2])
    os.rmdir(path)


def lock_dir(path: Path, how: int, *, follow_links: bool = False) -> int | None:
    """A ``flock`` (``how``: ``LOCK_SH`` or ``LOCK_EX``, with ``LOCK_NB`` not to wait) of the directory
    ``path``, by a descriptor that holds it until closed (inherited by forked workers, not by programs
    run; the kernel drops it when the process dies); None if ``LOCK_NB`` found it held."""
    fd = os.open(path, _DIR_FLAGS if not follow_links else _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, how)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def held_lock(
    path: Path, what: str, busy: Callable[[str], object], *, remove: bool = False, make_parent: bool = True
) -> Iterator[None]:
    """An exclusive ``flock`` of the file ``path`` for the ``with``'s life (the file records our pid and
    ``what`` while held). The kernel drops the lock when its holder dies, so a run killed with SIGKILL
    never blocks the next. When another process holds it, ``busy(holder)`` hears what the file records
    ("pid 123 (publish)"): it raises to refuse, or returns to wait for the lock. ``remove``: the file is
    unlinked before the lock is released (nothing left behind); a run that got the lock of a file
    unlinked meanwhile opens the new one. ``make_parent``: else a missing folder is an OSError."""
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                held = False
            if not held:  # (out of the except: what ``busy`` raises is no "during handling" chain)
                busy(os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown")
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not remove or _names(path, fd):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it as we waited: the lock is the new file's
    try:
        os.ftruncate(fd, 0)
        try:
            os.pwrite(fd, f"pid {os.getpid()} ({what})\n".encode(), 0)
        except OSError as e:
            # a full disk or quota: the line named no file (the lock's, not the command's output)
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            reraise_naming(e, path)
        try:
            yield
        finally:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            else:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is the file open as ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def lock_holders(fd: int) -> list[int]:
    """The pids that hold a ``flock`` of the file open as ``fd`` (``/proc/locks``; waiters left out),
    for the one line that says whom a run waits for or leaves a folder to; [] where unknown."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  READ  1234 fe:00:5678 0 EOF"; a waiter's line has "->" after "1:"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident and fields[4].isdigit():
            pids.append(int(fields[4]))
    return sorted(set(pids))


#: the random part ``tempfile.mkdtemp`` adds to a prefix: scratch is only ever a name of this shape
_MKDTEMP_REST = re.compile(r"[a-z0-9_]{8}")


def reclaim_scratch(parent: Path, prefix: str) -> list[Path]:
    """Remove the scratch directories ``locked_scratch(parent, prefix)`` made whose lock is free: their
    run is over (killed with SIGKILL: the kernel drops the lock with the process). A running run's
    scratch is locked, and kept. Only directories of this user named as mkdtemp names them. Returns
    what was removed."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    return [
        parent / name
        for name in names
        if name.startswith(prefix)
        and _MKDTEMP_REST.fullmatch(name[len(prefix) :])
        and remove_unheld(parent / name, own_only=True)
    ]


def remove_own_tree(path: str | Path, pid: int) -> None:
    """``remove_tree(path)``, errors ignored, if this process is ``pid``: the ``weakref.finalize`` of a
    process's scratch folder, which a forked child that inherited the finalizer (and exits) must not
    take from its parent."""
    if os.getpid() == pid:
        with contextlib.suppress(OSError):
            remove_tree(Path(path))


def remove_unheld(path: Path, *, own_only: bool = False) -> bool:
    """Remove the directory ``path`` unless a running process holds its ``flock`` (``lock_dir``; the
    kernel drops it when the holder dies), and with ``own_only`` unless another user owns it; whether
    it was removed. Never a symbolic link's target."""
    try:
        fd = lock_dir(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    if fd is None:  # held
        return False
    try:
        if own_only and os.fstat(fd).st_uid != os.geteuid():
            return False
        try:
            remove_tree(path)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked_scratch(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A new scratch directory ``<parent>/<prefix>XXXXXXXX`` (``parent`` None: tempfile's, i.e.
    TMPDIR), removed after. It is ``flock``ed for as long as it is in use, so that a later run tells
    a killed run's scratch (lock free) from a running one's and removes it first (``reclaim_scratch``):
    a pid would not do, as another process may have the dead one's pid by then."""
    import tempfile  # deliberate lazy import (see _temp_file)

    base = Path(tempfile.gettempdir()) if parent is None else parent
    reclaim_scratch(base, prefix)
    while True:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        # between the mkdir and the lock, another run's reclaim may have taken the new directory
        # for a dead run's: it holds it (locked), or has removed it (no links left)
        fd = lock_dir(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is not None:
            if os.fstat(fd).st_nlink > 0:
                break
            os.close(fd)
    try:
        yield path
    finally:
        try:
            with contextlib.suppress(OSError):
                remove_tree(path)
        finally:
            os.close(fd)


_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def spread_subdirectories(path: Path) -> None:
    """Mark ``path`` as the top of a directory hierarchy (``chattr +T``) before its fan-out
    directories are made, so that ext4's Orlov allocator puts them, and so the inodes of the files
    made in them, in different block groups rather than in the parent's. Why: ext4 places a new
    file's inode in its directory's group, and without a journal it skips every inode freed there
    in the last ~30 s (``recently_deleted`` in ``find_inode_bit``); a group shared with busy
    temporary directories (``/tmp``, test runs deleting thousands of files) made each object's
    creation cost 0.4-1 ms of kernel time instead of ~30 us (``perf``: ``recently_deleted``,
    ``find_get_block_common``). Spread groups also mean less lock contention between parallel
    writers. A hint only: file systems without the flag are left as they are."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
        if not flags & _FS_TOPDIR_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | _FS_TOPDIR_FL))
    except OSError:
        pass
    finally:
        os.close(fd)


def process_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o077  # unknown: assume the strictest, so the mode is set explicitly


def hides_from_others() -> bool:
    """The umask takes read or search from the group or others (``umask 077``): what a web server
    serves (a repository, a replica) must then be given its mode explicitly."""
    return bool(process_umask() & 0o055)


def served_folders(*folders: str | os.PathLike[str]) -> None:
    """``folders`` 0755 under a umask that ``hides_from_others``: a repository's and a replica's
    folders are read by the web server's user (``cvmfs nginx-config``); under ``umask 077`` they
    were 0700 (every object a 403), while the manifest beside them was 0644.

    The read and search bits are added, none taken: a shared stratum's ``2775`` (setgid, group-written
    by its publishers) became ``0755`` at the first publish under ``umask 027``, and the group could no
    longer publish. A folder of another user's is left as it is (a chmod there is EPERM)."""
    if not hides_from_others():
        return
    uid = os.geteuid()
    for folder in folders:
        st = os.stat(folder)
        mode = st.st_mode & 0o7777
        if mode | 0o755 != mode and st.st_uid == uid:
            os.chmod(folder, mode | 0o755)


def write_all(fd: int, block: bytes) -> None:
    """All of ``block`` to the raw descriptor ``fd`` (``os.write`` may write less)."""
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view) :]
