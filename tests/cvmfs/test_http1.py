"""The fetcher's own HTTP/1.1 client (``http1.py``) against real local servers: a standard
``http.server`` (keep-alive, redirects, chunked and length-bound bodies, bodies ended by the
connection) and raw sockets that misbehave (a huge header, a body longer or shorter than its
Content-Length, a broken chunk, a head trickled in a byte at a time)."""

from __future__ import annotations

import contextlib
import ipaddress
import random
import select
import socket
import ssl
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cernvm_build.cvmfs import http1
from cernvm_build.cvmfs.fetch import HttpFetcher, Unreachable
from cernvm_build.cvmfs.http1 import Connection, ProtocolError, Response, split_netloc
from tests.support import listening
from tests.support.hostile import http_server

pytestmark = pytest.mark.integration

BIG = random.Random(5).randbytes(3 << 20)  # more than one recv, more than one fetch block


class _Origin(BaseHTTPRequestHandler):
    """/len/N: N bytes with a Content-Length; /chunked/N: the same chunked in odd sizes;
    /redirect: 302 to /len/5 (relative); /gone: 404 with a small page; /close: HTTP/1.0-style body
    ended by closing the connection. Counts the connections it accepted."""

    protocol_version = "HTTP/1.1"
    connections: list[int] = []  # noqa: RUF012 - test-local record

    def setup(self) -> None:
        super().setup()
        type(self).connections.append(1)

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:
        kind, _, arg = self.path.strip("/").partition("/")
        if kind == "len":
            body = BIG[: int(arg)]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif kind == "chunked":
            body = BIG[: int(arg)]
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            pos, step = 0, 1
            while pos < len(body):
                piece = body[pos : pos + step]
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
                pos, step = pos + len(piece), step * 7 + 3
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif kind == "redirect":
            self.send_response(302)
            self.send_header("Location", "../len/5")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(BIG[:1000])
            self.close_connection = True
        else:
            self.send_response(404)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not found")


@pytest.fixture
def origin() -> Iterator[str]:
    _Origin.connections = []
    with http_server(_Origin) as url:
        yield url


def test_bodies_by_length_chunked_and_connection_end_and_redirects_on_kept_alive_connections(
    origin: str,
) -> None:
    f = HttpFetcher([origin], repo="x", retries=0)
    assert f.get("len/0", what="empty") == b""
    assert f.get("len/5", what="small") == BIG[:5]
    assert f.get(f"len/{len(BIG)}", what="big") == BIG
    assert f.get("chunked/100000", what="chunked") == BIG[:100000]
    assert f.get("redirect/x", what="moved") == BIG[:5]  # relative Location, same server
    with pytest.raises(Exception, match="not found"):
        f.get("gone", what="gone")
    assert len(_Origin.connections) == 1  # all of it on one kept-alive connection
    assert f.get("close", what="ended by close") == BIG[:1000]
    assert f.get("len/7", what="after") == BIG[:7]
    assert len(_Origin.connections) == 2  # a body ended by the connection's end leaves no connection


def test_a_connection_reads_one_answer_after_another(origin: str) -> None:
    scheme, _, netloc = origin.partition("://")
    conn = Connection(scheme, netloc, 5)
    for size in (10, 70000, 0):
        resp = conn.get(f"/len/{size}", netloc)
        assert (resp.status, resp.length) == (200, size)
        got = b""
        while block := resp.read1(1 << 20):
            got += block
        assert got == BIG[:size] and resp.reusable
    resp = conn.get("/nowhere", netloc)
    assert resp.status == 404 and resp.drain(100) and resp.reusable
    conn.close()
    assert split_netloc("[::1]:8080", "http") == ("::1", 8080)
    assert split_netloc("example.org", "https") == ("example.org", 443)
    # sr18 3: the IPv6 form took a bare int(): '²' was a ValueError traceback; no port over 65535
    for bad in ("[::1]:\u00b2", "[::1]:70000", "h:0", "h:65536", "[::1]:" + "9" * 5000):
        with pytest.raises(ProtocolError, match="bad port"):
            split_netloc(bad, "http")


class _Searched(bytes):
    """A received buffer that records how far each search for a bare-LF blank line on it may look
    (a search that stops at its first match, as the CRLF one does, costs only that far)."""

    ends: list[int]

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:  # type: ignore[override]
        if sub == b"\n\n":
            self.ends.append(len(self) if end is None else end)
        return super().find(sub, start, len(self) if end is None else end)


def test_a_head_is_found_without_searching_the_pipelined_bodies_after_it() -> None:
    # three pipelined answers already received whole, bodies with no blank line in them: finding
    # each head's end must not scan the rest of the buffer (a pipelined batch's later bodies),
    # which it did for the bare-LF form, for every object; heads ending either way still parse
    heads = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 6\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\n\r\n",
    )
    body = b"ab\ncd\r"
    buf = _Searched(b"".join(h + body for h in heads) + b"x" * 50000)
    buf.ends = []
    conn = Connection("http", "127.0.0.1:1", 5)
    conn._buf = buf
    resp = http1.Response(conn)
    assert max(buf.ends) <= len(heads[0]) and conn._buf[conn._at :] == buf[len(heads[0]) :]
    for head in heads:
        if head is not heads[0]:
            resp = http1.Response(conn)
        assert (resp.status, resp.length, resp.read1(100), resp.complete) == (200, 6, body, True)
    assert conn._buf[conn._at :] == b"x" * 50000


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"HTTP/1.1 200 OK", (200, "OK", False)),
        (b"HTTP/1.1 200", (200, "", False)),  # no reason
        (b"HTTP/1.1 200 ", (200, "", False)),
        (b"HTTP/1.0 200 It  is fine ", (200, "It  is fine", True)),  # 1.0 without keep-alive
        (b"HTTP/1.1x 404 Not Found", (404, "Not Found", False)),  # any version starting HTTP/1.
        (b"HTTP/1.1 2000 OK", None),
        (b"HTTP/1.1  200 OK", None),  # two spaces: no code
        (b"HTTP/1.1 20x OK", None),
        (b"HTTP/1.1 200\tOK", None),  # the code ends at a space only
        (b"HTTP/2 200 OK", None),
        (b"HTTP/1.1", None),
        (b"ICY 200 OK", None),
    ],
)
def test_a_status_line_is_read_as_version_code_and_reason(
    line: bytes, expected: tuple[int, str, bool] | None
) -> None:
    conn = Connection("http", "127.0.0.1:1", 5)
    conn._buf = line + b"\r\nContent-Length: 0\r\n\r\n"
    if expected is None:
        with pytest.raises(http1.ProtocolError, match=r"not an HTTP/1\.x status line"):
            http1.Response(conn)
        return
    resp = http1.Response(conn)
    assert (resp.status, resp.reason, resp.will_close) == expected and resp.length == 0


@pytest.mark.parametrize(
    ("head", "will_close", "length"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 3", True, 3),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 3", False, 3),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3", False, 3),
        (b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 3", True, 3),
        (b"HTTP/1.1 200 OK", True, None),  # no length: the body ends with the connection
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked", False, None),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99", False, 0),
        (b"HTTP/1.1 204 No Content", False, 0),
    ],
)
def test_an_answer_says_whether_its_connection_is_kept_and_how_long_its_body_is(
    head: bytes, will_close: bool, length: int | None
) -> None:
    conn = Connection("http", "127.0.0.1:1", 5)
    conn._buf = head + b"\r\n\r\n"
    resp = http1.Response(conn)
    assert (resp.will_close, resp.length) == (will_close, length)


@pytest.mark.parametrize(
    "block",
    [
        "",
        "\nServer: x\nContent-Length: 12\nConnection: keep-alive",
        "\nCONTENT-LENGTH:7\ncontent-length:  9 ",  # repeated: the last, stripped
        "\nContent-Length : 5",  # white space before the colon
        "\nContent-Length\x0b: 5",  # ... any that str.strip strips
        "\n Content-Length: 5\nConnection: close",  # the first line starts with a space
        "\nConnection: keep-\n alive\nContent-Length: 3",  # folded
        "\nConnection: keep-\n\talive",  # folded by a tab, the last line
        "\nX-Content-Length: 4",  # the name inside another
        "\nX-Content-Length: 4\nContent-Length: 6",
        "\nVary: Connection\nConnection: close",  # the name in a value
        "\nTransfer-Encoding: chunked\nContent-Length",  # a line without a colon
        "\nContent-Length: \xe9\xc0",  # Latin-1 beyond ASCII
        "\nContent-Length: 7\nConnection: close\ncontent-length: 9",  # repeated, each at a line's start
        "\nServer: x\n y\nContent-Length: 3",  # a fold in another field
        "\nContent-Length: 3 \r\nTransfer-Encoding:\xa0chunked\xa0",  # what str.strip strips
    ],
)
def test_the_three_fields_a_reader_needs_are_read_as_the_whole_header_dict_reads_them(block: str) -> None:
    fields = http1._fields(block)
    assert http1._wanted(block) == [fields.get(name) for name in http1._WANTED]


def _answers(*answers: bytes | Callable[[socket.socket], None]) -> contextlib.AbstractContextManager[int]:
    """A raw server: each request, on whatever connection, gets the next answer (raw bytes, or a
    function that writes to the socket itself); after the last one connections are closed."""
    left = list(answers)

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while left and conn.recv(65536):
                answer = left.pop(0)
                if callable(answer):
                    answer(conn)
                else:
                    conn.sendall(answer)

    return listening(handle)


def _fails(port: int, match: str, **kw: float) -> str:
    f = HttpFetcher([f"http://127.0.0.1:{port}/r"], repo="x", retries=0, **kw)  # type: ignore[arg-type]
    with pytest.raises(Unreachable) as err:
        f.get("obj", what="object")
    message = str(err.value)
    assert "\n" not in message and match in message, message
    return message


def test_a_huge_header_line_or_too_many_lines_is_one_failed_transfer() -> None:
    with _answers(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n") as port:
        _fails(port, "header line longer than 65536 bytes")
    with _answers(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200000) as port:  # no line end at all
        _fails(port, "header line longer than 65536 bytes")
    with _answers(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 5000) as port:  # no end of the head
        _fails(port, "got more than 100 headers")
    with _answers(b"SSH-2.0-OpenSSH\r\n\r\n") as port:
        _fails(port, "not an HTTP/1.x status line")


def test_a_body_shorter_or_longer_than_its_length_or_a_broken_chunk_is_not_taken() -> None:
    with _answers(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort") as port:
        _fails(port, "transfer ended after 5 of 100 bytes")
    with _answers(b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n1x") as port:
        _fails(port, "bad Content-Length")
    # '²' (latin-1 \xb2) and 5,000 digits are isdigit() but no int(): each was a ValueError traceback
    for length in (b"\xb2", b"9" * 5000):
        with _answers(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\nx") as port:
            _fails(port, "bad Content-Length")
    with _answers(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc") as port:
        _fails(port, "the connection ended inside a chunk")
    with _answers(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n") as port:
        _fails(port, "bad chunk size line")
    with _answers(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n") as port:
        _fails(port, "a chunk longer than its size line says")
    # More bytes than the Content-Length: the answer is the declared bytes, and what followed is
    # never read as the next answer (the connection is not kept).
    with _answers(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfake",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal",
    ) as port:
        f = HttpFetcher([f"http://127.0.0.1:{port}/r"], repo="x", retries=0)
        assert f.get("a", what="a") == b"ok"
        assert f.get("b", what="b") == b"real"


class _Pieces:
    """A socket whose reads return ``stream`` in pieces of at most ``size`` bytes (each recv one
    piece, or the start of it when asked for fewer): where a server's writes end, exactly."""

    def __init__(self, stream: bytes, size: int) -> None:
        self.pieces = [stream[i : i + size] for i in range(0, len(stream), size)]

    def recv(self, n: int, flags: int = 0) -> bytes:
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > n:
            self.pieces.insert(0, piece[n:])
        return piece[:n]


def test_what_was_read_is_not_kept_while_lines_are_read_across_reads() -> None:
    """A chunked body of one-byte chunks, or a flood of ``100 Continue`` heads, whose every read
    ends inside a line: each line is completed by appending the next read to the bytes held, and
    those held all that was read since the buffer was last empty, here all of it (a fetch of a
    51 MB such stream peaked at 157 MB and took 39 s, copying). Only what is not consumed is kept."""
    unit = b"1;eeeeeeeee\r\na\r\n"  # 16 bytes: every 64 KiB read ends 3 bytes into a size line
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: "
    chunked += b"p" * ((-len(chunked) - 7) % 16) + b"\r\n\r\n"
    nothing = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    first = b"HTTP/1.1 100 Continue\r\nX: pppppppppppp\r\n\r\n"  # 7 more than the others: each
    others = b"HTTP/1.1 100 Continue\r\nX: ppppp\r\n\r\n"  # read ends 25 bytes into a 32-byte head
    for stream, body in (
        (chunked + unit * 32768 + b"0\r\n\r\n", b"a" * 32768),
        (first + others * 32768 + nothing, b""),
    ):
        conn = Connection("http", "127.0.0.1:1", 10)
        conn.sock = _Pieces(stream, 65536)  # type: ignore[assignment]
        got = bytearray()
        tracemalloc.start()
        try:
            resp = Response(conn)
            while block := resp.read1(1 << 20):
                got += block
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert resp.status == 200 and resp.complete and got == body
        assert peak < 4 * 65536 + len(body), peak  # a few reads' worth, not the stream (1 MB)


def test_a_head_trickled_in_a_byte_at_a_time_is_given_up() -> None:
    """Every read comes well within the timeout, but the head never ends: given up after twice
    the timeout, one line (``http.client`` would read 100 lines of 64 KiB a byte at a time)."""
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not stop.is_set():
            conn.sendall(b"X")
            time.sleep(0.05)

    with _answers(trickle) as port:
        try:
            _fails(port, "response head took more than 2x the timeout", timeout=0.3)
        finally:
            stop.set()


def test_a_server_that_never_answers_times_out() -> None:
    def silent(conn: socket.socket) -> None:
        time.sleep(3)

    with _answers(silent) as port:
        _fails(port, "timed out", timeout=0.3)


def test_the_kernel_timeout_rounds_up_and_refuses_what_is_no_timeout() -> None:
    """A zero ``struct timeval`` is no timeout at all to the kernel: 1e-7 s must not become one."""

    def unpack(seconds: float) -> tuple[int, int]:
        return struct.unpack("ll", http1.timeval(seconds))  # type: ignore[return-value]

    assert unpack(2.5) == (2, 500000) and unpack(10) == (10, 0)
    assert unpack(1e-9) == (0, 1) and unpack(1.0000001) == (1, 1)
    for bad in (0, -1, float("nan"), float("inf"), 86401):
        with pytest.raises(ValueError, match="socket timeout"):
            http1.timeval(bad)


def test_a_body_that_stalls_is_a_timeout_not_a_short_body() -> None:
    """The kernel keeps the socket timeout (``SO_RCVTIMEO``): a recv that runs out comes back as
    EAGAIN, which must fail the transfer, never end the body (a body ended by the connection's
    close would otherwise be taken as complete when the server only stalled)."""
    stop = threading.Event()

    def stall(head: bytes) -> Callable[[socket.socket], None]:
        def answer(conn: socket.socket) -> None:
            conn.sendall(head + b"partial")
            stop.wait(5)

        return answer

    try:
        for head in (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",  # ended by close
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",  # the rest waited for whole
        ):
            with _answers(stall(head)) as port:
                _fails(port, "timed out", timeout=0.3)
    finally:
        stop.set()


def _sleeps() -> int:
    """This thread's voluntary context switches so far (each a wake-up after a blocking call)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))


def test_a_body_arriving_in_many_segments_is_waited_for_in_one_wake_up() -> None:
    """A body's rest is waited for whole (SO_RCVLOWAT and poll): its segments, as a network
    delivers them, do not each wake the reader (``Connection._await``, issue 13: wake-ups were much
    of a fetch's CPU in a one-vCPU guest). The mark is set back after: the next answer's head on the
    same connection is read as soon as it comes (else that recv waits for a body's worth of bytes,
    up to the timeout)."""
    body = BIG[: 60 * 1448]

    def segments(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 1448):
            time.sleep(0.002)  # each arrives alone
            conn.sendall(body[i : i + 1448])

    with _answers(segments, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") as port:
        f = HttpFetcher([f"http://127.0.0.1:{port}/r"], repo="x", retries=0, timeout=2)
        before = _sleeps()
        assert f.get("a", what="a") == body
        woken = _sleeps() - before
        (kept,) = f._idle[("http", f"127.0.0.1:{port}")]
        assert kept.sock is not None and kept.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        assert f.get("b", what="b") == b"ok"  # same connection: the head is not held back
    assert woken <= 10, f"{woken} wake-ups for 60 segments"


def test_a_body_arriving_as_fast_as_it_is_consumed_still_comes_in_few_blocks() -> None:
    """The reader takes what has come without waiting, but when that is only part of a large body
    the rest is waited for whole and returned with it: a consumer as slow as the arrivals does not
    get one block per arrival (each block a round of GIL hand-offs downstream; review r13a)."""
    body = BIG[: 60 * 1448]

    def segments(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 1448):
            time.sleep(0.002)
            conn.sendall(body[i : i + 1448])

    with _answers(segments) as port:
        conn = Connection("http", f"127.0.0.1:{port}", 2)
        try:
            resp = conn.get("/a", "x")
            blocks = []
            while True:
                time.sleep(0.01)  # the consumer's work: meanwhile segments arrive
                block = resp.read1(1 << 20)
                if not block:
                    break
                blocks.append(block)
        finally:
            conn.close()
    assert b"".join(blocks) == body
    assert len(blocks) <= 3, f"{len(blocks)} blocks for 60 segments"


def test_a_kernel_that_refuses_the_low_water_mark_gets_a_blocking_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If setting SO_RCVLOWAT fails (here an option number the kernel does not know: ENOPROTOOPT),
    large bodies are read with a blocking recv, not failed."""
    monkeypatch.setattr(http1, "_LOWAT", 0x7FFF)

    def late(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        time.sleep(0.2)  # the body after the reader started waiting for it
        conn.sendall(BIG[:100000])

    with _answers(late) as port:
        f = HttpFetcher([f"http://127.0.0.1:{port}/r"], repo="x", retries=0, timeout=2)
        assert f.get("a", what="a") == BIG[:100000]


def test_bytes_arriving_on_an_idle_kept_alive_connection_are_never_read_as_an_answer() -> None:
    """Bytes beyond the Content-Length that come after the body's last segment are not in the
    client's buffer when it keeps the connection: the next fetch peeks at the idle connection, finds
    them, and opens a new one (else the stray bytes, here a well-formed answer, are read as the next
    request's)."""
    read, sent = threading.Event(), threading.Event()

    def then_more(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        read.wait(5)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfake")
        sent.set()

    with _answers(then_more, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal") as port:
        f = HttpFetcher([f"http://127.0.0.1:{port}/r"], repo="x", retries=0, timeout=2)
        assert f.get("a", what="a") == b"ok"
        read.set()
        assert sent.wait(5)
        (kept,) = f._idle[("http", f"127.0.0.1:{port}")]
        assert kept.sock is not None and select.select([kept.sock], [], [], 5)[0]  # arrived
        assert f.get("b", what="b") == b"real"


def test_a_dead_first_server_fails_over_to_the_next(origin: str) -> None:
    with _answers(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ntruncated"[:30]) as port:
        f = HttpFetcher([f"http://127.0.0.1:{port}", origin], repo="x", retries=0)
        assert f.get("len/11", what="object") == BIG[:11]


def test_a_request_line_with_whitespace_is_refused_before_sending() -> None:
    conn = Connection("http", "127.0.0.1:9", 1)
    with pytest.raises(ProtocolError, match="whitespace"):
        conn.get("/a b", "127.0.0.1")


def _ca_and_server_cert(tmp: Path, cn: str) -> tuple[Path, Path, Path]:
    """A CA (its certificate file) and a server certificate + key for 127.0.0.1 signed by it."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    paths = tmp / f"{cn}-ca.pem", tmp / f"{cn}-server.pem", tmp / f"{cn}-server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(server.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def _tls(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context presenting ``cert`` (a real handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_https_verifies_the_server_and_keeps_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """https goes through the same client: the server's certificate is checked against the system's
    trust (here ``SSL_CERT_FILE``, which OpenSSL's default paths read) and its name; bodies of every
    kind arrive whole on one kept-alive TLS connection; a server the trust does not vouch for is one
    failed transfer, never a body."""
    ca, cert, key = _ca_and_server_cert(tmp_path, "trusted")
    other_ca, _, _ = _ca_and_server_cert(tmp_path, "other")
    _Origin.connections = []
    with http_server(_Origin, _tls(cert, key)) as url:
        monkeypatch.setattr(http1, "_ssl_context", None)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        f = HttpFetcher([url], repo="x", retries=0)
        assert f.get("len/5", what="small") == BIG[:5]
        assert f.get(f"len/{len(BIG)}", what="big") == BIG
        assert f.get("chunked/100000", what="chunked") == BIG[:100000]
        assert f.get("redirect/x", what="moved") == BIG[:5]
        assert len(_Origin.connections) == 1

        monkeypatch.setattr(http1, "_ssl_context", None)
        monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
        f = HttpFetcher([url], repo="x", retries=0)
        with pytest.raises(Unreachable) as err:
            f.get("len/5", what="object")
        assert "\n" not in str(err.value) and "CERTIFICATE_VERIFY_FAILED" in str(err.value), err.value
    monkeypatch.setattr(http1, "_ssl_context", None)


def _connected_pair() -> tuple[Connection, socket.socket]:
    """A plain-HTTP ``Connection`` already connected (a socketpair's end) and its peer."""
    ours, peer = socket.socketpair()
    conn = Connection("http", "127.0.0.1:80", 5)
    conn.sock = ours
    return conn, peer


def test_an_idle_connection_is_spoiled_by_a_byte_or_its_end_and_not_by_nothing() -> None:
    """``spoiled`` (polled, issue 13: a peek at nothing raised an exception per reuse): an idle
    connection with nothing there is fine, however often asked; one a byte came to, or whose peer
    closed, is not reused; nothing is consumed."""
    conn, peer = _connected_pair()
    with contextlib.closing(peer):
        assert not conn.spoiled() and not conn.spoiled()
        peer.sendall(b"X")
        assert conn.spoiled() and conn.spoiled()  # still there: nothing consumed
        assert conn.sock is not None and conn.sock.recv(1) == b"X"
        assert not conn.spoiled()
        peer.close()
        assert conn.spoiled()
    conn.close()


def test_a_body_read_to_its_end_is_drained_without_another_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """``drain`` after a length-bound body was read whole (every fetched object): its reuse is
    decided without a read call (issue 13); a body with bytes left is still read to its end."""
    conn, peer = _connected_pair()
    with contextlib.closing(peer):
        peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" * 2)
        resp = Response(conn)
        assert resp.read1(10) == b"abc"
        reads: list[int] = []
        real = Response.read1
        monkeypatch.setattr(Response, "read1", lambda self, n: reads.append(n) or real(self, n))
        assert not resp.drain(100)  # the next answer is buffered behind it: not reusable idle
        assert reads == []
        resp = Response(conn)
        assert resp.drain(100) and reads  # unread: read to its end, then reusable
    conn.close()
