"""A "remote" libvirt host made for tests and benchmarks: Debian's sshd on 127.0.0.1 on a spare port.

It has a throwaway host key and a throwaway client key authorised for root. libvirt is reached as
``qemu+ssh://root@127.0.0.1:PORT/system?keyfile=…&command=…``, the command being OpenSSH with the
host key pinned in a known_hosts file of its own (root's own ~/.ssh is never read or written). The
sshd logs at DEBUG1, so a caller can see which ``direct-tcpip`` channels (``ssh -W``) it opened.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port


@dataclass(frozen=True)
class SSHHypervisor:
    uri: str
    log: Path

    def tunnelled_to(self, port: int) -> bool:
        """Whether the sshd opened a direct-tcpip channel (ssh -W) to 127.0.0.1:port."""
        return f"target 127.0.0.1 port {port}" in self.log.read_text(errors="replace")


@contextlib.contextmanager
def ssh_hypervisor(d: Path) -> Iterator[SSHHypervisor]:
    """sshd on 127.0.0.1 with its keys in ``d`` (made, mode 0700), stopped on exit."""
    d.mkdir(mode=0o700, parents=True)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / key], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\n"
        f"AuthorizedKeysFile {d}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nAllowTcpForwarding yes\nLogLevel DEBUG1\n"
        f"PidFile {d}/sshd.pid\n"
    )
    pinned = d / "ssh-pinned"
    pinned.write_text(
        f"#!/bin/sh\nexec ssh -o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes "
        '-o GlobalKnownHostsFile=/dev/null "$@"\n'
    )
    pinned.chmod(0o755)
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder
    log = d / "sshd.log"
    server = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", d / "sshd_config", "-E", log])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    said = log.read_text() if log.exists() else ""
                    raise RuntimeError(f"sshd did not come up: {said}") from None
                time.sleep(0.1)
        query = f"keyfile={d}/client_key&command={pinned}"
        yield SSHHypervisor(f"qemu+ssh://root@127.0.0.1:{port}/system?{query}", log)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
