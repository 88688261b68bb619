"""A static Stratum HTTP server for development, the demo and the tests.

``serve(root)`` serves ``<root>/<fqrn>/...`` at ``/cvmfs/<fqrn>/...`` when ``root`` holds several
repositories, or a single Stratum directory (one holding ``.cvmfspublished``) at ``/cvmfs/<fqrn>/`` and
at ``/``. Cache headers follow what Stratum-1s send: the signed files change with every publish
(short max-age), objects are immutable (content-addressed). HEAD and single byte ranges work.
"""

from __future__ import annotations

import email.utils
import errno
import logging
import os
import posixpath
import re
import socket
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import ClassVar

from ..boundedhttp import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_PER_CLIENT,
    BoundedHTTPServer,
    HeaderDeadline,
    url_host,
)
from ..errors import CvmfsError
from ..fsutil import open_regular, read_capped
from .limits import MAX_MANIFEST_BYTES
from .lock import is_working_state
from .manifest import parse_keyvals

log = logging.getLogger(__name__)

SHORT_CACHE = "public, max-age=61"
LONG_CACHE = "public, max-age=31536000, immutable"
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)\Z")
#: digits of a range bound: 10^18 bytes is past any file, and 5000 digits overflowed int() into a
#: traceback and a dropped connection (pr16d finding 3); more is answered 416
_RANGE_DIGITS = 18


def _stratum_dir(path: Path) -> Path | None:
    """``path`` or its fixture-style ``repo/`` sub-folder, if it holds a manifest."""
    for cand in (path, path / "repo"):
        if (cand / ".cvmfspublished").is_file():
            return cand
    return None


def _manifest_fqrn(stratum: Path) -> str | None:
    """The name the manifest gives, if it says one; read within the manifest's cap (a 3 GB file was
    read whole: MemoryError, pr18d finding 12)."""
    try:
        data = read_capped(stratum / ".cvmfspublished", MAX_MANIFEST_BYTES)
    except OSError:  # TooLarge too
        return None
    return parse_keyvals(data).get("N") or None


def find_repositories(root: Path) -> dict[str, Path]:
    """fqrn -> Stratum directory, for a single Stratum dir or a folder of them."""
    single = _stratum_dir(root)
    if single is not None:
        name = _manifest_fqrn(single) or root.name
        return {name: single}
    repos: dict[str, Path] = {}
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir():
                s = _stratum_dir(child)
                if s is not None:
                    repos[child.name] = s
    return repos


@dataclass
class Server:
    root: Path
    httpd: BoundedHTTPServer
    repositories: dict[str, Path]
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{url_host(str(host))}:{self.port}"

    def repo_url(self, fqrn: str | None = None) -> str:
        """``http://127.0.0.1:PORT/cvmfs/<fqrn>`` (the only repository when ``fqrn`` is None)."""
        if fqrn is None:
            if len(self.repositories) != 1:
                raise CvmfsError(f"{self.root}: serves {len(self.repositories)} repositories; name one")
            fqrn = next(iter(self.repositories))
        return f"{self.url}/cvmfs/{fqrn}"

    def start(self) -> Server:
        if self._thread is None:
            self._thread = threading.Thread(target=self.httpd.serve_forever, name="cvmfs-serve", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HTTPServer(BoundedHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away mid-answer (a reader that gave up, a pipelined batch cut short) or
        fell silent past the timeout is the client's business: one debug line, not socketserver's
        traceback on stderr."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("%s: the client closed the connection", client_address)
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(HeaderDeadline):
    server_version = "cernvm-build-cvmfs"
    protocol_version = "HTTP/1.1"
    repositories: ClassVar[dict[str, Path]] = {}
    single: ClassVar[Path | None] = None
    timeout = IDLE_TIMEOUT  # an idle or half-sent request held a thread for ever (pr16d finding 3)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes; without NODELAY, Nagle + delayed ACK stall every
        # keep-alive response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _resolve(self) -> tuple[Path, list[str]] | None:
        """The file asked for and its path inside the Stratum directory (whether it is a regular
        file is ``open_regular``'s to tell: one check, at the open, not a stat before it too)."""
        raw = urllib.parse.urlsplit(self.path).path
        path = posixpath.normpath(urllib.parse.unquote(raw))
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "cvmfs" and parts[1] in self.repositories:
            base, rest = self.repositories[parts[1]], parts[2:]
        elif self.single is not None:
            base, rest = self.single, parts
        else:
            return None
        if any(p in ("..", ".") for p in rest) or not rest or is_working_state(rest):
            return None
        target = base.joinpath(*rest)
        try:
            target.resolve().relative_to(base.resolve())
        except (ValueError, OSError):
            return None
        return target, rest

    def do_HEAD(self) -> None:
        self._send(head=True)

    def do_GET(self) -> None:
        self._send(head=False)

    def _error(self, status: HTTPStatus, extra: dict[str, str] | None = None) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send(self, *, head: bool) -> None:
        found = self._resolve()
        if found is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        target, rest = found
        try:
            # not open(): a FIFO, device or directory there is refused at once, never waited on
            f = open_regular(target)
        except OSError:
            self._error(HTTPStatus.NOT_FOUND)
            return
        try:
            st = os.fstat(f.fileno())
            size = st.st_size
            start, end = 0, size
            status = HTTPStatus.OK
            rng = self.headers.get("Range")
            if rng:
                m = _RANGE_RE.match(rng.strip())
                if m and max(len(m.group(1)), len(m.group(2))) > _RANGE_DIGITS:
                    self._error(
                        HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"}
                    )
                    return
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                    else:
                        start = max(0, size - int(m.group(2)))
                    if start >= size or start >= end:
                        self._error(
                            HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"}
                        )
                        return
                    status = HTTPStatus.PARTIAL_CONTENT
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            # inside the Stratum directory: a "data" folder above it (/srv/data/cvmfs/...) made every
            # file immutable for a year, stats/stats.db too, which changes with each publish (pr18d 10)
            is_object = rest[0] == "data" and not target.name.startswith(".")
            self.send_header("Cache-Control", LONG_CACHE if is_object else SHORT_CACHE)
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if head:
                return
            self.wfile.flush()
            try:
                self.connection.sendfile(f, start, end - start)
            except (BrokenPipeError, ConnectionResetError):
                pass
        finally:
            f.close()


def serve(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    idle_timeout: float = IDLE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_per_client: int = MAX_PER_CLIENT,
) -> Server:
    """Start serving ``root`` in a background thread; use as a context manager or call ``close()``."""
    if not 0 <= port < 65536:  # bind() raised OverflowError: a traceback (pr18d finding 4)
        raise CvmfsError(f"--port {port}: not a TCP port", hint="1 .. 65535, or 0 for any free port")
    root = Path(root)
    repos = find_repositories(root)
    if not repos:
        raise CvmfsError(
            f"{root}: no repository here (no .cvmfspublished in it or in its sub-folders)",
            hint="point at a Stratum directory or a folder of <fqrn>/ Stratum directories",
        )
    single = _stratum_dir(root)
    handler = type("Handler", (_Handler,), {"repositories": repos, "single": single, "timeout": idle_timeout})
    try:
        httpd = _HTTPServer((host, port), handler, max_connections, max_per_client)
    except OSError as e:
        raise CvmfsError(
            f"cannot listen on {host}:{port}: {e.strerror}",
            hint="choose another --port" if e.errno in (errno.EADDRINUSE, errno.EACCES) else "check --host",
        ) from e
    return Server(root, httpd, repos).start()
