"""Running external tools: one place that logs the command and turns failures into ToolErrors."""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import ToolError

log = logging.getLogger(__name__)

#: Debian package that provides each tool, for the hint when it is missing.
TOOL_PACKAGES: dict[str, str] = {
    "xorriso": "xorriso",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mformat": "mtools",
    "syslinux": "syslinux",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "umoci": "umoci",
    "skopeo": "skopeo",
    "gpg": "gnupg",
    "cpio": "cpio",
    "xz": "xz-utils",
    "zstd": "zstd",
    "lz4": "lz4",
    "createrepo_c": "createrepo-c",
    "rpmbuild": "rpm",
    "dpkg-deb": "dpkg",
    "apt-ftparchive": "apt-utils",
    "mkfs.ext4": "e2fsprogs",
    "hugo": "hugo",
    "chromium": "chromium",
    # a tool whose package has another name was "apt-get install <tool>": no such package (pr28b 5)
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-query": "dpkg",
    "ldd": "libc-bin",
    "busybox": "busybox-static",  # the initrd needs the static one
    "mke2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "fusermount3": "fuse3",
    "rpm": "rpm",
    "rpmkeys": "rpm",
    "virsh": "libvirt-clients",
    "ssh": "openssh-client",
    "scp": "openssh-client",
    "openssl": "openssl",
    "gpgconf": "gpgconf",
    "git": "git",
    "cp": "coreutils",
}


def qemu_file(path: str | os.PathLike[str]) -> str:
    """``path`` as a file name for ``qemu-img``: absolute. qemu reads a name whose first part holds a
    ':' as a protocol (``nbd:``, ``json:``, ``ssh:``...): a relative 'b:1/x.qcow2' (an ``--out`` folder,
    a file given to ``images add``) was "Unknown protocol 'b'" (pr26c 9). An absolute name begins
    with '/', before any ':'."""
    return os.path.abspath(path)


#: where a tool is also looked for when $PATH does not find it (a user's $PATH often lacks the sbin
#: folders: mkfs.ext4); the tool then runs with them after its $PATH, for the tools it runs itself
SYSTEM_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def which(tool: str) -> str:
    """The absolute path of ``tool``, or a ToolError that names the Debian package to install."""
    found = shutil.which(tool) or shutil.which(tool, path=os.pathsep.join(SYSTEM_PATH))
    if not found:
        pkg = TOOL_PACKAGES.get(tool, tool)
        raise ToolError(
            f"required tool '{tool}' is not installed",
            hint=f"install it with 'apt-get install {pkg}' (or run 'make deps')",
        )
    return found


def _child_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """The environment of a tool run (None: this process's), whose $PATH ends with ``SYSTEM_PATH``:
    ``which`` may have found the tool there only, and a tool runs others by $PATH (syslinux runs
    mtools): with $PATH=/usr/local/bin it found syslinux in /usr/bin, which then failed "failed to
    create ldlinux.sys", naming neither mtools nor $PATH."""
    path = (env or {}).get("PATH", os.environ.get("PATH", ""))
    missing = [d for d in SYSTEM_PATH if d not in path.split(os.pathsep)]
    if env is None and not missing:
        return None
    full = {**os.environ, **(env or {})}
    full["PATH"] = os.pathsep.join([p for p in (path,) if p] + missing)
    return full


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` (no shell). On failure raise a ToolError carrying the tool's last stderr line.

    ``pass_fds`` stay open in the child (e.g. a pipe it reads a secret from as ``/dev/fd/N``)."""
    argv = [os.fspath(c) for c in cmd]
    argv[0] = which(argv[0]) if os.sep not in argv[0] else argv[0]
    full_env = _child_env(env)
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=full_env,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            check=False,
            pass_fds=tuple(pass_fds),
        )
    except subprocess.TimeoutExpired as e:
        raise ToolError(
            f"'{Path(argv[0]).name}' did not finish within {timeout:g} s",
            hint=f"command was: {shlex.join(argv)}",
        ) from e
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
        last = err[-1] if err else f"exit status {proc.returncode}"
        raise ToolError(
            f"'{Path(argv[0]).name}' failed: {last}",
            hint=_full_disk_hint(last) + f"command was: {shlex.join(argv)}",
        )
    return proc


#: what a tool says of a full disk or quota (its strerror, as mcopy and qemu-img print it)
_FULL = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


def _full_disk_hint(last: str) -> str:
    """The start of a failed tool's hint when its last line says a disk is full: an image build whose
    output filled ended "'mcopy' failed: error in fat_write: No space left on device" (or qemu-img's)
    with only the command line as a hint (pr28a finding 13)."""
    if any(text in last for text in _FULL):
        return "the disk it writes to is full: free space there (or choose another --out), then run again; "
    return ""


@dataclass
class Streamed:
    """A running tool whose stdout is read as it comes (``streamed``); ``code`` and ``why`` (the
    last line of its stderr, '' when it wrote none) are set once it has been waited for."""

    proc: subprocess.Popen[bytes]
    stdout: IO[bytes]
    code: int = 0
    why: str = ""


@contextmanager
def streamed(cmd: Sequence[str | os.PathLike[str]]) -> Iterator[Streamed]:
    """Run ``cmd`` (resolved as ``run`` does) with its stdout to read while it runs, for output too
    big to hold; its stderr goes to a temporary file (a pipe read only at the end could fill and
    stall the tool). On leaving, also by an exception: stdout is closed, the tool waited for, and
    ``code``/``why`` set; the caller judges them (a reader that stops early may ``proc.kill()``)."""
    argv = [os.fspath(c) for c in cmd]
    argv[0] = which(argv[0]) if os.sep not in argv[0] else argv[0]
    log.debug("run: %s", shlex.join(argv))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=_child_env(None))
        assert proc.stdout is not None
        s = Streamed(proc, proc.stdout)
        try:
            yield s
        finally:
            proc.stdout.close()
            s.code = proc.wait()
            err.seek(max(0, err.seek(0, os.SEEK_END) - 400))
            lines = err.read().decode(errors="replace").strip().splitlines()
            s.why = lines[-1] if lines else ""
