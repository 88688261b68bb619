"""The demo OS: busybox, the dropbear SSH server and their libraries, plus an init that applies user data.

Everything comes from verified Debian packages (see ``debpkg``); libraries are resolved by reading the
ELF dynamic sections inside the staging tree, so the result does not depend on the build host's own
libraries. Timestamps are fixed so the same packages give the same tree, and so the same repository
objects when it is published.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import debpkg, elf
from ..errors import BuildError
from ..fsutil import atomic_dir
from ..paths import cache_dir, data_dir

PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "libtomcrypt1",
    "libtommath1",
    "libgmp10",
    "zlib1g",
    "libcrypt1",
    "libc6",
)
PROGRAMS = ("usr/sbin/dropbear", "usr/bin/dropbearkey", "usr/bin/dropbearconvert")
LIBDIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64")
ROOTFS = data_dir("demo") / "rootfs"
#: 2026-01-01T00:00:00Z: the demo's fixed timestamp when SOURCE_DATE_EPOCH is not set.
DEFAULT_EPOCH = 1767225600


@dataclass(frozen=True)
class DemoOS:
    root: Path
    release: str
    packages: tuple[debpkg.DebPackage, ...]


def _resolve_in(staging: Path, rel: str) -> Path:
    """Follow symlinks of ``rel`` inside ``staging`` (absolute targets are staging-relative)."""
    path = staging / rel
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        path = staging / target.lstrip("/") if target.startswith("/") else path.parent / target
    raise BuildError(f"symlink loop at {rel} in the demo OS staging tree")


def _find_library(staging: Path, name: str) -> Path:
    for d in LIBDIRS:
        candidate = staging / d / name
        if candidate.exists() or candidate.is_symlink():
            return _resolve_in(staging, f"{d}/{name}")
    # The soname link is made by ldconfig, which never ran in the staging tree: match by soname.
    for d in LIBDIRS:
        for candidate in sorted((staging / d).glob(f"{name}*")):
            if candidate.is_file() and elf.is_elf(candidate) and elf.read(candidate).soname == name:
                return candidate
    raise BuildError(
        f"library {name} is in none of the demo OS packages", hint=f"add its package to {PACKAGES}"
    )


def _copy_with_libraries(staging: Path, dest: Path, programs: tuple[str, ...]) -> None:
    libdir = dest / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True, exist_ok=True)
    todo = [staging / p for p in programs]
    for rel in programs:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_resolve_in(staging, rel), dest / rel)
    seen: set[str] = set()
    while todo:
        info = elf.read(todo.pop())
        names = list(info.needed)
        if info.interpreter:
            names.append(Path(info.interpreter).name)
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            real = _find_library(staging, name)
            shutil.copy2(real, libdir / real.name)
            if real.name != name:
                (libdir / name).symlink_to(real.name)
            todo.append(real)


def _install_busybox(staging: Path, dest: Path) -> None:
    busybox = dest / "usr/bin/busybox"
    shutil.copy2(staging / "bin/busybox", busybox)
    listing = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    for applet in sorted(listing.split()):
        # Merged /usr: bin/x and sbin/x live in usr/bin and usr/sbin.
        rel = applet if applet.startswith("usr/") else f"usr/{applet}"
        link = dest / rel
        if link.exists() or link.is_symlink() or link.name == "busybox":
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(busybox, link.parent))


def _skeleton(dest: Path, release: str) -> None:
    for d in ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "proc", "sys", "dev", "run",
              "tmp", "mnt", "root", "home/cernvm", "var/log", "etc/dropbear"):  # fmt: skip
        (dest / d).mkdir(parents=True, exist_ok=True)
    for link, target in (
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ):
        (dest / link).symlink_to(target)
    (dest / "usr/lib64/ld-linux-x86-64.so.2").symlink_to("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (dest / "var/run").symlink_to("../run")
    shutil.copytree(ROOTFS, dest, symlinks=True, dirs_exist_ok=True)
    (dest / "etc/cernvm-demo-release").write_text(f"CernVM demo OS {release}\n")
    (dest / "etc/os-release").write_text(
        'NAME="CernVM demo OS"\nID=cernvm-demo\nID_LIKE=cernvm\n'
        f'VERSION_ID="{release}"\nPRETTY_NAME="CernVM demo OS {release}"\n'
        'HOME_URL="https://cvmfs.io/"\n'
    )


#: the entries whose mode is not the rule's (directories 0755, files 0644 or 0755 when executable)
MODES = {"tmp": 0o1777, "root": 0o700, "etc/shadow": 0o600}


def _normalise(root: Path, epoch: int) -> None:
    """Every entry's time is ``epoch`` and its mode the rule's: what mkdir, write_text and the copy of
    the shipped overlay (installed under the installer's umask) made depends on the builder's umask
    (umask 077 published a 0700 /usr/bin and a 0600 /etc/passwd: another tree, and one the guest's
    user could not use). A file's setuid/setgid bits come from its package and stay."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, _mode(os.path.relpath(path, root), st.st_mode))
            os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.chmod(root, 0o755)
    os.utime(root, (epoch, epoch))


def _mode(rel: str, st_mode: int) -> int:
    if rel in MODES:
        return MODES[rel]
    if stat.S_ISDIR(st_mode):
        return 0o755
    return (st_mode & 0o6000) | (0o755 if st_mode & 0o111 else 0o644)


def build_demo_os(
    dest: Path, *, release: str = "1", cache: Path | None = None, epoch: int = DEFAULT_EPOCH
) -> DemoOS:
    """Build the demo OS tree at ``dest`` (replaced atomically) and say what went into it; every file's
    time is ``epoch``."""
    debs = cache or cache_dir("debs")
    packages = tuple(debpkg.fetch_many(PACKAGES, debs))
    with tempfile.TemporaryDirectory(prefix="demo-os-staging-") as tmp, atomic_dir(dest) as out:
        staging = Path(tmp)
        for pkg in packages:
            debpkg.extract(pkg, staging)
        _skeleton(out, release)
        _install_busybox(staging, out)
        _copy_with_libraries(staging, out, PROGRAMS)
        _normalise(out, epoch)
    return DemoOS(root=dest, release=release, packages=packages)
