"""User data from the clouds, as μCernVM reads it (stdlib only: runs in the initrd).

Two sources besides the config drive (``03-context-drive.sh`` reads that one itself):

- *OpenNebula*: a ``context.sh`` on the context CD (label ``CONTEXT``); the user data is
  ``EC2_USER_DATA`` (base64, what μCernVM reads) or OpenNebula's own ``USER_DATA`` (base64 when
  ``USERDATA_ENCODING=base64``). The file is parsed as data (``KEY='value'`` lines), never sourced.
- *Metadata services* at ``169.254.169.254`` (or the given base URLs), tried in μCernVM's order: GCE
  (``computeMetadata/v1/instance/attributes/user-data`` with ``Metadata-Flavor: Google``), EC2
  (``2016-04-19/user-data``; an IMDSv2 token is asked for first and sent when the service gives one),
  OpenStack (``openstack/2013-10-17/user_data``), then ``latest/user-data``. A service that answers
  404 has no user data for this instance; the next flavour is asked.

Bounded: at most 1 MiB of user data (EC2 allows 16 KiB, OpenStack 64 KiB), a short timeout per
read, a deadline per request (status line and headers included: a service trickling them must not
hold the boot), one for all requests together, and a quick connect probe per base URL so that a
machine without a metadata service loses about a second. Run in the initrd as::

    python3 -m cernvm_build.bootloader.cloudsource metadata OUT [--url URL]...
    python3 -m cernvm_build.bootloader.cloudsource opennebula CONTEXT_SH OUT

Exit 0 with the source on stdout when user data was written to OUT, 1 when there is none, 2 on a
bad argument. Never a traceback: the boot goes on without user data.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import math
import os
import socket
import sys
import time
import urllib.parse

from ..numtext import decimal

# typing and dataclasses (with inspect, ast, dis... under it) were ~40 M of the ~75 M instructions
# this module's imports cost in the early mount process (callgrind, the initrd's runtime), where
# 03-context-drive asks for it: typing's names only for the type checker, Found a plain class
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

METADATA_URL = "http://169.254.169.254"
MAX_USER_DATA = 1 << 20
MAX_CONTEXT_SH = 4 << 20
TIMEOUT = 3.0
#: a whole answer, status line and headers included, however slowly it trickles in (TIMEOUT bounds
#: one read only): the boot goes on
DEADLINE = 10.0
#: all the requests to the metadata services together (up to five a base URL, each up to DEADLINE)
TOTAL_DEADLINE = 30.0
PROBE_TIMEOUT = 1.0
TOKEN_TTL = "21600"

#: (name, path, extra headers) in μCernVM's order
FLAVOURS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("gce", "/computeMetadata/v1/instance/attributes/user-data", (("Metadata-Flavor", "Google"),)),
    ("ec2", "/2016-04-19/user-data", ()),
    ("openstack", "/openstack/2013-10-17/user_data", ()),
    ("ec2", "/latest/user-data", ()),
)


class Found:
    """User data and where it came from (``source``: e.g. "ec2
    http://169.254.169.254/2016-04-19/user-data", "opennebula context.sh EC2_USER_DATA"). Compared by
    value and hashed, as the frozen dataclass it was."""

    __slots__ = ("data", "source")

    def __init__(self, source: str, data: bytes) -> None:
        self.source = source
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Found) and (self.source, self.data) == (other.source, other.data)

    def __hash__(self) -> int:
        return hash((self.source, self.data))

    def __repr__(self) -> str:
        return f"Found({self.source!r}, {len(self.data)} bytes)"


class _NoAnswer(Exception):
    """The service is not there or failed (not: has no user data)."""


def read_within(resp: http.client.HTTPResponse, limit: int, deadline: float) -> bytes:
    """At most ``limit + 1`` bytes of the body (the caller sees "too big"), or TimeoutError when the
    monotonic ``deadline`` passes first (a server sending a byte just before each read timeout)."""
    parts: list[bytes] = []
    got = 0
    while got <= limit:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the answer took longer than its deadline ({got} bytes by then)")
        block = resp.read1(min(1 << 16, limit + 1 - got))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


class _DeadlineSocket(socket.socket):
    """A socket whose every read waits at most until ``deadline`` (monotonic), however many reads
    ``http.client`` makes for the status line and the headers (its one bound is the per-read
    timeout, which a server sending a byte a second never reaches)."""

    deadline = 0.0
    per_read = TIMEOUT

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no whole answer by the deadline")
        self.settimeout(min(self.per_read, left))
        return super().recv_into(buffer, nbytes, flags)


class _Connection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, deadline: float):
        super().__init__(host, port, timeout=timeout)
        self.deadline, self.per_read = deadline, timeout

    def connect(self) -> None:
        super().connect()
        bounded = _DeadlineSocket(fileno=self.sock.detach())
        bounded.deadline, bounded.per_read = self.deadline, self.per_read
        bounded.settimeout(self.per_read)
        self.sock = bounded


def _request(
    base: urllib.parse.SplitResult,
    method: str,
    path: str,
    headers: dict[str, str],
    timeout: float,
    until: float = math.inf,
) -> tuple[int, bytes]:
    """One request, given up after DEADLINE or at ``until`` (monotonic), whichever comes first."""
    deadline = min(time.monotonic() + DEADLINE, until)
    conn = _Connection(base.hostname or "", base.port or 80, timeout, deadline)
    try:
        conn.request(method, base.path.rstrip("/") + path, headers={"User-Agent": "ucernvm", **headers})
        resp = conn.getresponse()
        length = resp.getheader("Content-Length")
        if length is not None and (decimal(length) or 0) > MAX_USER_DATA:
            raise _NoAnswer(f"{length} bytes is more than user data can be")
        body = read_within(resp, MAX_USER_DATA, deadline)
        if len(body) > MAX_USER_DATA:
            raise _NoAnswer("more than user data can be")
        return resp.status, body
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise _NoAnswer(str(e)) from e
    finally:
        conn.close()


def _reachable(base: urllib.parse.SplitResult, timeout: float) -> bool:
    try:
        socket.create_connection((base.hostname or "", base.port or 80), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


def _ec2_token(base: urllib.parse.SplitResult, timeout: float, until: float) -> dict[str, str]:
    """IMDSv2: a session token when the service hands one out (else IMDSv1: no header)."""
    try:
        status, body = _request(
            base,
            "PUT",
            "/latest/api/token",
            {"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL},
            timeout,
            until,
        )
    except _NoAnswer:
        return {}
    token = body.decode("ascii", "replace").strip()
    if status == 200 and token and token.isprintable() and len(token) < 4096:
        return {"X-aws-ec2-metadata-token": token}
    return {}


def from_metadata(
    urls: Sequence[str] = (METADATA_URL,),
    *,
    timeout: float = TIMEOUT,
    probe: float = PROBE_TIMEOUT,
    note: Callable[[str], None] | None = None,
) -> Found | None:
    """The first user data a metadata service gives, in μCernVM's order; None if there is none
    (also when TOTAL_DEADLINE has passed: the boot goes on without, and ``note`` is told what was
    not asked; no URL is probed and no request made past it)."""
    until = time.monotonic() + TOTAL_DEADLINE

    def out_of_time(k: int, what: str) -> bool:
        if time.monotonic() < until:
            return False
        if note is not None:
            url, rest = urls[k], len(urls) - k - 1
            more = f" (and {rest} more URL{'s' if rest != 1 else ''})" if rest else ""
            note(
                f"the metadata services' deadline ({TOTAL_DEADLINE:g} s) passed: {what} {url}{more} not asked"
            )
        return True

    for k, url in enumerate(urls):
        if out_of_time(k, "user data from"):
            return None
        base = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if base.scheme != "http" or not base.hostname or not _reachable(base, probe):
            continue
        token: dict[str, str] | None = None
        for name, path, extra in FLAVOURS:
            if out_of_time(k, f"{name} {path} of"):
                return None
            headers = dict(extra)
            if name == "ec2":
                if token is None:
                    token = _ec2_token(base, timeout, until)
                headers.update(token)
            try:
                status, body = _request(base, "GET", path, headers, timeout, until)
            except _NoAnswer:
                continue
            if status == 200 and body:
                return Found(f"{name} {base.geturl().rstrip('/')}{path}", body)
    return None


def parse_context_sh(text: str) -> dict[str, str]:
    """OpenNebula's ``context.sh`` as data: ``KEY='value'`` (``'\\''`` for a quote), ``KEY="value"``
    or ``KEY=value``; values may span lines; comments and anything else are skipped."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        end = text.find("\n", i)
        end = n if end < 0 else end
        line = text[i:end]
        key, eq, rest = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        if not eq or not key or not (key[0].isalpha() or key[0] == "_") or not key.replace("_", "").isalnum():
            i = end + 1
            continue
        j = i + len(line) - len(rest)  # the value's start in text
        quote = text[j] if j < n else ""
        if quote in ("'", '"'):
            value, i = _quoted(text, j, quote)
            out[key] = value
            nl = text.find("\n", i)
            i = n if nl < 0 else nl + 1
        else:
            out[key] = rest.strip()
            i = end + 1
    return out


def _quoted(text: str, j: int, quote: str) -> tuple[str, int]:
    """The quoted value starting at ``text[j]``; shell rules for the two quotes. Unterminated: to
    the end of the text."""
    parts: list[str] = []
    k = j + 1
    n = len(text)
    while k < n:
        c = text[k]
        if c == quote:
            # 'it'\''s': a closed quote, an escaped quote, a new quote
            if quote == "'" and text.startswith("\\''", k + 1):
                parts.append("'")
                k += 4
                continue
            return "".join(parts), k + 1
        if quote == '"' and c == "\\" and k + 1 < n and text[k + 1] in '"\\$`':
            parts.append(text[k + 1])
            k += 2
            continue
        parts.append(c)
        k += 1
    return "".join(parts), n


def from_opennebula(context_sh: bytes) -> Found | None:
    values = parse_context_sh(context_sh[:MAX_CONTEXT_SH].decode("utf-8", "replace"))
    for key, encoded in (
        ("EC2_USER_DATA", True),
        ("USER_DATA", values.get("USERDATA_ENCODING", "").lower() == "base64"),
    ):
        value = values.get(key)
        if not value:
            continue
        if not encoded:
            data = value.encode()
        else:
            try:
                data = base64.b64decode("".join(value.split()), validate=True)
            except (binascii.Error, ValueError):
                continue  # damaged: the next key, or none
        # too big is no user data (as from a metadata service): a cut one would be half a context
        if data and len(data) <= MAX_USER_DATA:
            return Found(f"opennebula context.sh {key}", data)
    return None


def _write(found: Found, out: str) -> None:
    tmp = f"{out}.tmp"
    with open(tmp, "wb") as f:
        f.write(found.data)
    os.replace(tmp, out)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) >= 2 and args[0] == "metadata":
            out, rest = args[1], args[2:]
            urls = [rest[k + 1] for k in range(0, len(rest) - 1, 2) if rest[k] == "--url"]
            if len(urls) * 2 != len(rest):
                raise ValueError("expected --url URL pairs")
            found = from_metadata(
                urls or [METADATA_URL], note=lambda text: print(f"cloudsource: {text}", file=sys.stderr)
            )
        elif len(args) == 3 and args[0] == "opennebula":
            with open(args[1], "rb") as f:
                found = from_opennebula(f.read(MAX_CONTEXT_SH))
            out = args[2]
        else:
            raise ValueError("usage: metadata OUT [--url URL]... | opennebula CONTEXT_SH OUT")
    except (OSError, ValueError) as e:
        print(f"cloudsource: {e}", file=sys.stderr)
        return 2
    if found is None:
        return 1
    try:
        _write(found, out)
    except OSError as e:
        print(f"cloudsource: {out}: {e.strerror}", file=sys.stderr)
        return 2
    print(found.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
