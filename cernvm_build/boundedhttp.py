"""A threading HTTP server with a bound on its connections, shared by ``site serve`` and ``cvmfs serve``.

``ThreadingHTTPServer`` starts a thread per connection and keeps it while the connection is open:
with no timeout on the handler and no bound, idle connections held a thread each for ever (audit17c:
2000 idle connections, 2003 threads; pr16d: the same with ``cvmfs serve``). Handlers set
``timeout = IDLE_TIMEOUT``; the server closes a connection past ``max_connections`` at once.

The timeout is per ``recv``, so a client dripping one header byte every few seconds kept its slot for
ever, and 64 of them shut everyone out (pr16f finding 7). ``HeaderDeadline`` gives the request line
and headers together one deadline (the handler's ``timeout`` from the start of the request): each
read waits at most what is left of it.

One client could still hold all the slots (each connection within its deadlines, renewed as they
end). Each client address gets a share (``MAX_PER_CLIENT`` of the slots): past it, while fewer than a
share of slots would be left free, a connection is answered ``503`` with ``Retry-After`` at once and
closed, so other clients are still served. While slots are plenty one address may use more: a site
squid, a NAT or QEMU user-net guests are one address for many clients, and the toolkit's own fetcher
retries a 503 within 0.3 s, so a hard share failed a mount's reads on an idle server (r17 #4).

Both servers answer only GET and HEAD, which have no body; one sent anyway is read and dropped by
``HeaderDeadline`` before the request is handled: left unread, it was taken as the next request on
a kept-alive connection (a request smuggled past a proxy in front, pr18d finding 1). A body it cannot
delimit for sure (a ``Transfer-Encoding``, a repeated or non-numeric ``Content-Length``, a header
line Python's parser drops), or one over ``MAX_DISCARDED_BODY``, is answered 400 and the connection
closed.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .numtext import decimal

#: seconds a connection may stay silent (idle keep-alive, or a request sent slowly)
IDLE_TIMEOUT = 30.0
#: connections served at once; past it a new one is closed at once (a browser opens about 6)
MAX_CONNECTIONS = 64
#: connections one client address is sure of (a quarter of the slots: a few browsers behind one
#: NAT, or a CernVM-FS client's parallel downloads, fit); it gets more only while as many stay free
#: for others, so one client cannot shut the others out
MAX_PER_CLIENT = 16
#: bytes of a request's body read and dropped before answering; past it the connection is closed
MAX_DISCARDED_BODY = 64 * 1024
#: seconds a client over its share is asked to wait
RETRY_AFTER = 5
_BUSY_TEXT = b"too many connections from this address; retry later\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: %d\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (RETRY_AFTER, len(_BUSY_TEXT), _BUSY_TEXT)
)


def address_family(host: str) -> socket.AddressFamily:
    """The family of the address ``host`` names (``::1`` and ``::`` IPv6; a name IPv4 if it has an
    IPv4 address, else IPv6): socketserver's class default, IPv4, made ``--host ::1`` a bind error
    and a name of an IPv6-only host unreachable. A name with both (``localhost``: often ``::1``
    first) stays IPv4, as it served before, so ``http://127.0.0.1`` keeps working. A host that does
    not resolve keeps IPv4 (the bind then says why)."""
    if not host:
        return socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return socket.AF_INET
    families = {info[0] for info in infos}
    return socket.AF_INET6 if families == {socket.AF_INET6} else socket.AF_INET


def url_host(host: str) -> str:
    """``host`` as a URL's authority writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: Any,
        max_connections: int = MAX_CONNECTIONS,
        max_per_client: int = MAX_PER_CLIENT,
    ) -> None:
        self.address_family = address_family(address[0])
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._per_client = min(max_per_client, max_connections)
        self._max = max_connections
        self._held: dict[str, int] = {}  # client address -> connections it holds
        self._busy = 0  # connections held by all clients: sum(self._held.values())
        self._held_lock = threading.Lock()

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # ``::`` takes IPv4 clients too where the system allows it (dual stack; Linux's default,
            # not BSD's); a system that refuses it serves IPv6 only
            with contextlib.suppress(OSError, AttributeError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        who = str(client_address[0])
        with self._held_lock:
            held = self._held.get(who, 0)
            # past its share only while slots are scarce: fewer than a share left once this one is taken
            over = held >= self._per_client and self._max - self._busy - 1 < self._per_client
            if not over:
                self._held[who] = held + 1
                self._busy += 1
        if over:
            self._slots.release()
            _answer_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            self._release(who)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self._release(str(client_address[0]))

    def _release(self, who: str) -> None:
        with self._held_lock:
            self._busy -= 1
            left = self._held[who] - 1
            if left:
                self._held[who] = left
            else:
                del self._held[who]


def _answer_busy(request: Any) -> None:
    """503 on the accepting thread without waiting: the answer fits the empty send buffer, and
    whatever request already arrived is read first (closing over unread bytes resets the
    connection, and the client could lose the answer)."""
    try:
        request.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            request.recv(1 << 16)
        request.send(_BUSY)
    except OSError:
        pass  # the client went away, or will see the close


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each waiting at most what is left of the handler's header deadline."""

    def __init__(self, handler: HeaderDeadline) -> None:
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        h = self._handler
        if h.header_deadline is not None:
            left = h.header_deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request line and headers took too long")
            h.connection.settimeout(left)
        got: int = h.connection.recv_into(buffer)
        return got


class HeaderDeadline(BaseHTTPRequestHandler):
    """A handler whose request line and headers must arrive within ``timeout`` seconds as a whole."""

    header_deadline: float | None = None

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BufferedReader(_DeadlineReader(self))

    def handle_one_request(self) -> None:
        # from the start of the request: an idle keep-alive connection counts too (as it did)
        self.header_deadline = None if self.timeout is None else time.monotonic() + self.timeout
        super().handle_one_request()

    def parse_request(self) -> bool:
        # a dropped body is read within what is left of the headers' deadline: 64 KiB dripped a byte
        # at a time cannot hold the slot longer than a slow header could
        ok = super().parse_request() and self._skip_body()
        # the headers are in: the answer goes back to the per-recv timeout
        self.header_deadline = None
        self.connection.settimeout(self.timeout)
        return ok

    def _skip_body(self) -> bool:
        """Read and drop a body sent with the request; one that cannot be delimited for sure is
        answered 400 and the connection closed (the module's docstring says why)."""
        if self.headers.defects:
            # e.g. "Content-Length : 5": Python's parser drops that line and every header after it
            # with no error, where a proxy in front may have taken it as the length
            return self._refuse("a malformed header line")
        if self.headers.get("Transfer-Encoding") is not None:
            return self._refuse("a request body with a Transfer-Encoding")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return True
        size = decimal(lengths[0].strip())
        if len(lengths) > 1 or size is None:
            return self._refuse("a Content-Length that is not one number")
        if size > MAX_DISCARDED_BODY:
            return self._refuse(f"a request body over {MAX_DISCARDED_BODY} bytes")
        while size > 0:
            got = self.rfile.read(min(size, 1 << 16))
            if not got:  # the client closed before its body ended: nothing to answer
                self.close_connection = True
                return False
            size -= len(got)
        return True

    def _refuse(self, what: str) -> bool:
        # send_error's "Connection: close" header also sets close_connection
        self.send_error(HTTPStatus.BAD_REQUEST, f"{what} is not accepted")
        return False
