"""SSH to instances with paramiko: the host key is pinned (launch generated it), never learned.

Commands run over an exec channel and return the remote exit status. Copies use ``cat`` over exec
channels rather than SFTP because the minimal guests (busybox + dropbear) have no sftp-server.
"""

from __future__ import annotations

import base64
import logging
import os
import select
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import paramiko

from ..errors import SSHError

# paramiko logs a traceback for every refused or reset handshake; while a guest boots those are
# expected (readiness retries them) and the failures that matter become SSHErrors.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA..." pinned public key
    client_key: Path
    via: tuple[str, ...] = ()  # a command whose stdin/stdout reach host:port (``ssh -W`` on a hypervisor)


class NotYet(Exception):
    """The guest does not answer SSH yet (refused, reset, banner timeout): try again later."""


def connect(
    t: Target, *, timeout: float = 10.0, heard: Callable[[], None] | None = None
) -> paramiko.SSHClient:
    """An authenticated client; SSHError on a wrong host key or refused login, NotYet while booting.
    ``heard()`` is called once, when the first bytes from the guest's side (its SSH banner) arrive."""
    client = paramiko.SSHClient()
    keytype, b64 = t.host_key.split()[:2]
    hostspec = t.host if t.port == 22 else f"[{t.host}]:{t.port}"
    client.get_host_keys().add(hostspec, keytype, paramiko.PKey.from_type_string(keytype, _b64(b64)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        pkey = paramiko.Ed25519Key.from_private_key_file(str(t.client_key))
    except (OSError, paramiko.SSHException) as e:
        raise SSHError(f"cannot read the instance's login key: {e}", where=str(t.client_key)) from None
    sock = _Tunnel(t.via) if t.via else _direct(t, timeout)
    sock.heard = heard
    try:
        _login(client, t, pkey, timeout, sock)
    except BaseException:
        sock.close()  # a tunnel's: its ssh process too
        raise
    return client


class _Heard(socket.socket):
    """A socket that calls ``heard()`` when its first bytes arrive. On slirp's (or a hypervisor's)
    forward the connection is accepted at once; bytes come only once the guest's sshd answers, and
    from then on the guest is busy with this login (under TCG the key exchange alone costs it about
    a second of CPU): readiness then starts no other attempt next to it."""

    heard: Callable[[], None] | None = None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if data and self.heard is not None:
            heard, self.heard = self.heard, None
            heard()
        return data


def _direct(t: Target, timeout: float) -> _Heard:
    """A TCP connection to ``t`` (what paramiko would open itself), NotYet when there is none yet."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)[0]
        sock = _Heard(family, kind, proto)
    except OSError as e:
        raise NotYet(str(e) or type(e).__name__) from None
    try:
        sock.settimeout(timeout)
        sock.connect(addr)
    except OSError as e:
        sock.close()
        raise NotYet(str(e) or type(e).__name__) from None
    return sock


def _login(client: paramiko.SSHClient, t: Target, pkey: paramiko.PKey, timeout: float, sock: Any) -> None:
    try:
        client.connect(
            t.host, port=t.port, username=t.user, pkey=pkey, timeout=timeout, banner_timeout=timeout,
            auth_timeout=timeout, look_for_keys=False, allow_agent=False, sock=sock,
        )  # fmt: skip
    except paramiko.BadHostKeyException as e:
        client.close()
        raise SSHError(
            f"host key of {t.host}:{t.port} is {e.key.get_name()} {e.key.fingerprint}, not the one launch "
            "generated for this instance",
            hint="something else answers on this address (port reused?); not connecting",
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise SSHError(
            f"{t.user}@{t.host}:{t.port} refused the instance's key",
            hint="the image may not apply ssh_authorized_keys for this user; try 'user@NAME'",
        ) from None
    except (OSError, EOFError, paramiko.SSHException) as e:
        client.close()
        raise NotYet(str(e) or type(e).__name__) from None


class _Tunnel(_Heard):
    """A socket whose other end is the stdin and stdout of ``argv`` (``ssh -W`` on a hypervisor).

    Not paramiko's ProxyCommand: its ``recv`` waits until the whole requested size arrived or the
    timeout passed, and at the command's end of file it spins in select() until then. While a
    guest boots, every ``ssh -W`` that the hypervisor's forward closed burnt a CPU for the attempt's
    whole 10 s timeout (17.7 CPU seconds in one remote create at load ~10, taken from the booting
    guest), and the next attempt started only after it. A socket pair gives paramiko a real socket:
    reads return what is there, and ``b""`` at the end, which paramiko takes as the connection closed."""

    def __init__(self, argv: tuple[str, ...]) -> None:
        mine, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.DEVNULL
            )
        except OSError as e:
            mine.close()
            raise SSHError(f"cannot run {argv[0]}: {e.strerror}", hint="install OpenSSH's client") from None
        finally:
            theirs.close()
        super().__init__(mine.family, mine.type, mine.proto, fileno=mine.detach())

    def close(self) -> None:
        super().close()  # the command reads its end of file and ends; a terminate makes sure
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def run(
    client: paramiko.SSHClient,
    command: str,
    *,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
) -> int:
    """Run ``command``; stream its output to ``stdout``/``stderr``; return its exit status."""
    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session()
    chan.exec_command(command)
    if stdin is not None:
        while block := stdin.read(1 << 16):
            chan.sendall(block)
        chan.shutdown_write()
    else:
        chan.shutdown_write()
    while True:
        got = False
        if chan.recv_ready():
            data = chan.recv(1 << 16)
            got = bool(data)
            if stdout is not None:
                stdout.write(data)
                stdout.flush()
        if chan.recv_stderr_ready():
            data = chan.recv_stderr(1 << 16)
            got = got or bool(data)
            if stderr is not None:
                stderr.write(data)
                stderr.flush()
        if not got:
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            select.select([chan], [], [], 0.2)
    return chan.recv_exit_status()


def put(
    client: paramiko.SSHClient, src: Path, dest: str, *, progress: Callable[[int], None] | None = None
) -> None:
    mode = src.stat().st_mode & 0o777
    with open(src, "rb") as f:
        reader = _Counting(f, progress)
        # "--": a name beginning with '-' ('vm:-notes.txt') is chmod's file, not its options
        cmd = f"cat > {shlex.quote(dest)} && chmod {mode:o} -- {shlex.quote(dest)}"
        code = run(client, cmd, stdin=reader, stderr=_Sink())  # type: ignore[arg-type]
    if code != 0:
        raise SSHError(
            f"cannot write {dest} on the instance (exit {code})", hint="check the path and its folder"
        )


class _Counting:
    def __init__(self, f: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self.f, self.progress, self.done = f, progress, 0

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.done += len(data)
        if self.progress:
            self.progress(self.done)
        return data


class _Sink:
    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return self.buf.decode(errors="replace").strip().splitlines()[-1:][0] if self.buf.strip() else ""


def interactive(client: paramiko.SSHClient, command: str | None = None) -> int:
    """A shell (or ``command``) on a pty, with the local terminal in raw mode; returns the exit status."""
    import termios  # deliberate lazy import: POSIX terminals, only for interactive shells
    import tty

    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session()
    size = os.get_terminal_size(sys.stdin.fileno())
    chan.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns, height=size.lines)
    if command:
        chan.exec_command(command)
    else:
        chan.invoke_shell()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        while True:
            ready, _, _ = select.select([chan, fd], [], [])
            if chan in ready:
                data = chan.recv(1 << 16)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if fd in ready:
                data = os.read(fd, 1024)
                if not data:
                    break
                chan.sendall(data)
    except OSError:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return chan.recv_exit_status()


def status(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    """Run ``command``; its exit status and the last line of its stderr."""
    err = _Sink()
    code = run(client, command, stderr=err)  # type: ignore[arg-type]
    return code, err.text()


def get_tree(
    client: paramiko.SSHClient, command: str, into: Path, wanted: Callable[[str], bool]
) -> list[str]:
    """Unpack the tar stream ``command`` writes on its stdout into ``into``; the top-level names.
    Members are checked as data (no absolute paths, no ``..``, no devices, no links out), and a
    member whose top-level name was not asked for (``wanted``) ends the copy: the guest chose it
    (scp's CVE-2019-6111), so nothing of this stream may be placed."""
    import tarfile  # deliberate lazy import: only copies of trees read tar streams

    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session()
    chan.exec_command(command)
    chan.shutdown_write()
    tops: list[str] = []
    try:
        with chan.makefile("rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                top = member.name.split("/", 1)[0]
                if not wanted(top):
                    chan.close()
                    raise SSHError(
                        f"the instance sent {member.name[:200]!r}, which was not asked for",
                        hint="the guest may be compromised; nothing was copied",
                    )
                if top not in tops:
                    tops.append(top)
                tar.extract(member, into, filter="data")
    except tarfile.ReadError:
        pass  # nothing came: the command failed, its status and stderr say why
    except (tarfile.TarError, OSError) as e:
        chan.close()
        raise SSHError(f"cannot unpack what the instance sent: {e}") from None
    err = chan.makefile_stderr("rb").read().decode(errors="replace").strip().splitlines()
    code = chan.recv_exit_status()
    if code != 0:
        raise SSHError(
            f"copy from the instance failed: {err[-1] if err else f'exit {code}'}", hint="check the path"
        )
    return tops
