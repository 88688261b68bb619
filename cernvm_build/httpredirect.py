"""Which HTTP redirects a download follows: the one rule for the mirror's and cernvm-launch's
downloads (``mirror.source.Deadlined``, requests), launch's context URLs (``launch.contextsrc``,
urllib) and the CernVM-FS fetcher (``cvmfs.fetch``). Standard library only: the initrd's mount and
``cernvm-launch`` import it without requests.

A hostile or broken server answers a GET with a redirect anywhere. Not followed: a scheme other than
http(s) (urllib follows ftp://, and file:// would read this machine's files); https to http (apt
refuses it too: the TLS the user asked for would end there); a hop into loopback or link-local
addresses (0.0.0.0 and :: too: a connect there is one to this machine) from a host outside that
block (the server would have this machine request its own
services, or a cloud's metadata service at 169.254.169.254, whose answer is then read, staged and
named in error lines). Names are resolved for the check; the connect resolves again, so a name
whose answer changes between the two (DNS rebinding) is not caught: the check is for the
redirects a plain hostile server can send.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

#: redirects one download follows (apt's and urllib's limit; requests' own is 30)
MAX_REDIRECTS = 10


def _block(host: str, port: int | None) -> str | None:
    """Which guarded block ``host`` is in ("loopback", "link-local"), by its literal address or,
    for a name, any address it resolves to; None outside them, or for a name that does not resolve
    (the connect then fails on its own)."""
    # only on a redirect: the initrd's mount imports this module (through ``cvmfs.fetch``) and
    # should not pay for ipaddress at every boot
    import ipaddress

    try:
        addrs = [ipaddress.ip_address(host.split("%")[0])]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port or 80, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None
        addrs = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for a in addrs:
        mapped = a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) else None
        a = mapped or a
        # a connect to 0.0.0.0 or :: (also spelt "0") reaches this machine's own services on Linux
        if a.is_loopback or a.is_unspecified:
            return "loopback"
        if a.is_link_local:
            return "link-local"
    return None


def refusal(current: str, target: str) -> str | None:
    """Why a request of ``current`` may not follow its redirect to ``target`` (absolute), or None."""
    a, b = urlsplit(current), urlsplit(target)
    if b.scheme.lower() not in ("http", "https"):
        return "only http and https are followed"
    if a.scheme.lower() == "https" and b.scheme.lower() == "http":
        return "from https to http"
    try:
        block = _block(b.hostname or "", b.port)
        if block and _block(a.hostname or "", a.port) != block:
            return f"into a {block} address, from {a.hostname}"
    except ValueError as e:  # a port that is no number
        return str(e)
    return None
