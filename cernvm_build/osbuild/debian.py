"""A Debian OS tree (systemd, udev, OpenSSH, cloud-init) from verified Debian packages, for μCernVM.

Packages: the closure (``resolve``) of ``WANTED`` over the verified index (``aptindex``), each ``.deb``
checked against the index's SHA256 (``debpkg.fetch_verified``). Install, as debootstrap does it: every
package's data is unpacked into the tree (merged /usr), then in a private mount and PID namespace, with
``/proc`` and a minimal ``/dev`` and the packages bind-mounted read-only, ``dpkg`` inside a chroot
installs ``base-passwd``, unpacks everything and configures it, so the maintainer scripts run as they do
on a real installation (``policy-rc.d`` stops them starting services). Needs root (chroot, namespaces).

The kernel's module tree goes to ``/usr/lib/modules/<kver>`` with ``depmod`` run in the tree, so the
OS can ``modprobe`` what the initrd does not carry (9p, autofs4, …).

Deterministic: the build time is an input (``SOURCE_DATE_EPOCH`` for the maintainer scripts, every
file's time, the shadow files' last-change day); what makes installations differ (host keys, machine-id,
logs, caches holding inode numbers) is removed. The tree is cached under the key of its inputs.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import cachekey, debpkg
from ..bootloader.kernel import Kernel
from ..cvmfs.tar_limits import bounded_tarinfo
from ..errors import BuildError, IntegrityError
from ..fsutil import (
    atomic_dir,
    held_lock,
    lock_dir,
    lock_holders,
    reclaim_stale_in,
    remove_tree,
    sha256_file,
    temp_prefix,
)
from ..paths import cache_dir, data_dir
from ..proc import run, streamed
from . import aptindex, inroot, pycs, resolve

SUITES = {"12": ("bookworm", "bookworm-updates", "bookworm-security")}
#: Beyond Essential + required: what a systemd OS that μCernVM boots and cernvm-launch reaches needs.
#: usr-is-merged: the tree is merged-/usr from the start (usrmerge's conversion has nothing to do).
WANTED = (
    "systemd", "systemd-sysv", "udev", "kmod", "dbus", "libpam-systemd", "openssh-server",
    "iproute2", "netbase", "procps", "apt", "cloud-init", "usr-is-merged",
)  # fmt: skip
OVERLAY = data_dir("os") / "debian"
#: Files that record the moment or the machine of one installation.
VOLATILE = (
    "var/log/dpkg.log", "var/log/alternatives.log", "var/log/bootstrap.log", "var/cache/ldconfig/aux-cache",
    "var/lib/dbus/machine-id", "var/lib/systemd/catalog/database", "etc/.pwd.lock", "usr/sbin/policy-rc.d",
)  # fmt: skip
DEV_NODES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
Say = Callable[[str], None]


@dataclass(frozen=True)
class DebianTree:
    root: Path
    release: str
    key: str
    packages: tuple[aptindex.IndexPackage, ...]
    kernel_version: str | None
    reused: bool


def _inputs(
    release: str, packages: tuple[aptindex.IndexPackage, ...], kernel: Kernel | None, epoch: int
) -> str:
    here = Path(__file__)
    return cachekey.key(
        {
            "release": release,
            "packages": [f"{p.name} {p.version} {p.sha256}" for p in packages],
            # a file's bytes and whether it is executable: all that is kept of it (inroot.copy_in)
            "overlay": {
                str(p.relative_to(OVERLAY)): [sha256_file(p), inroot.executable(p.stat().st_mode)]
                for p in sorted(OVERLAY.rglob("*"))
                if p.is_file()
            },
            "kernel": None if kernel is None else [kernel.version, kernel.sha256],
            "epoch": epoch,
            "code": [cachekey.code_version(), sha256_file(here)],
        }
    )


def select_packages(
    release: str, *, lists: Path = aptindex.LISTS, keyring: Path = aptindex.KEYRING
) -> tuple[aptindex.IndexPackage, ...]:
    """The packages of the Debian ``release`` tree, from the verified index."""
    if release not in SUITES:
        raise BuildError(f"Debian {release} is not supported", hint=f"supported: {', '.join(SUITES)}")
    return resolve.closure(aptindex.load_index(SUITES[release], lists=lists, keyring=keyring), WANTED)


def fetch_packages(
    packages: tuple[aptindex.IndexPackage, ...], debdir: Path, *, offline: bool = False
) -> list[debpkg.DebPackage]:
    """Each package's ``.deb`` in ``debdir``, checked against the index's SHA256."""
    return [
        debpkg.fetch_verified(p.name, p.version, p.arch, p.sha256, debdir, offline=offline) for p in packages
    ]


def build_debian_tree(
    release: str = "12",
    *,
    epoch: int,
    kernel: Kernel | None = None,
    offline: bool = False,
    lists: Path = aptindex.LISTS,
    keyring: Path = aptindex.KEYRING,
    debs: Path | None = None,
    say: Say = lambda _: None,
) -> DebianTree:
    """The Debian ``release`` tree (cached; built when its inputs changed). ``offline``: every package
    must already be in the cache (tests, and builds that must not touch the network)."""
    packages = select_packages(release, lists=lists, keyring=keyring)
    key = _inputs(release, packages, kernel, epoch)
    dest = cache_dir("os") / f"debian{release}-{key[:24]}"
    done = _marker(dest)
    kver = kernel.version if kernel else None
    if reusable(dest, key):
        return DebianTree(dest, release, key, packages, kver, reused=True)
    if os.geteuid() != 0:
        raise BuildError(
            "building a Debian tree needs root (dpkg runs maintainer scripts in a chroot and namespace)",
            hint="run it as root (sudo)",
        )
    # one build of a tree at a time, checked again once held: two builds on a cold cache both built
    # it (minutes as root), and the second's swap replaced the tree under the first's reads
    lock = dest.parent / f".{dest.name}.lock"
    with held_lock(lock, f"build of {dest.name}", lambda h: say(f"waiting for {h}: {lock}"), remove=True):
        if reusable(dest, key):
            return DebianTree(dest, release, key, packages, kver, reused=True)
        debdir = debs or cache_dir("debs")
        say(f"debian{release}: {len(packages)} packages, {sum(p.size for p in packages) / 1e6:.0f} MB")
        files = [
            debpkg.fetch_verified(p.name, p.version, p.arch, p.sha256, debdir, offline=offline)
            for p in packages
        ]
        with atomic_dir(dest) as tree:
            _unpack(tree, files)
            modules = [(kernel.modules, f"usr/lib/modules/{kernel.version}")] if kernel is not None else []
            _copy_in(tree, [*modules, (OVERLAY, "")])
            say(f"debian{release}: dpkg installs {len(files)} packages in a chroot")
            _install(tree, debdir, files, epoch, kver)
            _scrub(tree, epoch)
        cachekey.write_marker(done, key, {"packages": len(packages)})
        keep_only(dest, release, say)
        return DebianTree(dest, release, key, packages, kver, reused=False)


def _marker(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.json"


def reusable(dest: Path, key: str) -> bool:
    """Whether the tree ``dest`` was built from the inputs ``key``: its marker says so and the tree
    is there. A marker whose tree was removed said "reused" for ever (``--out`` then failed in cp,
    the demo's publish on a missing folder, and no re-run built it again: pr19b finding 18)."""
    done = _marker(dest)
    return dest.is_dir() and done.is_file() and cachekey.read_marker(done, key) is not None


def keep_only(dest: Path, release: str, say: Say = lambda _: None) -> None:
    """One tree per release is kept: the others go with their markers (a marker left behind named a
    tree that was gone). A running build's temporaries (``.<tree>.<pid>.….tmp``) are not touched; a
    killed one's go: only a build of the same inputs reclaimed them (``atomic_dir``), and the archive
    moves on, so the half trees (~340 MB each) of older inputs stayed in the cache for ever. A tree a
    run reads (``reading``: a publish, a copy to ``--out``) is kept, said in one line with its
    reader's pid, for a later build to remove."""
    kept = set()
    for old in dest.parent.glob(f"debian{release}-*"):
        if old.name == dest.name:
            continue
        try:  # removed under an exclusive lock: a reader waits for it, or holds the tree first
            fd = lock_dir(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no folder (a file, a link): nobody reads it as a tree
            fd = -1
        if fd is None:
            say(f"kept {old.name}: process {_holders(old)} reads it (a later build removes it)")
            kept.add(old.name)
            continue
        try:
            remove_tree(old)
        finally:
            if fd >= 0:
                os.close(fd)
    reclaim_stale_in(dest.parent)
    for marker in dest.parent.glob(f".debian{release}-*.json"):
        if marker != _marker(dest) and marker.name[1:-5] not in kept:
            marker.unlink(missing_ok=True)


def _holders(tree: Path) -> str:
    """The pids that hold a lock of the folder ``tree``, for the one line that names them."""
    try:
        fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return "unknown"
    try:
        return ", ".join(map(str, lock_holders(fd))) or "unknown"
    finally:
        os.close(fd)


@contextmanager
def reading(tree: Path, say: Say = lambda _: None) -> Iterator[Path]:
    """Hold the cached tree ``tree`` while it is read (a publish, a copy to ``--out``): a build of
    other inputs then keeps it (``keep_only``) instead of removing it under the reader. A removal
    under way is waited for (one line with the remover's pid); BuildError if it took the tree."""
    try:
        fd = lock_dir(tree, fcntl.LOCK_SH | fcntl.LOCK_NB)
        if fd is None:
            say(f"waiting for process {_holders(tree)}, which removes {tree}")
            fd = lock_dir(tree, fcntl.LOCK_SH)
    except FileNotFoundError:
        fd = None
    if fd is not None and os.fstat(fd).st_nlink == 0:  # removed while this run waited
        os.close(fd)
        fd = None
    if fd is None:
        raise BuildError(
            f"{tree}: removed by a concurrent build of other inputs before this run could read it",
            hint="run the same command again: it builds the tree anew",
        )
    try:
        yield tree
    finally:
        os.close(fd)


@contextmanager
def _in_root(tree: Path, hint: str) -> Iterator[inroot.Root]:
    """``tree`` opened as an ``inroot.Root``; an OSError on a path of it as one line naming it: it
    comes from what a package left there (a file where a folder should be, a FIFO, ...)."""
    try:
        with inroot.Root(tree) as root:
            yield root
    except OSError as e:
        _reraise_full(e, tree if e.filename is None else tree / os.fsdecode(e.filename))
        where = f"/{e.filename}" if e.filename is not None else "?"
        raise IntegrityError(f"{tree}: {where}: {e.strerror or e}", hint=hint) from None


def _reraise_full(e: OSError, path: Path) -> None:
    """A full disk or inode table under the cache (ENOSPC, EDQUOT) as the CLI's one line naming
    ``path`` and saying to free space: it was an IntegrityError blaming the package being unpacked."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise OSError(e.errno, e.strerror, str(path)) from None


def _copy_in(tree: Path, folders: list[tuple[Path, str]]) -> None:
    """Our host folders (kernel modules, the overlay) merged into the tree at their places."""
    hint = "a package left this path unusable for our files; the tree is not kept"
    with _in_root(tree, hint) as root:
        for src, rel in folders:
            root.copy_in(src, rel)


def _unpack(tree: Path, files: list[debpkg.DebPackage]) -> None:
    """Every package's data, onto a merged-/usr skeleton, every path resolved inside the tree (a
    package's symlink leads into the tree, never out: ``inroot``); directory symlinks are kept."""
    with _in_root(tree, "a package left this path unusable; the tree is not kept") as root:
        # The root comes from mkdtemp (0700) and a package's ``./`` keeps an existing directory as it
        # is (as dpkg): the skeleton sets it, and every directory it makes, 0755 root:root itself.
        for d in (
            "",
            "usr",
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "usr/lib64",
            "proc",
            "sys",
            "dev",
            "run",
            "tmp",
        ):
            root.mkdir(d, reset=True)
        for link in ("bin", "sbin", "lib", "lib64"):
            root.symlink(link, f"usr/{link}")
        for deb in files:
            _unpack_deb(root, deb)
        for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", ".debs"):
            root.mkdir(d)
        for f in ("var/lib/dpkg/status", "var/lib/dpkg/available"):
            root.write(f, b"", 0o644)
        root.write(
            "usr/sbin/policy-rc.d",
            b"#!/bin/sh\n# no service starts while the tree is built\nexit 101\n",
            0o755,
        )
        root.mkdir("tmp", 0o1777, reset=True)


def _unpack_deb(root: inroot.Root, deb: debpkg.DebPackage) -> None:
    """One package's data.tar into ``root``, as dpkg would put it there (numeric owners, modes)."""
    name, bad = "?", None
    # headers bounded as every tar reader of the toolkit bounds them: a GNU long-name or PAX header
    # declaring 1 GiB (1 MB of gzip) was read into memory whole (a MemoryError traceback)
    tarinfo = bounded_tarinfo(f"package {deb.name} ({deb.path.name})")
    with streamed(["dpkg-deb", "--fsys-tarfile", deb.path]) as tool:
        try:
            with tarfile.open(fileobj=tool.stdout, mode="r|", bufsize=1 << 20, tarinfo=tarinfo) as tar:
                for m in tar:
                    name = m.name
                    _unpack_member(root, deb, tar, m)
        except OSError as e:
            _reraise_full(e, root.path / (inroot.clean(name) or ""))
            why = e.strerror or str(e)
            if e.errno == errno.ENOTEMPTY:  # strerror alone did not say what was refused (pr17c 11)
                why = "it would replace a directory that is not empty, which dpkg refuses too"
            raise _member_error(deb, name, why) from None
        except tarfile.TarError as e:
            bad = _member_error(deb, name, f"bad data archive: {e}")  # unless dpkg-deb says why
    if tool.code != 0:  # a .deb dpkg-deb cannot read: its reason, not tar's 'empty file' after it
        raise IntegrityError(
            f"package {deb.name} ({deb.path.name}): dpkg-deb --fsys-tarfile failed: "
            f"{tool.why or f'exit {tool.code}'}",
            hint="the package file is damaged: delete it from the cache and fetch it again",
        )
    if bad is not None:
        raise bad


#: uid/gid a member may carry: 2^32 - 1 is "no id" to chown, beyond is no id at all
_MAX_ID = (1 << 32) - 2


def _unpack_member(
    root: inroot.Root, deb: debpkg.DebPackage, tar: tarfile.TarFile, m: tarfile.TarInfo
) -> None:
    rel = inroot.clean(m.name)
    if rel is None:
        raise _member_error(deb, m.name, "the name leaves the tree (absolute or '..')")
    if rel == "" and not m.isdir():
        raise _member_error(deb, m.name, "the tree's root can only be a directory")
    if not (0 <= m.uid <= _MAX_ID and 0 <= m.gid <= _MAX_ID):  # chown raised OverflowError (pr17c 9)
        raise _member_error(deb, m.name, f"owner id {m.uid}:{m.gid} is out of range (0..{_MAX_ID})")
    if m.issparse():  # dpkg's tar reader has no sparse type; tarfile writes the holes out as zeros
        raise _member_error(
            deb, m.name, f"a sparse member ({m.size} B of holes and data), which dpkg refuses"
        )
    if m.isdir():
        root.mkdir(rel, m.mode & 0o7777, m.uid, m.gid)
    elif m.isreg():
        src = tar.extractfile(m)
        assert src is not None
        root.write(rel, src, m.mode & 0o7777, m.uid, m.gid)
    elif m.issym():
        root.symlink(rel, m.linkname, m.uid, m.gid)
    elif m.islnk():
        source = inroot.clean(m.linkname)
        if not source:
            raise _member_error(deb, m.name, f"the hard link's target {m.linkname!r} leaves the tree")
        root.hardlink(rel, source)
    elif m.isfifo():
        root.fifo(rel, m.mode & 0o7777, m.uid, m.gid)
    else:
        raise _member_error(deb, m.name, "a device node (packages ship none; dpkg makes them)")


def _member_error(deb: debpkg.DebPackage, member: str, why: str) -> IntegrityError:
    return IntegrityError(
        f"package {deb.name} ({deb.path.name}): member {member!r}: {why}",
        hint="the package is not installable as shipped; it is not unpacked",
    )


def _install(tree: Path, debdir: Path, files: list[debpkg.DebPackage], epoch: int, kver: str | None) -> None:
    """dpkg in a chroot inside a private mount + PID namespace: its mounts vanish with it."""
    rel = {d.name: f"/.debs/{d.path.name}" for d in files}
    first = [rel[n] for n in ("base-passwd", "base-files") if n in rel]
    env = (
        "/usr/bin/env -i PATH=/usr/sbin:/usr/bin HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive "
        f"DEBCONF_NONINTERACTIVE_SEEN=true SOURCE_DATE_EPOCH={epoch}"
    )
    q = shlex.quote
    with _in_root(tree, "a package left this mount point unusable; the tree is not kept") as root:
        for d in ("proc", "dev", ".debs"):  # mount points: a package's symlink there is refused
            if not root.is_dir(d):
                raise IntegrityError(
                    f"{tree}: /{d} is not a directory (a package replaced it)",
                    hint="the packages are not installable as shipped; the tree is not kept",
                )
    lines = [
        "set -eu",
        f"T={q(str(tree))}",
        'mount -t proc proc "$T/proc"',
        'mount -t tmpfs -o mode=0755 dev "$T/dev"',
        *[f'mknod -m 666 "$T/dev/{n}" c {a} {b}' for n, a, b in DEV_NODES],
        'ln -s /proc/self/fd "$T/dev/fd"',
        f'mount --bind {q(str(debdir))} "$T/.debs"',
        'mount -o remount,bind,ro "$T/.debs"',
        f'c() {{ chroot "$T" {env} "$@"; }}',
        *[f"c dpkg --force-depends --install {q(f)}" for f in first],
        "c dpkg --force-depends --force-overwrite --unpack " + " ".join(q(r) for r in sorted(rel.values())),
        "c dpkg --configure -a",
        "c systemctl enable systemd-networkd.service cernvm-ssh-hostkeys.service",
        # the initrd brought the network up before switch_root (the OS root is read over it): waiting
        # for networkd to call the link online only timed out (2 min, a failed unit) in the e2e boot
        "c systemctl mask systemd-networkd-wait-online.service",
        *([f"c depmod {q(kver)}"] if kver else []),
        'umount "$T/.debs"',
    ]
    script = "\n".join(lines) + "\n"
    log = install_log(tree)
    argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "sh", "-c", script]
    try:
        with log.open("wb") as out:
            code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    except BaseException:  # Ctrl-C, SIGTERM: the tree goes (atomic_dir), its log with it
        log.unlink(missing_ok=True)
        raise
    if code != 0:
        _raise_if_full(tree, log)
        kept = cache_dir("os") / "debian-build-failed.log"
        shutil.move(log, kept)
        lines = [ln for ln in kept.read_text(errors="replace").splitlines() if ln.strip()]
        why = next(
            (ln.strip() for ln in reversed(lines) if "error" in ln.lower() and "processing" not in ln), ""
        )
        raise BuildError(
            f"installing the Debian packages failed (exit {code}): {why or lines[-1] if lines else '?'}",
            hint=f"dpkg's whole output is in {kept}; the tree is not kept",
        )
    log.unlink()
    _check_installed(tree, len(files))


#: free room under which a failed dpkg is taken for a full disk when its log does not say so (the
#: log is on that disk: dpkg's error may be what could not be written)
FULL_BELOW = 16 << 20
#: what dpkg (and a maintainer script) prints for a full disk or quota
_FULL_SAID = (os.strerror(errno.ENOSPC).encode(), os.strerror(errno.EDQUOT).encode())


def _raise_if_full(tree: Path, log: Path) -> None:
    """dpkg failed on a full disk (or one out of inodes): the CLI's one line naming the cache folder
    and saying to free space, with nothing left behind (the tree goes with ``atomic_dir``, its log
    here). It was "installing the Debian packages failed", its reason the log's last line ("Unpacking
    zlib1g ..."), and the log kept on the full disk as ``debian-build-failed.log``."""
    try:
        st = os.statvfs(tree)
        said = _says(log, _FULL_SAID)
    except OSError:
        return
    # dpkg runs as root, which may fill the blocks a file system keeps back from other users (ext4's
    # 5 %): a disk with none left for them still had room for dpkg, and a failure of its own there
    # was called a full disk, its log (the one account of it) deleted
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    if said or free * st.f_frsize < FULL_BELOW or (st.f_files and st.f_favail == 0):
        log.unlink(missing_ok=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tree.parent))


def _says(path: Path, phrases: tuple[bytes, ...]) -> bool:
    """Whether the file holds one of ``phrases``, read in bounded pieces (a script's line may be long)."""
    keep = max(map(len, phrases))
    with path.open("rb") as f:
        last = b""
        while piece := f.read(1 << 20):
            text = last + piece
            if any(p in text for p in phrases):
                return True
            last = text[-keep:]
    return False


def install_log(tree: Path) -> Path:
    """Where dpkg's output goes while it installs into ``tree``: beside it, named as a temporary of
    the same build (``.<dest>.<pid>.<random>log.tmp``), so the next build of that tree reclaims the
    log of a killed one as it does the half tree (``fsutil.reclaim_stale``); ``.<tree>.log`` stayed."""
    return tree.with_name(f"{tree.name.removesuffix('.tmp')}log.tmp")


def _check_installed(tree: Path, count: int) -> None:
    """Every one of the ``count`` packages installed, as dpkg's status file in the tree says; the
    packages' mount point removed. Both are paths packages and their scripts could have changed."""
    with _in_root(tree, "a package or its scripts left this path unusable; the tree is not kept") as root:
        root.rmdir(".debs")
        status = (root.read("var/lib/dpkg/status") or b"").decode(errors="replace")
    states = [ln.split(":", 1)[1].strip() for ln in status.splitlines() if ln.startswith("Status:")]
    bad = [s for s in states if s != "install ok installed"]
    if bad or len(states) != count:
        raise BuildError(f"dpkg left {len(bad)} of {count} packages not installed ({len(states)} known)")


def _scrub(tree: Path, epoch: int) -> None:
    """Remove what records one installation's moment or machine; fix every time to ``epoch``. Paths
    are resolved inside the tree (``inroot``): a package's ``etc/ssh -> /etc/ssh`` is the tree's own."""
    with _in_root(tree, "a package or its scripts left this path unusable; the tree is not kept") as root:
        for rel in VOLATILE:
            root.remove(rel)
        for d, pattern in (
            ("etc/ssh", "ssh_host_*"),  # each instance gets its own (the pinned one from the user data)
            ("var/lib/dpkg", "*-old"),
            ("var/cache/debconf", "*-old"),
            ("var/log/apt", "*"),
        ):
            for name in fnmatch.filter(root.listdir(d), pattern):
                root.remove(f"{d}/{name}")
        root.write("etc/machine-id", b"", 0o444)  # empty: systemd makes one at first boot
        day = str(epoch // 86400)
        for rel in ("etc/shadow", "etc/shadow-"):
            text = root.read(rel)
            if text is not None:
                rows = [ln.split(b":") for ln in text.splitlines()]  # field 3: the last change's day
                new = [[*r[:2], day.encode() if r[2] else b"", *r[3:]] if len(r) > 2 else r for r in rows]
                root.rewrite(rel, b"".join(b":".join(r) + b"\n" for r in new))
    pycs.timestamp_pycs(tree, epoch)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def check_new_folder(dest: Path) -> None:
    """``dest`` may take a copy of a tree: it is missing or an empty directory (not a symlink). The
    copy replaces it whole: ``--out ~/work`` deleted what that folder held (pr19b finding 7)."""
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise BuildError(
            f"{dest}: already exists and is not an empty directory",
            hint="give a new folder, or remove this one first (an earlier copy): the tree is copied whole",
            where="--out",
        )
    try:  # a folder can be made there: a file as its parent or /proc was a traceback after the build
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent))
    except OSError as e:
        raise BuildError(
            f"{dest}: cannot make this folder: {e.strerror}",
            hint="give a folder in a place you can write to",
            where="--out",
        ) from None


@contextmanager
def out_folder(dest: Path) -> Iterator[None]:
    """``--out DEST`` held for one run, from its check (``check_new_folder``, before the build) to
    the end of its copy: a second run naming it is refused at once, naming the holder's pid. Two runs
    at once both found it empty and the second's copy replaced the first's whole."""
    check_new_folder(dest)

    def refuse(holder: str) -> None:
        raise BuildError(
            f"{dest}: another run is making its copy there ({holder})",
            hint="wait for it to finish, or give another folder",
            where="--out",
        )

    with held_lock(
        dest.parent / f".{dest.name}.out.lock", f"copy of an OS tree to {dest}", refuse, remove=True
    ):
        check_new_folder(dest)  # (a run that held it until just now made its copy)
        yield


def copy_tree(src: Path, dest: Path) -> None:
    """A copy of a built tree at ``dest``, a new folder (``check_new_folder``), made whole or not at
    all: owners, modes, times, xattrs."""
    check_new_folder(dest)
    with atomic_dir(dest) as tmp:
        # "--": 'os --out=-a/b' made the scratch '-a/.b…', which cp read as its options (pr26c 12)
        run(["cp", "-a", "--reflink=auto", "--", f"{src}/.", str(tmp)])
