"""A threading HTTP server with a bound on its connections, shared by ``site serve`` and ``cvmfs serve``.

``ThreadingHTTPServer`` starts a thread per connection and keeps it while the connection is open:
with no timeout on the handler and no bound, idle connections held a thread each for ever (audit17c:
2000 idle connections, 2003 threads; pr16d: the same with ``cvmfs serve``). Handlers set
``timeout = IDLE_TIMEOUT``; the server closes a connection past ``max_connections`` at once.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
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
