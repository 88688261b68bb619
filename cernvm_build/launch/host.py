"""The hypervisor launch talks to: a libvirt connection and the accelerator its domains use.

Everything that depends on *which* libvirt is behind the URI travels in a ``Host``, so tests hand
launch a ``Host`` on libvirt's test driver (with the driver's own domain type as its accelerator)
instead of launch asking whether the URI looks like a test one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .. import accel
from .connection import default_uri, open_connection
from .tunnel import is_remote


@dataclass
class Host:
    conn: Any  # libvirt.virConnect
    uri: str
    accelerator: accel.Accel | None = None  # None: probed when a domain is first defined

    @property
    def accel(self) -> accel.Accel:
        if self.accelerator is None:
            self.accelerator = accel.detect()
        return self.accelerator

    @property
    def session(self) -> bool:
        """A per-user daemon (``qemu:///session``, also over ssh): QEMU runs as the user, with no
        DAC security driver and user-mode networking only."""
        return urlsplit(self.uri).path.rstrip("/") == "/session"

    @property
    def remote(self) -> str:
        """The hypervisor's host name when the URI names one (qemu+ssh://user@host/...): another
        daemon, whose files and loopback are not this machine's (``tunnel.is_remote``)."""
        return (urlsplit(self.uri).hostname or "") if is_remote(self.uri) else ""

    @property
    def domain_type(self) -> str:
        return self.accel.libvirt_domain_type

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


def connect(uri: str | None = None) -> Host:
    """``uri`` (else ``$LIBVIRT_DEFAULT_URI``, else system as root / session otherwise), opened."""
    resolved = default_uri(uri)
    return Host(open_connection(resolved), resolved)
