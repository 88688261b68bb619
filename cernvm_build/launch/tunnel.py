"""Reaching an instance on another machine: through the hypervisor the libvirt URI names.

Under user-mode networking QEMU forwards the guest's SSH port on the *hypervisor's* 127.0.0.1, and
a libvirt network's leases are addresses on the hypervisor too. So for a ``qemu+ssh://`` (or
``+libssh``/``+libssh2``) URI every SSH session to an instance goes through an OpenSSH ``ssh -W``
to the same host, user, port and key the URI names, with the same client (the URI's ``command=``,
else ``ssh``: what libvirt's own ssh transport runs), and the hypervisor's host key is checked as the
URI asks: its ``known_hosts=`` file pinned, ``no_verify=1`` taken at its word, else the client's
own known_hosts and configuration.

(libvirt 9.0's in-process ``qemu+libssh://`` transport stalls on replies of a few KiB from Python
(a domain's XML) on Debian 12: use ``qemu+ssh://``, which runs OpenSSH.) The guest's host key stays
pinned at the other end of the tunnel, as for local instances.

Every ``ssh -W`` of one hypervisor shares one SSH connection to it (OpenSSH's ``ControlMaster=auto``,
kept ``ControlPersist`` seconds after the last use, its socket in a 0700 folder of the user's own):
``wait`` makes an attempt about every second while the guest boots, and a fresh login to the
hypervisor each time cost ~0.6 s of CPU (key exchange on both ends) taken from the booting guest on
a busy host; through the shared connection an attempt costs ~0.09 s. Without a usable folder each
``ssh -W`` logs in by itself, as before.

The URI is read back from the connection (``virConnectGetURI`` answers with the client's own URI,
query included, without asking the daemon), so every verb that holds a connection finds its hop.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ConnectError

SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")
#: seconds a shared connection outlives its last tunnel: long enough that a create, its wait and the
#: user's next ssh/scp minutes later do not each pay a login to the hypervisor (~0.3 s, CPU on both ends)
CONTROL_PERSIST = 600
#: the longest socket folder: a socket path has 107 bytes, OpenSSH's name there is 20, and while it
#: makes the socket it adds a 17-byte suffix ("ControlPath too long" would stop every tunnel)
_CONTROL_FOLDER_MAX = 107 - 1 - 20 - 17


@dataclass(frozen=True)
class Hop:
    """The hypervisor as an SSH jump host."""

    host: str
    port: int | None = None
    user: str | None = None
    keyfile: str = ""
    known_hosts: str = ""
    no_verify: bool = False
    command: str = "ssh"  # the URI's ``command=``: the client libvirt runs (a wrapper, say)
    control: str = ""  # the folder of the shared connections' sockets ("" = no sharing)

    def options(self) -> list[str]:
        """OpenSSH options that log in to the hypervisor as libvirt's transport does, never asking."""
        argv = ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        if self.keyfile:
            argv += ["-i", self.keyfile, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        elif self.no_verify:
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        return argv

    def proxy(self, host: str, port: int) -> list[str]:
        """``ssh -W host:port`` on the hypervisor: a byte pipe to what it reaches there, through the
        hypervisor's shared connection (made by the first one, when there is none)."""
        shared = []
        if self.control:
            # The socket named here, not with OpenSSH's %C: a ProxyCommand= would expand it again.
            who = hashlib.sha256(f"{self.user}@{self.host}:{self.port}".encode()).hexdigest()[:20]
            shared = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control}/{who}",
                      "-o", f"ControlPersist={CONTROL_PERSIST}"]  # fmt: skip
        return [self.command, *self.options(), *shared, "-W", f"{_bracket(host)}:{port}", self.host]

    def local_forward(self, local_port: int, port: int) -> list[str]:
        """The command that makes the hypervisor's 127.0.0.1:port this machine's 127.0.0.1:local_port."""
        spec = f"127.0.0.1:{local_port}:127.0.0.1:{port}"
        return [self.command, *self.options(), "-N", "-L", spec, self.host]


def listening(hop: Hop, port: int, *, timeout: float = 5.0) -> bool:
    """Whether something accepts connections on the hypervisor's 127.0.0.1:port. An ``ssh -W`` there
    is refused at once when nothing listens (through the shared connection in ~0.05 s); a channel
    that opens stays open (nothing is sent), so still running after ``timeout`` means busy."""
    argv = hop.proxy("127.0.0.1", port)
    try:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    except OSError as e:
        raise ConnectError(f"cannot run {argv[0]}: {e.strerror}", hint="install OpenSSH's client") from None
    try:
        _out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return True
    said = err.decode(errors="replace")
    if p.returncode != 0 and ("open failed" in said or "forwarding request failed" in said):
        return False  # "connect failed: Connection refused" (direct) / "Session open refused" (shared)
    if p.returncode == 0:
        return True  # accepted, then closed by the other end
    last = said.strip().splitlines()[-1] if said.strip() else f"ssh exited {p.returncode}"
    raise ConnectError(
        f"cannot reach {hop.host} over SSH to check port {port}: {last}",
        hint="check that 'ssh' to the hypervisor works with the URI's user and key",
    )


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def is_remote(uri: str) -> bool:
    """A URI naming a host (``qemu+ssh://user@host/system``, ``qemu+tcp://host/``) is another
    libvirt daemon whose files and loopback are not this machine's, even when the host is this one
    by name (it may be a container or a namespace): its disks go through the storage API."""
    return bool(urlsplit(uri).hostname)


def hop_of(uri: str) -> Hop | None:
    """The jump host for a remote URI; None for a local one. ConnectError for a remote transport
    that is not SSH (TLS, TCP): launch would have no way to the hypervisor's loopback."""
    parts = urlsplit(uri)
    if not parts.hostname:
        return None
    transport = parts.scheme.partition("+")[2]
    if transport not in SSH_TRANSPORTS:
        raise ConnectError(
            f"instances on {parts.hostname} are reached over SSH, and {uri} is not an SSH URI",
            hint=f"use qemu+ssh://{parts.netloc}{parts.path}",
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return Hop(
        host=parts.hostname,
        port=parts.port,
        user=parts.username,
        keyfile=query.get("keyfile", ""),
        known_hosts=query.get("known_hosts", ""),
        no_verify=query.get("no_verify", "0") not in ("0", ""),
        command=query.get("command", "ssh") if transport == "ssh" else "ssh",
        control=control_folder(),
    )


def control_folder() -> str:
    """A 0700 folder of this user's for shared SSH connections' sockets (``$XDG_RUNTIME_DIR`` or the
    temporary folder; short, as a socket path must be), or "" when it cannot be made safely: one
    another user made or can write into would let them reach the hypervisor as this user."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"cernvm-launch-ssh-{os.getuid()}"
    if len(os.fsencode(path)) > _CONTROL_FOLDER_MAX:
        return ""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError:
        return ""
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return ""
    return str(path)


def hop_of_connection(conn: Any) -> Hop | None:
    return hop_of(str(conn.getURI()))
