"""The proxy chain as the real client reads ``CVMFS_HTTP_PROXY`` (stdlib only: it runs in the initrd).

``"http://p1:3128|http://p2:3128;http://p3:3128;DIRECT"``: ``;`` separates *groups*, tried in the
order written (fail-over: a site squid, a backup squid, then the Stratum-1 itself); ``|`` separates
the proxies of one group, among which clients share the load: each client takes the group's members
in its own random order, so a fleet spreads evenly over them. A failed proxy hands over to the next
member of its group, then to the next group. The choice is sticky and shared by every thread: the
proxy that answered last is tried first by the next request, so a stopped squid costs one failed
connection, not one per request. Past the last group the chain wraps around to the first, in case an
earlier proxy came back (the real client instead fails the request until its proxy reset).
"""

from __future__ import annotations

import random
import threading
import urllib.parse

from ..errors import CvmfsError

DIRECT = "DIRECT"


def parse_groups(spec: str | None) -> list[list[str | None]]:
    """The groups of ``spec``, members in the order written; ``None`` stands for DIRECT.

    No spec (or an empty one) is DIRECT. ``auto`` (a PAC file found through WPAD) is not looked up:
    it is left out, as when the real client finds no PAC file (μCernVM's default is ``auto;DIRECT``);
    a chain of nothing else is an error."""
    if not spec or not spec.strip():
        return [[None]]
    groups: list[list[str | None]] = []
    auto = False
    for text in spec.split(";"):
        members: list[str | None] = []
        for member in text.split("|"):
            member = member.strip()
            if not member:
                continue
            if member.lower() == "auto":
                auto = True
                continue
            members.append(None if member.upper() == DIRECT else _proxy(member))
        if members:
            groups.append(members)
    if not groups and auto:
        raise CvmfsError(
            f"proxy chain {spec!r}: 'auto' (proxy auto-configuration through WPAD) is not supported",
            hint="name the proxies (http://squid:3128), or add ;DIRECT",
        )
    return groups or [[None]]


def _proxy(member: str) -> str:
    """``member`` as ``http://HOST:PORT``, what a client speaks to a proxy, else a one-line error
    naming it: ``file:///etc/passwd``, ``socks5://``, a user and password or port 99999 were all tried
    as HTTP proxies, and the error then blamed the server (pr16d 8). ``HOST:PORT`` is taken as
    ``http://`` (the μCernVM user data writes proxies so, and curl reads them so); it was tried as
    a URL of scheme ``HOST`` before."""
    written = member
    if "://" not in member:
        member = f"http://{member}"
    try:
        u = urllib.parse.urlsplit(member)
        port = u.port
    except ValueError:  # a port out of range or not a number, a bad IPv6 literal
        u, port = None, None
    if (
        u is None
        or u.scheme != "http"
        or not u.hostname
        or not port
        or "@" in u.netloc
        or u.path not in ("", "/")
        or u.query
        or u.fragment
        or not member.isprintable()
        or " " in member
    ):
        raise CvmfsError(
            f"proxy {written!r}: not http://HOST:PORT (or DIRECT)",
            hint="e.g. --proxy 'http://squid.example.org:3128;DIRECT': a port from 1 to 65535, no user, "
            "path or other scheme",
        )
    return member


def parse_proxies(spec: str | None) -> list[str | None]:
    """Every member of every group, in the order written (None: DIRECT)."""
    return [m for group in parse_groups(spec) for m in group]


class ProxyChain:
    """The order in which one client tries its proxies; thread-safe."""

    def __init__(self, spec: str | None, *, rng: random.Random | None = None):
        self.spec = spec or DIRECT
        self.groups = parse_groups(spec)
        pick = rng or random.Random()
        for group in self.groups:
            pick.shuffle(group)  # this client's share of the load balancing
        self._flat = [m for group in self.groups for m in group]
        self._current = 0
        self._lock = threading.Lock()

    def order(self) -> list[str | None]:
        """The proxies to try for one request: the one that answered last, then the rest of its
        group, the later groups, and the earlier ones."""
        if len(self._flat) == 1:  # one way (DIRECT, the usual case): no lock round trip per request
            return self._flat
        with self._lock:
            i = self._current
        return self._flat[i:] + self._flat[:i]

    def worked(self, proxy: str | None) -> None:
        """``proxy`` delivered: the next request starts there."""
        if len(self._flat) == 1:
            return
        with self._lock:
            self._current = self._flat.index(proxy)

    @property
    def current(self) -> str | None:
        with self._lock:
            return self._flat[self._current]
