"""Writing into an OS tree as if it were ``/``: every path resolved inside the tree, never out of it.

The tree holds what packages put there, so its symlinks are not ours: ``usr/share/x -> /etc`` or
``-> ../../../..`` must lead to the tree's own ``etc``, as in a chroot, never to the host's. The kernel
does that resolution (``openat2`` with ``RESOLVE_IN_ROOT``, Linux 5.6): ``..`` stops at the tree's top
and an absolute target starts there. Parents are resolved that way; the last component is then
created, replaced or removed through the parent's descriptor without following it (``*at`` calls,
``O_NOFOLLOW``), so a link named as the destination is replaced, never written through.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import BuildError

_SYS_OPENAT2 = 437  # the same number on every Linux architecture (added after the syscall table merge)
_RESOLVE = 0x01 | 0x02 | 0x10  # RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS | RESOLVE_IN_ROOT
_EAGAIN_TRIES = 16  # openat2(2): RESOLVE_IN_ROOT may return EAGAIN; the caller should retry
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def split(rel: str) -> tuple[str, str]:
    """``rel`` as (parent, name); ``rel`` is a clean relative path (no ``.``/``..``/empty parts)."""
    parent, _, name = rel.rpartition("/")
    return parent, name


def executable(mode: int) -> bool:
    """Whether a host file of ``mode`` is copied in as a program (0755; otherwise 0644)."""
    return bool(mode & 0o111)


def clean(name: str) -> str | None:
    """A member name as a clean path relative to the root ('' for the root itself), or None when it
    is absolute or climbs with ``..`` (tar and dpkg refuse such names too)."""
    if name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return None if ".." in parts else "/".join(parts)


class Root:
    """An OS tree opened as a root; every method takes a clean relative path (``usr/bin/ls``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:  # once, here: without openat2 every later call would fail on a path of its own
            os.close(self.open("", os.O_PATH | os.O_DIRECTORY))
        except OSError as e:
            os.close(self.fd)
            if e.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            raise BuildError(
                f"building an OS tree needs Linux >= 5.6 (openat2): {e.strerror}",
                hint="run it on a newer kernel, or in a container whose seccomp profile allows openat2",
            ) from None

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def open(self, rel: str, flags: int, mode: int = 0o644) -> int:
        """A descriptor of ``rel`` resolved inside the root (its symlinks followed chroot-style)."""
        how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, _RESOLVE)
        for _ in range(_EAGAIN_TRIES):
            fd = _libc.syscall(
                ctypes.c_long(_SYS_OPENAT2),
                ctypes.c_long(self.fd),
                ctypes.c_char_p(os.fsencode(rel or ".")),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
            if fd >= 0:
                return int(fd)
            err = ctypes.get_errno()
            if err != errno.EAGAIN:  # EAGAIN: a rename or mount elsewhere raced a '..' step; retry
                break
        raise OSError(err, os.strerror(err), rel or ".")

    @contextmanager
    def parent(self, rel: str, create: bool = True) -> Iterator[tuple[int, str]]:
        """The directory that holds ``rel`` (made 0755 where missing, if ``create``) and ``rel``'s
        last name."""
        up, name = split(rel)
        fd = self._dir(up) if create else self.open(up, os.O_PATH | os.O_DIRECTORY)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def _dir(self, rel: str) -> int:
        """A descriptor of directory ``rel``, its missing components made one by one (a loop, not a
        recursion: an 800-byte ``a/a/…`` member must not exhaust Python's stack), each 0755 root:root
        whatever the umask."""
        try:
            return self.open(rel, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            if not rel:
                raise
        parts = rel.split("/")
        fd = self.open("", os.O_PATH | os.O_DIRECTORY)
        try:
            for i, name in enumerate(parts):
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    made = False  # a directory, a symlink (followed in the root), or a file (refused)
                here = self._existing_dir("/".join(parts[: i + 1]), os.O_RDONLY if made else os.O_PATH)
                os.close(fd)
                fd = here
                if made:
                    os.fchown(fd, 0, 0)
                    os.fchmod(fd, 0o755)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _existing_dir(self, rel: str, flags: int) -> int:
        try:
            return self.open(rel, flags | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            why = f"{rel} is neither a directory nor a symlink to one inside the tree"
            raise NotADirectoryError(errno.ENOTDIR, why, rel) from None

    @contextmanager
    def _fresh(self, rel: str) -> Iterator[tuple[int, str]]:
        """``parent(rel)`` with ``rel``'s name free: whatever was there is removed (never what it
        points to; an empty directory too, as tar does), so what is made there replaces it."""
        with self.parent(rel) as (pfd, name):
            try:
                os.unlink(name, dir_fd=pfd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                os.rmdir(name, dir_fd=pfd)
            yield pfd, name

    def write(self, rel: str, data: IO[bytes] | bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
        """A new regular file ``rel`` (whatever was there is replaced, not written through)."""
        with self._fresh(rel) as (pfd, name):
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd
            )
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, bytes):
                    out.write(data)
                else:
                    while block := data.read(1 << 20):
                        out.write(block)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)  # after chown, which clears set-id bits

    def mkdir(self, rel: str, mode: int = 0o755, uid: int = 0, gid: int = 0, *, reset: bool = False) -> None:
        """Directory ``rel``: made with ``mode`` and owner, or kept (a symlink to a directory in the
        root stays, as tar's --keep-directory-symlink). An existing directory keeps its own owner
        and mode, as dpkg leaves it (a package's ``x/`` member must not chmod the tree's root or,
        through ``x -> /etc``, the tree's /etc: audit13d finding 9), unless ``reset``: our own
        skeleton's fixes."""
        with self.parent(rel) as (pfd, name):
            try:
                os.mkdir(name or ".", 0o700, dir_fd=pfd)
            except FileExistsError:
                if not reset:
                    os.close(self._existing_dir(rel, os.O_PATH))  # a file there is refused
                    return
        fd = self._existing_dir(rel, os.O_RDONLY)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def symlink(self, rel: str, target: str, uid: int = 0, gid: int = 0) -> None:
        with self._fresh(rel) as (pfd, name):
            os.symlink(target, name, dir_fd=pfd)
            os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)

    def hardlink(self, rel: str, source: str) -> None:
        """``rel`` as another name of ``source``, itself resolved in the root (its last name not
        followed): a link can only join two files of the tree. A missing target is refused before
        anything is made (no parent folders for ``rel`` either)."""
        why = f"the hard link's target {source} is not in the tree"
        sdir, sname = split(source)
        try:
            sfd = self.open(sdir, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, why, rel) from None
        try:
            try:
                os.stat(sname, dir_fd=sfd, follow_symlinks=False)
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, why, rel) from None
            with self._fresh(rel) as (pfd, name):
                os.link(sname, name, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(sfd)

    def fifo(self, rel: str, mode: int, uid: int = 0, gid: int = 0) -> None:
        with self._fresh(rel) as (pfd, name):
            os.mkfifo(name, mode, dir_fd=pfd)
            os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)

    def remove(self, rel: str) -> None:
        """Remove the name ``rel`` if it is there (a symlink itself, not its target)."""
        try:
            with self.parent(rel, create=False) as (pfd, name):
                os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            pass

    def rmdir(self, rel: str) -> None:
        with self.parent(rel, create=False) as (pfd, name):
            os.rmdir(name, dir_fd=pfd)

    def listdir(self, rel: str) -> list[str]:
        """The names in directory ``rel`` ([] when it is missing)."""
        try:
            fd = self.open(rel, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return []
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def _regular(self, rel: str, flags: int, mode: int = 0) -> int:
        """A descriptor of the regular file ``rel``. O_NONBLOCK: a FIFO a package ships (or names
        ``etc/shadow`` with) must not block the build, nor a device be used (audit13d finding 5); a
        FIFO without a reader is ENXIO to a writer, anything not a regular file is refused."""
        try:
            fd = self.open(rel, flags | os.O_NONBLOCK, mode)
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise OSError(errno.EINVAL, "not a regular file (a FIFO)", rel) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", rel)
        os.set_blocking(fd, True)
        return fd

    def read(self, rel: str) -> bytes | None:
        """The regular file ``rel``'s bytes (None when it is missing)."""
        try:
            fd = self._regular(rel, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def rewrite(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        """Replace the content of ``rel`` (created with ``mode`` when missing), as a process in the
        chroot writing ``/rel`` would: owner and mode stay. Truncated only once known regular."""
        fd = self._regular(rel, os.O_WRONLY | os.O_CREAT, mode)
        with os.fdopen(fd, "wb") as f:
            f.truncate(0)
            f.write(data)

    def is_dir(self, rel: str) -> bool:
        """Whether ``rel`` is a directory itself (not a symlink to one)."""
        try:
            with self.parent(rel, create=False) as (pfd, name):
                return stat.S_ISDIR(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False

    def copy_in(self, src: Path, rel: str) -> None:
        """The host folder ``src`` (trusted: ours) merged into ``rel``: its files and symlinks replace
        what is there, directories already in the tree are kept as they are."""
        self.mkdir(rel)
        for dirpath, dirnames, filenames in os.walk(src):
            here = Path(dirpath).relative_to(src)
            for name in sorted(dirnames + filenames):
                s = Path(dirpath) / name
                dest = "/".join(p for p in (rel, str(here), name) if p and p != ".")
                st = s.lstat()
                if stat.S_ISLNK(st.st_mode):
                    self.symlink(dest, os.readlink(s))
                elif stat.S_ISDIR(st.st_mode):
                    self.mkdir(dest)
                else:  # the checkout's mode depends on the umask; the output must not
                    with s.open("rb") as f:
                        self.write(dest, f, 0o755 if executable(st.st_mode) else 0o644)
