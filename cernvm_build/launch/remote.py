"""Commands and copies on a running instance, named the way users type them (``[user@]NAME``,
``[user@]NAME:PATH``), over SSH with the instance's pinned host key.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UsageError
from . import ready, ssh


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


def split_user(spec: str) -> tuple[str | None, str]:
    """``user@name`` -> (user, name); ``name`` -> (None, name)."""
    user, sep, name = spec.rpartition("@")
    return (user or None) if sep else None, name


def run(
    conn: Any,
    target: str,
    command: list[str],
    *,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
) -> int:
    """Run ``command`` on ``[user@]NAME`` and return its exit status. As OpenSSH, the words are
    joined with spaces and the remote shell parses them; with no command, ``stdin`` is the script."""
    user, name = split_user(target)
    client = ready.connect(conn, name, user)
    try:
        if command:
            return ssh.run(client, " ".join(command), stdin=stdin, stdout=stdout, stderr=stderr)
        return ssh.run(client, "sh -s", stdin=stdin, stdout=stdout, stderr=stderr)
    finally:
        client.close()


def capture(conn: Any, target: str, command: list[str]) -> CommandResult:
    """Run ``command`` and keep its output (for callers that use the result, not a terminal)."""
    out, err = io.BytesIO(), io.BytesIO()
    status = run(conn, target, command, stdout=out, stderr=err)
    return CommandResult(status, out.getvalue(), err.getvalue())


def interactive(conn: Any, target: str) -> int:
    """A login shell on the local terminal."""
    user, name = split_user(target)
    client = ready.connect(conn, name, user)
    try:
        return ssh.interactive(client)
    finally:
        client.close()


def copy(conn: Any, source: str, dest: str) -> Path | str:
    """Copy one file between here and ``[user@]NAME:PATH``; returns where it landed."""
    remote_src = ":" in source and not Path(source).exists()
    remote_dest = ":" in dest
    if remote_src == remote_dest:
        raise UsageError(
            "exactly one of SOURCE and DEST must be NAME:PATH", hint="e.g. scp f.txt analysis:/tmp/"
        )
    spec, _, rpath = (source if remote_src else dest).partition(":")
    user, name = split_user(spec)
    client = ready.connect(conn, name, user)
    try:
        if remote_dest:
            local = Path(source)
            if not local.is_file():
                raise UsageError(f"no such file: {source}")
            target = rpath or "."
            if target in (".", "~"):
                target = local.name
            elif target.endswith("/"):
                target = target.rstrip("/") + "/" + local.name
            ssh.put(client, local, target)
            return target
        landed = Path(dest)
        if landed.is_dir():
            landed = landed / Path(rpath).name
        ssh.get(client, rpath, landed)
        return landed
    finally:
        client.close()
