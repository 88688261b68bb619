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
import time
from urllib.parse import urlsplit

TYPE_CHECKING = False  # the initrd's mount imports this module: typing costs millions of instructions

if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv6Address

#: redirects one download follows (apt's and urllib's limit; requests' own is 30)
MAX_REDIRECTS = 10

#: each name's block as it resolved, kept for the process: a server redirecting every object to one
#: CDN name cost the fetcher (the initrd's mount) a DNS query per object, where its kept-alive
#: connection needs none (rebinding between two answers is not caught anyway, module docstring)
_resolved: dict[str, str | None] = {}
_RESOLVED_KEPT = 256
#: a name that did not resolve, and when (``time.monotonic``): not asked again for a while
_unresolved: dict[str, float] = {}
_UNRESOLVED_KEPT_S = 30.0


def _block(host: str, port: int | None) -> str | None:
    """Which guarded block ``host`` is in ("loopback", "link-local"), by its literal address or,
    for a name, any address it resolves to; None outside them, or for a name that does not resolve
    (the connect then fails on its own, or a proxy resolves it). A name's verdict is kept."""
    # only on a redirect: the initrd's mount imports this module (through ``cvmfs.fetch``) and
    # should not pay for ipaddress at every boot
    import ipaddress

    try:
        addrs = [ipaddress.ip_address(host.split("%")[0])]
    except ValueError:
        if host in _resolved:
            return _resolved[host]
        failed = _unresolved.get(host)
        if failed is not None and time.monotonic() - failed < _UNRESOLVED_KEPT_S:
            # behind a proxy this machine may resolve no outside name: each redirect waited out the
            # resolver's timeout again (the connect fails on its own, or the proxy resolves it)
            return None
        try:
            infos = socket.getaddrinfo(host, port or 80, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            # kept a short while only: a name that failed once (metadata.google.internal, a
            # transient resolver error) and resolves later is checked then
            if len(_unresolved) >= _RESOLVED_KEPT:
                _unresolved.clear()
            _unresolved[host] = time.monotonic()
            return None
        if len(_resolved) >= _RESOLVED_KEPT:
            _resolved.clear()
        _resolved[host] = _in_block([ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos])
        return _resolved[host]
    return _in_block(addrs)


def _in_block(addrs: list[IPv4Address | IPv6Address]) -> str | None:
    import ipaddress

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
