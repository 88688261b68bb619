"""``site serve``: a local preview on 127.0.0.1 that rebuilds when a source changes (polling), and
reloads the open pages after a rebuild that changed the output (live reload).

Live reload is the server's alone: it adds one ``<script>`` to the HTML it sends, which asks
``/__livereload`` for the build generation once a second and reloads the page when it moved. The files
on disk are the ones ``site build`` writes, byte for byte.
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import os
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from ..boundedhttp import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_PER_CLIENT,
    BoundedHTTPServer,
    HeaderDeadline,
    url_host,
)
from ..errors import BuildError, CernVMError
from ..fsutil import open_regular
from .build import Builder, BuildReport


def tree_signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detection: every file's path, size and modification time. A file that cannot be
    stat'ed (a link loop, a link into a folder not readable) is there with its errno: the build reports
    it; an ``OSError`` here was a traceback at start and, while serving, ended the watcher for good."""
    out: list[tuple[str, int, int]] = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = os.path.join(dirpath, name)
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            except OSError as e:
                out.append((p, -1, e.errno or 0))
                continue
            out.append((p, st.st_size, st.st_mtime_ns))
    return tuple(out)


#: the requests a preview keeps (``Preview.requests``, for tests), and how much of each path: a
#: long-running preview kept every one (2,000 requests of 60 KB paths: 126 MB more; pr17a finding 5)
REQUESTS_KEPT = 2000
PATH_KEPT = 2048

LIVE_PATH = "__livereload"
LIVE_JS = b"""(function () {
  var url = document.currentScript.src.replace(/\\.js$/, ""), seen = null;
  function poll() {
    fetch(url, { cache: "no-store" }).then(function (r) { return r.text(); }).then(function (g) {
      if (seen !== null && g !== seen) { window.location.reload(); return; }
      seen = g;
      setTimeout(poll, 1000);
    }, function () { setTimeout(poll, 2000); });
  }
  poll();
})();
"""


#: how far from a page's end its ``</body>`` is looked for (a page's own is in its last lines)
TAIL = 64 * 1024


def _copy(src: BinaryIO, dst: Any, n: int) -> bool:
    """``n`` bytes from ``src`` to ``dst`` in pieces; False if ``src`` ended before."""
    while n > 0:
        piece = src.read(min(n, TAIL))
        if not piece:
            return False
        dst.write(piece)
        n -= len(piece)
    return True


class _Server(BoundedHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client gone or silent past the timeout while its answer is sent is not a problem of ours
        # (socketserver printed a traceback); anything else still is
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(HeaderDeadline, http.server.SimpleHTTPRequestHandler):
    base_path = "/"
    directory: str
    timeout = IDLE_TIMEOUT

    @staticmethod
    def log(status: int, path: str) -> None:
        pass

    @staticmethod
    def generation() -> int:
        return 0

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        clean = self.path.split("?", 1)[0].split("#", 1)[0]
        live = self.base_path + LIVE_PATH
        if clean == live:
            return self._send(str(self.generation()).encode(), "text/plain; charset=utf-8")
        if clean == live + ".js":
            return self._send(LIVE_JS, "text/javascript; charset=utf-8")
        path = self.translate_path(self.path)
        if os.path.isdir(path) and clean.endswith("/"):
            if not self._servable(path):  # a folder linked out of the output: not even its listing
                return self.send_error(404)
            path = os.path.join(path, "index.html")
        if not self._servable(path):
            return self.send_error(404)
        if path.endswith(".html") and os.path.isfile(path):
            return self._send_page(path, f'<script src="{live}.js"></script>'.encode())
        return super().do_HEAD() if self.command == "HEAD" else super().do_GET()

    # a HEAD's headers are a GET's: SimpleHTTPRequestHandler's own sent a page's length without the
    # reload tag (and served what ``_servable`` refuses)
    do_HEAD = do_GET

    def _servable(self, path: str) -> bool:
        """Whether what ``path`` names may be served: nothing there (a 404 follows), or a folder or a
        regular file inside the output. A FIFO there held a server thread for ever in its open (one
        connection slot each), and a link out of the output served what it names (/etc/passwd)."""
        if not os.path.lexists(path):
            return True
        real = os.path.realpath(path)
        top = os.path.realpath(self.directory)
        if real != top and not real.startswith(top.rstrip(os.sep) + os.sep):
            return False
        try:
            mode = os.stat(real).st_mode
        except OSError:
            return False
        return stat.S_ISDIR(mode) or stat.S_ISREG(mode)

    def _send_page(self, path: str, tag: bytes) -> None:
        """The page at ``path`` streamed with ``tag`` before its last ``</body>`` (looked for in its
        last ``TAIL`` bytes; else at the end): read whole and copied with the tag, every request held two
        copies (64 silent clients of a 22 MB page took the preview to 2.7 GB, pr17d). The file is the one
        opened: a rebuild replaces it by a rename."""
        try:
            f = open_regular(Path(path))
        except OSError:
            return self.send_error(404)
        with f:
            size = os.fstat(f.fileno()).st_size
            tail_at = max(0, size - TAIL)
            f.seek(tail_at)
            found = f.read(TAIL).rfind(b"</body>")
            at = tail_at + found if found >= 0 else size
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(size + len(tag)))
            self.end_headers()
            if self.command == "HEAD":
                return None
            f.seek(0)
            whole = _copy(f, self.wfile, at)
            if whole:
                self.wfile.write(tag)
                whole = _copy(f, self.wfile, size - at)
            if not whole:
                self.close_connection = True  # the file shrank meanwhile: the length sent is wrong
        return None

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if "\0" in urllib.parse.unquote(self.path):  # no file has a NUL in its name: os calls refuse one
            self.send_error(400, "NUL in the path")
            return False
        # decoded as ``translate_path`` decodes it: ``%ed%a0%80`` is a lone surrogate no file name can
        # hold, and ``open`` raised UnicodeEncodeError (a traceback, no answer; pr21 N1)
        with contextlib.suppress(UnicodeDecodeError):
            wire = urllib.parse.unquote(self.path.split("?", 1)[0].split("#", 1)[0], errors="surrogatepass")
            if any("\ud800" <= c <= "\udfff" for c in wire):
                self.send_error(400, "the path is not UTF-8")
                return False
        return True

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean.startswith(self.base_path):
            clean = "/" + clean[len(self.base_path) :]
        elif self.base_path != "/":
            clean = "/__outside_base__"
        return super().translate_path(clean)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        page = Path(self.directory) / "404.html"
        # the output's 404 page as any page (``_servable``): a link to a file outside the output
        # (or a FIFO there) was followed and sent to every client that asked for a missing page
        body = None
        if code == 404 and os.path.lexists(page) and self._servable(str(page)):
            with contextlib.suppress(OSError), open_regular(page) as f:
                body = f.read()
        if body is not None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        super().send_error(code, message, explain)

    def end_headers(self) -> None:
        # a preview must never show a stale page from the browser cache
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        with contextlib.suppress(ValueError, TypeError):
            # (a 414's request line is never parsed: no ``path``)
            type(self).log(int(code), getattr(self, "path", ""))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Preview:
    """Build once, serve ``out_dir``, rebuild on change. ``start()`` returns; ``stop()`` ends both."""

    def __init__(
        self,
        builder: Builder,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        interval: float = 0.5,
        on_build: Callable[[BuildReport | None, CernVMError | None], None] = lambda r, e: None,
        on_request: Callable[[int, str], None] = lambda status, path: None,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_per_client: int = MAX_PER_CLIENT,
    ):
        self.builder = builder
        self.interval = interval
        self.on_build = on_build
        #: the last ``REQUESTS_KEPT`` requests (status, path), for tests
        self.requests: collections.deque[tuple[int, str]] = collections.deque(maxlen=REQUESTS_KEPT)
        self.generation = 0  # moves when a rebuild changed the output: open pages reload
        self._stop = threading.Event()

        def log(status: int, path: str) -> None:
            self.requests.append((status, path[:PATH_KEPT]))
            on_request(status, path)

        class Handler(_Handler):
            pass

        Handler.log = staticmethod(log)  # type: ignore[method-assign]
        Handler.generation = staticmethod(lambda: self.generation)  # type: ignore[method-assign]
        Handler.timeout = idle_timeout
        handler = Handler
        self._handler = handler
        self.server = _Server(
            (host, port), partial(handler, directory=str(builder.out_dir)), max_connections, max_per_client
        )
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{url_host(str(host))}:{port}{self._handler.base_path}"

    def rebuild(self) -> BuildReport | None:
        try:
            report = self.builder.build()
        except CernVMError as e:
            self.on_build(None, e)
            return None
        except Exception as e:
            # A builder bug (not a site's error): it killed the watcher thread, and the preview served
            # a stale site for good with no word (pr17a finding 6). Reported as a failed build, in one
            # line; the next change is built again.
            what = (str(e).splitlines() or [""])[0][:200]
            self.on_build(
                None,
                BuildError(
                    f"the rebuild failed unexpectedly: {type(e).__name__}" + (f": {what}" if what else ""),
                    hint="the last good build is still served; edit the site to try again "
                    "(a 'site build' shows the same error; please report it)",
                ),
            )
            return None
        self._handler.base_path = self.builder.cfg.base_path
        if report.rendered or report.removed or report.search_files:
            self.generation += 1
        self.on_build(report, None)
        return report

    def start(self) -> None:
        try:
            self.builder.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # --out naming a file (or below one) was a FileExistsError traceback (pr21 N13)
            raise BuildError(
                f"cannot make the output folder {self.builder.out_dir}: {e.strerror}",
                hint="choose another --out: a folder, or a path where one can be made",
            ) from None
        sig = tree_signature(self.builder.site_dir)
        self.rebuild()
        t = threading.Thread(target=self.server.serve_forever, name="site-serve", daemon=True)
        t.start()
        w = threading.Thread(target=self._watch, args=(sig,), name="site-watch", daemon=True)
        w.start()
        self._threads = [t, w]

    def _watch(self, sig: tuple[tuple[str, int, int], ...]) -> None:
        while not self._stop.wait(self.interval):
            now = tree_signature(self.builder.site_dir)
            if now != sig:
                sig = now
                self.rebuild()

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for t in self._threads:
            t.join(timeout=10)
