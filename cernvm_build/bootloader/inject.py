"""``cernvm_inject``: the user data's base64 ``.tar.gz`` unpacked into the OS root, as the OS will see it.

``python3 -m cernvm_build.bootloader.inject ROOT < PAYLOAD`` (the init's ``25-inject``; standard library
only: this module is part of the initrd runtime). Exit 0: applied, one line saying how many members;
1: refused or failed, one line saying which member and why (nothing applied when it was refused).

Not busybox's ``tar -x -C ROOT``, for two reasons:

- the initramfs is not the OS: a path in the payload that crosses a symlink of the OS (``var/run ->
  /run``, or a link the payload itself made) was followed by the initramfs's kernel view, so an
  absolute link wrote into the initramfs (lost at switch_root) or anywhere it pointed. Here every
  link is resolved inside ROOT, as the OS resolves it once ROOT is its ``/`` (what ``openat2``'s
  ``RESOLVE_IN_ROOT`` does, done by hand: the runtime has no ``ctypes``);
- a payload that failed half way was reported as "not a base64 .tar.gz" and unpacked again on every
  boot. Here the whole payload is read and checked, and its paths resolved against the root, before
  anything is written: a bad payload writes nothing. A write that fails (a full disk) says so; the
  next boot applies the payload again, which rewrites the same files.

Members: regular files, directories and symbolic links. Hard links, devices and FIFOs are refused
(an inject payload carries configuration, not device nodes). Names are taken as tar takes them
(a leading ``/`` or ``./`` dropped); a ``..`` component is refused. A file or link replaces what the
root has at its name (never written through a link there); a directory is made, or its mode set.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import os
import stat
import sys
import tarfile
from dataclasses import dataclass

from ..cvmfs.tar_limits import bounded_tarinfo
from ..errors import CvmfsError
from .userdata import gunzip

#: the payload inflated: more than user data can usefully carry (clouds cap user data at 16-64 KiB)
MAX_TAR = 16 << 20
#: members of one payload
MAX_MEMBERS = 10_000
#: symbolic links followed while resolving one name (the kernel's MAXSYMLINKS)
MAX_LINKS = 40
#: bytes of one name component (Linux's NAME_MAX)
NAME_MAX = 255


class Refused(Exception):
    """The payload, or one member of it, cannot be applied; the message names it."""


@dataclass(frozen=True)
class Member:
    path: tuple[str, ...]  # components below the root
    kind: str  # "file", "dir", "link"
    mode: int
    uid: int
    gid: int
    data: bytes = b""  # a file's content, a link's target

    @property
    def name(self) -> str:
        return "/".join(self.path)


def decode(payload: str) -> bytes:
    """The base64 text as the user data gives it (whitespace allowed) → the tar bytes."""
    try:
        raw = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Refused("is not base64") from None
    try:
        return gunzip(raw, MAX_TAR)
    except ValueError as e:
        raise Refused(f"is not a .tar.gz: {e}") from None


def _components(name: str) -> tuple[str, ...]:
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise Refused(f"member {name!r}: a '..' component")
    if "\0" in name:
        raise Refused(f"member {name!r}: a NUL in the name")
    for part in parts:
        # the dry run asks the kernel nothing below a folder it only planned: a name too long
        # for it failed half way through the real run
        if len(os.fsencode(part)) > NAME_MAX:
            raise Refused(f"member {name[:200]!r}: a name longer than {NAME_MAX} bytes")
        if part.startswith(".inject-") and part.endswith(".tmp"):
            raise Refused(f"member {name[:200]!r}: the unpacker's own temporary name")
    return parts


def members(tar_bytes: bytes) -> list[Member]:
    """Every member, checked; Refused names the first that cannot be applied."""
    out: list[Member] = []
    try:
        # headers bounded as every tar reader of the toolkit bounds them (a GNU sparse map tarfile
        # cannot read was a ValueError traceback on the console)
        tarinfo = bounded_tarinfo("cernvm_inject")
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:", tarinfo=tarinfo) as tar:
            for info in tar:
                if len(out) >= MAX_MEMBERS:
                    raise Refused(f"holds more than {MAX_MEMBERS} members")
                path = _components(info.name)
                if not path:
                    if info.isdir():
                        continue  # "./": the root itself
                    raise Refused(f"member {info.name!r}: no name")
                mode = info.mode & 0o7777
                if info.issparse():
                    # its holes would be made in memory: a 1 KiB member may declare terabytes
                    raise Refused(f"member {info.name!r}: a sparse file")
                if info.isreg():
                    f = tar.extractfile(info)
                    data = f.read() if f is not None else b""
                    if len(data) != info.size:
                        raise Refused(f"member {info.name!r}: cut short")
                    out.append(Member(path, "file", mode, info.uid, info.gid, data))
                elif info.isdir():
                    out.append(Member(path, "dir", mode, info.uid, info.gid))
                elif info.issym():
                    if not info.linkname or "\0" in info.linkname:
                        raise Refused(f"member {info.name!r}: an empty link target")
                    out.append(Member(path, "link", 0o777, info.uid, info.gid, os.fsencode(info.linkname)))
                else:
                    what = "a hard link" if info.islnk() else "a device or FIFO"
                    raise Refused(f"member {info.name!r}: {what} (only files, directories and links)")
    except tarfile.TarError as e:
        raise Refused(f"is not a tar archive ({e})") from None
    except CvmfsError as e:  # the bounded headers' refusal, which names the member
        raise Refused(e.message.removeprefix("cernvm_inject: ")) from None
    if not out:
        raise Refused("holds no member")
    return out


def _parts(target: bytes) -> list[str]:
    """A link target's components ('..' kept: the walk takes it, never above the root)."""
    return [p for p in os.fsdecode(target).split("/") if p not in ("", ".")]


class Root:
    """Names resolved inside one root directory, every link followed as the OS will follow it.

    A dry run writes nothing: ``planned`` holds what the members before would have made (directories,
    files, links), so that a later member's resolution sees them as the real run will. Only names
    whose every parent was found to be a real directory reach the kernel (``lstat``), so the kernel
    follows no link of the root's on the way."""

    def __init__(self, root: str, *, dry: bool) -> None:
        self.root = root
        self.dry = dry
        self.planned: dict[tuple[str, ...], Member] = {}

    def _lstat(self, path: tuple[str, ...], name: str) -> os.stat_result | Member | None:
        if self.dry and path in self.planned:
            return self.planned[path]
        try:
            return os.lstat(os.path.join(self.root, *path))
        except FileNotFoundError:
            return None
        except OSError as e:
            # a link's long target resolves past PATH_MAX: said as a failed write, "the next boot
            # tries again", and every boot did, to the same end
            if e.errno != errno.ENAMETOOLONG:
                raise
            size = len(os.fsencode("/".join(path)))
            raise Refused(
                f"member {name!r}: resolves to a path of {size} bytes, longer than the OS allows"
            ) from None

    def directory(self, path: tuple[str, ...], name: str) -> tuple[str, ...]:
        """``path`` as a directory inside the root, its links resolved there, missing ones made."""
        done: list[str] = []
        todo = list(path)
        links = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            here = (*done, part)
            st = self._lstat(here, name)
            target: bytes | None = None  # a link's, planned or in the OS
            if st is None:
                self._mkdir(here)
            elif isinstance(st, Member):
                if st.kind == "link":
                    target = st.data
                elif st.kind != "dir":
                    where = "/".join(here)
                    raise Refused(f"member {name!r}: {where} is a file of the payload, not a directory")
            elif stat.S_ISLNK(st.st_mode):
                target = os.fsencode(os.readlink(os.path.join(self.root, *here)))
            elif not stat.S_ISDIR(st.st_mode):
                raise Refused(f"member {name!r}: /{'/'.join(here)} is not a directory in the OS")
            if target is not None:
                links = self._follow(links, name)
                todo[:0] = _parts(target)
                done = [] if target.startswith(b"/") else done  # absolute: from the root again
                continue
            done.append(part)
        return tuple(done)

    @staticmethod
    def _follow(links: int, name: str) -> int:
        if links >= MAX_LINKS:
            raise Refused(f"member {name!r}: more than {MAX_LINKS} links on its way (a loop?)")
        return links + 1

    def _mkdir(self, path: tuple[str, ...]) -> None:
        if self.dry:
            self.planned[path] = Member(path, "dir", 0o755, 0, 0)
        else:
            os.mkdir(os.path.join(self.root, *path), 0o755)

    def place(self, m: Member) -> None:
        """Resolve ``m``'s parent (dry run: and remember ``m``); apply: write it."""
        parent = self.directory(m.path[:-1], m.name)
        at = (*parent, m.path[-1])
        if m.kind == "dir":
            final = self.directory(at, m.name)
            if self.dry:
                self.planned[final] = Member(final, "dir", m.mode, m.uid, m.gid)
            else:
                full = os.path.join(self.root, *final)
                os.chown(full, m.uid, m.gid, follow_symlinks=False)
                os.chmod(full, m.mode)
            return
        existing = self._lstat(at, m.name)
        if isinstance(existing, os.stat_result) and stat.S_ISDIR(existing.st_mode):
            raise Refused(f"member {m.name!r}: /{'/'.join(at)} is a directory in the OS")
        if isinstance(existing, Member) and existing.kind == "dir":
            raise Refused(f"member {m.name!r}: {'/'.join(at)} is a directory of the payload")
        if self.dry:
            self.planned[at] = m
            return
        _replace(os.path.join(self.root, *parent), m)


def _replace(directory: str, m: Member) -> None:
    """``m`` written beside its name and renamed over it: a link there is replaced, never followed."""
    # a name of its own length: the member's name and a suffix could pass NAME_MAX, found only once
    # earlier members were written (the dry run makes no temporary names)
    tmp = os.path.join(directory, f".inject-{os.getpid()}.tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    if m.kind == "link":
        os.symlink(m.data, tmp)
        os.chown(tmp, m.uid, m.gid, follow_symlinks=False)
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(m.data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode)
        finally:
            os.close(fd)
    os.rename(tmp, os.path.join(directory, m.path[-1]))


def apply(root: str, payload: str) -> int:
    """The payload checked and resolved (nothing written if it is refused), then written; how many members."""
    todo = members(decode(payload))
    plan = Root(root, dry=True)
    for m in todo:
        plan.place(m)
    real = Root(root, dry=False)
    for m in todo:
        real.place(m)
    return len(todo)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m cernvm_build.bootloader.inject ROOT < BASE64_TAR_GZ", file=sys.stderr)
        return 2
    payload = sys.stdin.read()
    try:
        n = apply(argv[0], payload)
    except Refused as e:
        print(f"cernvm_inject {e}; nothing applied", file=sys.stderr)
        return 1
    except OSError as e:
        print(
            f"cernvm_inject: writing into the root failed ({e}); the next boot tries again",
            file=sys.stderr,
        )
        return 1
    print(f"cernvm_inject: {n} member{'' if n == 1 else 's'} unpacked into /")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
