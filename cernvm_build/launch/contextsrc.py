"""Where a context (user data) comes from: a local file, or a URL (``create --context URL``, e.g. a file
the site's context builder made and the user published). Both are read the same way — at most
``MAX_CONTEXT_BYTES``, then checked by ``userdata.parse`` exactly as create checks them — so a fetched
context is refused for the same reasons, in the same words, with the URL in place of the file name.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPException, HTTPMessage
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from .. import httpredirect
from ..bootloader.cloudsource import read_within
from ..bootloader.userdata import MAX_INFLATED
from ..errors import ConfigFileError
from ..numtext import decimal
from ..table import credentials_refused, has_credentials
from . import userdata

#: the bootloader never inflates more than this; a bigger context file is no context
MAX_CONTEXT_BYTES = MAX_INFLATED
TIMEOUT = 30.0
#: the whole answer, however slowly it trickles in (TIMEOUT bounds one read)
DEADLINE = 120.0


def _too_big(source: str) -> ConfigFileError:
    return ConfigFileError(
        f"context is larger than {MAX_CONTEXT_BYTES} bytes",
        where=source,
        hint="user data is small (clouds cap it at 16-64 KiB): ship big files with cernvm_inject or a URL",
    )


def _read_file(path: Path, source: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONTEXT_BYTES + 1)
    except IsADirectoryError:
        raise ConfigFileError(
            "cannot read user data: is a folder, not a file",
            where=source,
            hint="name the user-data file itself (e.g. FOLDER/user-data.txt)",
        ) from None
    except FileNotFoundError:
        # a path on the command line is refused as it is parsed (exit 2); a file:// URL only here
        raise ConfigFileError(
            "cannot read user data: no such file", where=source, hint="check the path"
        ) from None
    except OSError as e:
        raise ConfigFileError(
            f"cannot read user data: {e.strerror}", where=source, hint="check the file's permissions"
        ) from None
    if len(data) > MAX_CONTEXT_BYTES:
        raise _too_big(source)
    return data


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Redirects as ``httpredirect.refusal`` allows them (urllib follows one to ftp:// too), with
    their bodies unread: urllib reads a redirect's body whole before following it, and an endless
    one took 2.7 GB in 19 s to a MemoryError traceback (pr33a)."""

    max_redirections = httpredirect.MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        why = httpredirect.refusal(req.full_url, newurl)
        if why:
            raise urllib.error.URLError(f"HTTP {code} redirect to {newurl[:200]!r} refused: {why}")
        fp.close()  # urllib then reads nothing from it
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Stopwatch:
    """Shuts down the connections of one fetch at its deadline. ``read_within`` bounds the body,
    but the status line and headers are http.client's reads, each bounded by the per-read timeout
    only: a server sending a header line or a ``100 Continue`` every few seconds held ``context
    URL`` for ever (pr24a #8). Not ``cloudsource``'s per-read deadline socket: under https the ssl
    module reads the descriptor itself, past any Python-level ``recv_into``; a shutdown ends both."""

    def __init__(self, seconds: float) -> None:
        self.sockets: list[socket.socket] = []
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._stop)
        self._timer.daemon = True

    def __enter__(self) -> _Stopwatch:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def record(self, sock: socket.socket) -> None:
        with self._lock:
            self.sockets.append(sock)
            if self.fired.is_set():  # connected after the deadline (the connect has its own timeout)
                _shut(sock)

    def _stop(self) -> None:
        with self._lock:
            self.fired.set()
            for sock in self.sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Recorded:
    """An HTTP(S) handler whose connections tell ``stopwatch`` their socket once connected."""

    stopwatch: _Stopwatch

    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> Any:
        record = self.stopwatch.record

        class Connection(http_class):  # type: ignore[misc,valid-type]
            def connect(self) -> None:
                super().connect()
                record(self.sock)

        return super().do_open(Connection, req, **kwargs)  # type: ignore[misc]


class _HttpHandler(_Recorded, urllib.request.HTTPHandler):
    pass


class _HttpsHandler(_Recorded, urllib.request.HTTPSHandler):
    pass


def _opener(stopwatch: _Stopwatch) -> urllib.request.OpenerDirector:
    plain, tls = _HttpHandler(), _HttpsHandler()
    plain.stopwatch = tls.stopwatch = stopwatch
    return urllib.request.build_opener(_HttpRedirectsOnly, plain, tls)


def _read_url(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "cernvm-launch"})
    try:
        with _Stopwatch(DEADLINE) as stopwatch:
            try:
                with _opener(stopwatch).open(request, timeout=TIMEOUT) as response:
                    length = response.headers.get("Content-Length")
                    if length is not None and (decimal(length) or 0) > MAX_CONTEXT_BYTES:
                        raise _too_big(url)
                    data = read_within(response, MAX_CONTEXT_BYTES, time.monotonic() + DEADLINE)
            finally:
                if stopwatch.fired.is_set():  # what was read may only look whole: the socket was shut
                    raise TimeoutError(f"the answer took longer than its deadline ({DEADLINE:g} s)")
    except urllib.error.HTTPError as e:
        # one line: urllib's redirect loop reason spans three ("...infinite loop.\nThe last 30x ...")
        why = " ".join(str(e.reason).split())
        raise ConfigFileError(
            f"cannot fetch the context: HTTP {e.code} {why}", where=url, hint="check the URL"
        ) from None
    except (urllib.error.URLError, OSError, ValueError, HTTPException) as e:
        # HTTPException: a head over http.client's bounds (100 header lines, a 64 KiB line), which
        # urllib passes on as it is (a traceback)
        reason = getattr(e, "reason", None) or e
        raise ConfigFileError(
            f"cannot fetch the context: {reason}", where=url, hint="is the server up and the URL right?"
        ) from None
    if len(data) > MAX_CONTEXT_BYTES:
        raise _too_big(url)
    return data


def read_context(source: str) -> tuple[bytes, str]:
    """The bytes of a context and the name errors give it; ``source`` is a path or an
    ``http(s)://`` / ``file://`` URL."""
    scheme = urlsplit(source).scheme.lower() if "://" in source else ""
    if scheme and has_credentials(source):
        refused = credentials_refused(source)
        raise ConfigFileError(refused.message, where="context URL", hint=refused.hint)
    if scheme in ("http", "https"):
        return _read_url(source), source
    if scheme == "file":
        return _read_file(Path(unquote(urlsplit(source).path)), source), source
    if scheme:
        raise ConfigFileError(
            f"context URL scheme {scheme!r} is not supported",
            where=source,
            hint="use http(s)://, file:// or a path",
        )
    return _read_file(Path(source), source), source


def load_context(source: str) -> tuple[bytes, str, userdata.UserData]:
    """Read and check a context as ``create`` will (one ``ConfigFileError`` naming source:line)."""
    data, name = read_context(source)
    return data, name, userdata.parse(data, name)
