"""Running external tools: one place that logs the command and turns failures into ToolErrors."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

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
}


def which(tool: str) -> str:
    """The absolute path of ``tool``, or a ToolError that names the Debian package to install."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not found:
        pkg = TOOL_PACKAGES.get(tool, tool)
        raise ToolError(
            f"required tool '{tool}' is not installed",
            hint=f"install it with 'apt-get install {pkg}' (or run 'make deps')",
        )
    return found


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
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
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
            hint=f"command was: {shlex.join(argv)}",
        )
    return proc
