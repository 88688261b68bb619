"""A threading HTTP server with a bound on its connections, shared by ``site serve`` and ``cvmfs serve``.

``ThreadingHTTPServer`` starts a thread per connection and keeps it while the connection is open:
with no timeout on the handler and no bound, idle connections held a thread each for ever (audit17c:
2000 idle connections, 2003 threads; pr16d: the same with ``cvmfs serve``). Handlers set
``timeout = IDLE_TIMEOUT``; the server closes a connection past ``max_connections`` at once.

The timeout is per ``recv``, so a client dripping one header byte every few seconds kept its slot for
ever, and 64 of them shut everyone out (pr16f finding 7). ``HeaderDeadline`` gives the request line
and headers together one deadline (the handler's ``timeout`` from the start of the request): each
read waits at most what is left of it.
"""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: seconds a connection may stay silent (idle keep-alive, or a request sent slowly)
IDLE_TIMEOUT = 30.0
#: connections served at once; past it a new one is closed at once (a browser opens about 6)
MAX_CONNECTIONS = 64


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: Any, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


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
        ok = super().parse_request()
        # the headers are in: the body and the answer go back to the per-recv timeout
        self.header_deadline = None
        self.connection.settimeout(self.timeout)
        return ok
