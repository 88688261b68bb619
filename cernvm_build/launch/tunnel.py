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

The URI is read back from the connection (``virConnectGetURI`` answers with the client's own URI,
query included, without asking the daemon), so every verb that holds a connection finds its hop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ConnectError

SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")


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
        """``ssh -W host:port`` on the hypervisor: a byte pipe to what it reaches there."""
        return [self.command, *self.options(), "-W", f"{_bracket(host)}:{port}", self.host]

    def local_forward(self, local_port: int, port: int) -> list[str]:
        """The command that makes the hypervisor's 127.0.0.1:port this machine's 127.0.0.1:local_port."""
        spec = f"127.0.0.1:{local_port}:127.0.0.1:{port}"
        return [self.command, *self.options(), "-N", "-L", spec, self.host]


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
    )


def hop_of_connection(conn: Any) -> Hop | None:
    return hop_of(str(conn.getURI()))
