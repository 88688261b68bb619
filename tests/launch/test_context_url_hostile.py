"""A context URL's server may be hostile: ``--context URL`` / ``context URL`` follow redirects only to
http(s) (urllib alone would follow one to ftp://), and give up on an answer that trickles in past
its deadline; each is one ConfigFileError naming the URL."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from cernvm_build.errors import ConfigFileError
from cernvm_build.launch import contextsrc
from tests.support import listening
from tests.support.hostile import http_server


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1:1/etc/shadow")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):  # a byte every 0.2 s: each read is well within its timeout
                self.wfile.write(b"#")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    with http_server(_Hostile) as url:
        yield url


def test_a_redirect_away_from_http_is_refused(hostile: str) -> None:
    with pytest.raises(ConfigFileError) as e:
        contextsrc.read_context(f"{hostile}/ftp")
    refused = "redirect to 'ftp://127.0.0.1:1/etc/shadow' refused: only http and https are followed"
    assert refused in str(e.value)
    assert e.value.where is not None and f"{hostile}/ftp" in str(e.value)


@pytest.mark.timeout(60)
def test_a_trickling_answer_is_given_up_at_its_deadline(
    hostile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contextsrc, "DEADLINE", 1.0)
    with pytest.raises(ConfigFileError, match="took longer than its deadline"):
        contextsrc.read_context(f"{hostile}/slow")


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:s3cret@127.0.0.1:1/x",
        "file://alice:s3cret@/etc/passwd",
        " http://alice:s3cret@127.0.0.1:1/x",
    ],
)
def test_a_url_with_credentials_is_refused_and_never_echoed(url: str) -> None:
    """urllib would send "alice:s3cret@127.0.0.1" as the host name (and every error would echo the
    password): refused before any connection, shown redacted."""
    with pytest.raises(ConfigFileError) as err:
        contextsrc.read_context(url)
    text = f"{err.value.message} {err.value.where} {err.value.hint}"
    assert "a URL with credentials is not supported" in text and "***@" in text and "s3cret" not in text


@pytest.mark.parametrize(
    ("head", "error"),
    [
        (b"X: y\r\n" * 101, "got more than 100 headers"),
        (b"X: " + b"y" * 70000 + b"\r\n", "got more than 65536 bytes when reading header line"),
    ],
)
def test_a_head_past_http_client_s_bounds_is_one_line(head: bytes, error: str) -> None:
    """http.client's HTTPException for these is neither an OSError nor a URLError, and urllib
    passes it on: ``context URL`` and ``create --context URL`` ended in its traceback."""

    def answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n")

    with listening(answer) as port:
        url = f"http://127.0.0.1:{port}/ctx"
        with pytest.raises(ConfigFileError, match=f"cannot fetch the context: {error}") as err:
            contextsrc.read_context(url)
    assert err.value.where == url


def test_a_head_that_never_ends_is_given_up_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """``read_within`` bounds the body only: http.client reads ``100 Continue`` answers for as long
    as they come (as it reads header lines, each within the per-read timeout), and ``context URL``
    was held for ever by a server sending one every 50 ms."""
    monkeypatch.setattr(contextsrc, "DEADLINE", 1.0)
    stop = threading.Event()

    def flood(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            while not stop.wait(0.05):
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    outcome: list[BaseException | object] = []

    def fetch(url: str) -> None:
        try:
            outcome.append(contextsrc.read_context(url))
        except BaseException as e:
            outcome.append(e)

    with listening(flood) as port:
        url = f"http://127.0.0.1:{port}/ctx"
        t = threading.Thread(target=fetch, args=(url,), daemon=True)
        t.start()
        t.join(30)  # a bound for the failure of this test, not a measurement
        stop.set()
        assert not t.is_alive(), "the fetch is still held by a head that never ends"
    err = outcome[0]
    assert isinstance(err, ConfigFileError) and err.where == url
    assert err.message == "cannot fetch the context: the answer took longer than its deadline (1 s)"
