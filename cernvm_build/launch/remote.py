"""Commands and copies on a running instance, named the way users type them (``[user@]NAME``,
``[user@]NAME:PATH``), over SSH with the instance's pinned host key.
"""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..fsutil import atomic_write
from . import names, ready, ssh


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


def split_user(spec: str) -> tuple[str | None, str]:
    """``user@name`` -> (user, name); ``name`` -> (None, name); UsageError for a user that is no
    user name (one beginning with '-' would be an option of OpenSSH's client, ``ssh -X``)."""
    user, sep, name = spec.rpartition("@")
    return (names.validate_user(user, repr(spec[:100])) if user else None) if sep else None, name


def run(
    conn: Any,
    target: str,
    command: list[str],
    *,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
    home: Path | None = None,
) -> int:
    """Run ``command`` on ``[user@]NAME`` and return its exit status. As OpenSSH, the words are
    joined with spaces and the remote shell parses them; with no command, ``stdin`` is the script.
    ``home``: the launch home, whose instance folder must be the one on record (``ready.target``)."""
    user, name = split_user(target)
    client = ready.connect(conn, name, user, home)
    try:
        if command:
            return ssh.run(client, " ".join(command), stdin=stdin, stdout=stdout, stderr=stderr)
        return ssh.run(client, "sh -s", stdin=stdin, stdout=stdout, stderr=stderr)
    finally:
        client.close()


def capture(conn: Any, target: str, command: list[str], *, home: Path | None = None) -> CommandResult:
    """Run ``command`` and keep its output (for callers that use the result, not a terminal)."""
    out, err = io.BytesIO(), io.BytesIO()
    status = run(conn, target, command, stdout=out, stderr=err, home=home)
    return CommandResult(status, out.getvalue(), err.getvalue())


def interactive(conn: Any, target: str, command: list[str] | None = None, *, home: Path | None = None) -> int:
    """A login shell (or ``command``) on a pty, on the local terminal."""
    user, name = split_user(target)
    client = ready.connect(conn, name, user, home)
    try:
        return ssh.interactive(client, " ".join(command) if command else None)
    finally:
        client.close()


def openssh_argv(
    conn: Any,
    target: str,
    command: list[str],
    *,
    x11: str | None = None,
    tty: bool | None = None,
    home: Path | None = None,
) -> list[str]:
    """The ``ssh`` command line for what paramiko does not do (X11 forwarding): the instance's key,
    its pinned host key in a known_hosts file of the instance's own, nothing learned or asked."""
    user, name = split_user(target)
    ready.connect(conn, name, user, home).close()  # the same checks and one-line errors as every verb
    t = ready.target(conn, name, user, home)
    assert t is not None
    known = t.client_key.parent / "known_hosts"
    hostspec = t.host if t.port == 22 else f"[{t.host}]:{t.port}"
    atomic_write(known, f"{hostspec} {' '.join(t.host_key.split()[:2])}\n".encode(), mode=0o600)
    argv = [
        "ssh", "-i", str(t.client_key), "-p", str(t.port),
        "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if t.via:  # through the hypervisor, as paramiko's sessions (ssh.Target.via)
        argv += ["-o", f"ProxyCommand={shlex.join(t.via).replace('%', '%%')}"]  # ssh expands %
    if x11:
        argv.append(x11)
    if tty is not None:
        argv.append("-t" if tty else "-T")
    # "--" first: nothing from the metadata or the target after it is an option (the user is checked
    # too, ``names.is_user``), and OpenSSH parses no options in the command after the destination
    return [*argv, "--", f"{t.user}@{t.host}", *command]
