"""HTTP fetching details: proxies (and DIRECT fail-over), kept-alive connections the server closed."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cernvm_build.cvmfs.fetch import HttpFetcher, Unreachable, _TransportError
from cernvm_build.cvmfs.proxies import ProxyChain, parse_groups, parse_proxies
from cernvm_build.cvmfs.serve import Server
from cernvm_build.errors import CvmfsError, IntegrityError
from tests.support import listening
from tests.support.hostile import http_server

from .conftest import FQRN, Fixture

pytestmark = pytest.mark.integration


class _Quiet(BaseHTTPRequestHandler):
    """A test server's handler: answers with ``_send``, logs nothing."""

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


class _Proxy(_Quiet):
    seen: list[str] = []  # noqa: RUF012 - test-local record

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.path) as r:
            self._send(r.read())


@pytest.fixture
def proxy() -> Iterator[str]:
    _Proxy.seen = []
    with http_server(_Proxy) as url:
        yield url


def _dead() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_parse_proxies() -> None:
    assert parse_proxies(None) == [None]
    assert parse_proxies("http://a:1|http://b:2;DIRECT") == ["http://a:1", "http://b:2", None]
    assert parse_groups(" http://a:1 | http://b:2 ;; direct") == [["http://a:1", "http://b:2"], [None]]
    assert parse_groups("auto;DIRECT") == [[None]]  # no PAC file looked up: as when none is found
    with pytest.raises(CvmfsError, match="'auto'"):
        parse_groups("auto")


@pytest.mark.parametrize(
    "member",
    [
        "file:///etc/passwd",
        "squid",
        "socks5://h:1080",
        "http://u:p@h:1",
        "http://h:99999",
        "http://h",
        "http://h:0",
        "http://h:1/path",
        "https://h:443",
        "http://h:x",
        "http://h:1\nX: y",
    ],
)
def test_a_proxy_that_is_not_http_host_port_is_refused_naming_it(member: str) -> None:
    """pr16d finding 8: each was tried as an HTTP proxy, and the error then blamed the server."""
    with pytest.raises(CvmfsError, match="not http://HOST:PORT") as e:
        parse_groups(f"http://ok:3128;{member};DIRECT")
    assert str(e.value).startswith(f"proxy {member!r}:")
    assert parse_groups("http://[::1]:3128/|squid.example.org:3128") == [
        ["http://[::1]:3128/", "http://squid.example.org:3128"]  # HOST:PORT is http (the user data's form)
    ]


def test_proxy_chain_balances_within_a_group_and_fails_over_between_groups_sticky() -> None:
    spec = "http://a:1|http://b:1|http://c:1;http://d:1;DIRECT"
    firsts = {ProxyChain(spec, rng=random.Random(seed)).order()[0] for seed in range(40)}
    assert firsts == {"http://a:1", "http://b:1", "http://c:1"}  # clients spread over the first group only
    chain = ProxyChain(spec, rng=random.Random(1))
    order = chain.order()
    assert set(order[:3]) == {"http://a:1", "http://b:1", "http://c:1"} and order[3:] == ["http://d:1", None]
    chain.worked("http://d:1")  # the whole first group failed: the next requests start at the second
    assert chain.order() == ["http://d:1", None, *order[:3]]
    assert chain.current == "http://d:1"


def test_through_a_proxy(server: Server, proxy: str, fx: Fixture) -> None:
    f = HttpFetcher([server.repo_url()], repo=FQRN, proxy=proxy)
    assert f.get(".cvmfspublished", what="manifest") == (fx.repo / ".cvmfspublished").read_bytes()
    assert _Proxy.seen == [f"{server.repo_url()}/.cvmfspublished"]


def test_dead_proxy_falls_back_to_direct(server: Server, fx: Fixture) -> None:
    f = HttpFetcher([server.repo_url()], repo=FQRN, proxy=f"{_dead()};DIRECT", retries=0)
    assert f.get(".cvmfswhitelist", what="whitelist") == (fx.repo / ".cvmfswhitelist").read_bytes()


class _ErrorPage(_Quiet):
    """A squid whose cache holds an error page: every answer is that page, with 200."""

    def do_GET(self) -> None:
        self._send(b"<html><body>ERR_CONNECT_FAIL</body></html>\n")


def test_bad_data_from_a_proxy_falls_back_to_the_next_proxy(server: Server, fx: Fixture) -> None:
    # pr20a finding 2: an object whose hash failed ended the server's proxies: DIRECT was never asked.
    from cernvm_build.cvmfs.objects import hash_bytes

    cert = fx.repo / "data"
    path = next(p for p in cert.rglob("*X"))
    name = path.parent.name + path.name[:-1]
    wanted = path.read_bytes()
    assert str(hash_bytes(wanted)) == name

    def checked(blocks: Iterator[bytes]) -> bytes:
        data = b"".join(blocks)
        if str(hash_bytes(data)) != name:
            raise IntegrityError(f"{name}X: content hash mismatch")
        return data

    with http_server(_ErrorPage) as page:
        f = HttpFetcher([server.repo_url()], repo=FQRN, proxy=f"{page};DIRECT", retries=0)
        f.proxies = ProxyChain(f"{page};DIRECT")  # the page first, always
        relpath = f"data/{name[:2]}/{name[2:]}X"
        assert f.fetch(relpath, checked, what="certificate") == wanted


def test_server_closing_an_idle_connection_is_not_a_failure() -> None:
    # A server that answers one request per connection but claims keep-alive, then hangs up.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(5)
    port = lsock.getsockname()[1]

    def serve_one_per_connection() -> None:
        for _ in range(3):
            conn, _ = lsock.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
            conn.close()

    t = threading.Thread(target=serve_one_per_connection, daemon=True)
    t.start()
    f = HttpFetcher([f"http://127.0.0.1:{port}/cvmfs/x"], repo="x", retries=0)
    assert f.get("a", what="a") == b"ok"
    assert f.get("b", what="b") == b"ok"  # the reused connection is dead: one fresh try
    assert f.get("c", what="c") == b"ok"
    lsock.close()


def test_truncated_transfer_fails_over(server: Server, fx: Fixture) -> None:
    """A server that promises more bytes than it sends: the fetch moves on to the next server."""

    def short_answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly a little")

    with listening(short_answer) as port:
        broken = f"http://127.0.0.1:{port}/cvmfs/{FQRN}"
        f = HttpFetcher([broken, server.repo_url()], repo=FQRN, retries=1, backoff=0)
        assert f.get(".cvmfspublished", what="manifest") == (fx.repo / ".cvmfspublished").read_bytes()
        alone = HttpFetcher([broken], repo=FQRN, retries=1, backoff=0)
        with pytest.raises(Unreachable, match="no server could deliver it"):
            alone.get(".cvmfspublished", what="manifest")


def test_kept_alive_connections_are_shared_by_threads() -> None:
    """A thread that ends leaves its connection to the next one (libfuse's workers come and go)."""
    accepted = []

    def serve_keep_alive(conn: socket.socket) -> None:
        accepted.append(conn)
        with conn:
            while conn.recv(65536):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with listening(serve_keep_alive) as port:
        f = HttpFetcher([f"http://127.0.0.1:{port}/cvmfs/x"], repo="x", retries=0)
        got: list[bytes] = []
        for name in ("a", "b", "c"):
            t = threading.Thread(target=lambda n=name: got.append(f.get(n, what=n)))
            t.start()
            t.join()
    assert got == [b"ok"] * 3
    assert len(accepted) == 1


def test_a_body_read_to_its_end_keeps_its_connection_whatever_its_size() -> None:
    """Objects bigger than what an error page may be drained to still leave their connection for
    the next request (each new connection costs the server a thread and both sides a handshake)."""
    body = random.Random(3).randbytes(300 << 10)
    connections: list[int] = []

    class Handler(_Quiet):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            connections.append(1)

        def do_GET(self) -> None:
            self._send(body)

    with http_server(Handler) as url:
        f = HttpFetcher([f"{url}/cvmfs/x"], repo="x", retries=0)
        for name in "abc":
            assert f.get(name, what=name) == body
        assert len(connections) == 1


def _raw_server(answers: list[bytes]) -> tuple[socket.socket, str]:
    """A server answering each request on one kept-alive connection with the next raw response."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = lsock.accept()
            with conn:
                for answer in answers:
                    if not conn.recv(65536):
                        return
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return lsock, f"http://127.0.0.1:{lsock.getsockname()[1]}/cvmfs/x"


def test_response_headers_are_read_by_our_own_parser_with_its_bounds() -> None:
    """Header names in any case, a folded line, a chunked body, a 404 with a body: all on one
    kept-alive connection; then a response with more header lines than allowed is a failed
    transfer (one line), not a hang or a traceback."""
    lsock, url = _raw_server(
        [
            b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\nX-Long: a\r\n  b\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]
    )
    f = HttpFetcher([url], repo="x", retries=0)
    assert f.get("a", what="a") == b"hello"
    assert f.get("b", what="b") == b"abcde"
    with pytest.raises(CvmfsError, match="not found"):
        f.get("c", what="c")
    assert f.get("d", what="d") == b"ok"  # the 404's body was drained: the same connection
    lsock.close()
    # on a fresh connection (a reused one that fails gets one fresh try, which this server ignores)
    lsock, url = _raw_server([b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n"])
    with pytest.raises(Unreachable, match="got more than 100 headers"):
        HttpFetcher([url], repo="x", retries=0).get("e", what="e")
    lsock.close()


def test_pipelined_answers_each_go_to_their_own_request_and_what_fails_is_fetched_alone() -> None:
    """``fetch_many``: all requests on one connection at once; a 404 in the middle is drained and
    that object alone is asked again (and fails alone); an answer that closes the connection ends
    the pipeline and the rest are fetched one by one."""
    answers = {
        b"a": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA",
        b"b": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nBB\r\n0\r\n\r\n",
        b"c": b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
        b"d": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nD",
        b"e": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nE",
    }
    asked: list[list[bytes]] = []  # by connection, the objects asked for

    def serve(conn: socket.socket) -> None:
        mine: list[bytes] = []
        asked.append(mine)
        buf = b""
        with conn:
            while data := conn.recv(65536):
                buf += data
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    name = head.split(b" ")[1].rsplit(b"/", 1)[1]
                    mine.append(name)
                    conn.sendall(answers[name])
                    if name == b"d":
                        return

    with listening(serve) as port:
        f = HttpFetcher([f"http://127.0.0.1:{port}/cvmfs/x"], repo="x", retries=0)
        items = [(n, lambda blocks: b"".join(blocks), n, None) for n in "abcde"]
        got = dict(f.fetch_many(items))
    assert [got[i] for i in (0, 1, 3, 4)] == [b"A", b"BB", b"D", b"E"]
    assert isinstance(got[2], CvmfsError) and "not found" in str(got[2])
    assert asked[0] == [b"a", b"b", b"c", b"d"]  # pipelined up to the close (e was sent too)
    assert sorted(n for later in asked[1:] for n in later) == [b"c", b"e"]


def test_a_pipeline_of_nothing_opens_no_connection() -> None:
    """A boot-list batch whose objects are all claimed elsewhere is empty: no connection for it."""
    peers: list[int] = []  # the client port of each connection, in the order they came
    arrived = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            peers.append(conn.getpeername()[1])
            arrived.set()

    with listening(serve) as port:
        f = HttpFetcher([f"http://127.0.0.1:{port}/cvmfs/x"], repo="x", retries=0)
        assert list(f.fetch_many([], retry=False)) == []
        # a probe connection afterwards: once it is seen, one fetch_many opened would have been too
        with socket.create_connection(("127.0.0.1", port)) as probe:
            assert arrived.wait(10)
            assert peers == [probe.getsockname()[1]]


class _Busy(_Quiet):
    """503 (or 429) with ``Retry-After: <later>`` to the first ``busy`` requests, then 200."""

    later = ""
    code = 503
    busy = 1
    seen = 0

    def do_GET(self) -> None:
        cls = type(self)
        cls.seen += 1
        if cls.seen <= cls.busy:
            self.send_response(cls.code)
            self.send_header("Retry-After", cls.later)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(b"ok")


@pytest.mark.parametrize(
    ("code", "later", "waits"),
    [
        (503, "3", [3.0]),  # asked for: waited, not the 0.1 s back-off
        (429, "0", [0.1]),  # less than the back-off: the back-off
        (503, "soon", [0.1]),  # not a delay or a date: the back-off
        (503, "Wed, 21 Oct 2015 07:28:00 GMT", [0.1]),  # a date past: the back-off
    ],
)
def test_retry_after_is_honoured_within_the_cap(
    monkeypatch: pytest.MonkeyPatch, code: int, later: str, waits: list[float]
) -> None:
    """lf18: a server (our own ``boundedhttp`` past a client's share) answering 503 or 429 with
    ``Retry-After`` was retried after 0.1 s, and again after 0.2 s: the fetch gave up before the
    server was ready. Now the wait it asks for is the wait (the sleeps recorded, not timed)."""
    from cernvm_build.cvmfs import fetch

    slept: list[float] = []
    monkeypatch.setattr(fetch, "_sleep", slept.append)
    monkeypatch.setattr(_Busy, "code", code)
    monkeypatch.setattr(_Busy, "later", later)
    monkeypatch.setattr(_Busy, "seen", 0)
    with http_server(_Busy) as url:
        f = HttpFetcher([url], repo="x", retries=2)
        assert f.get("a", what="a") == b"ok"
    assert slept == waits


def test_a_retry_after_past_the_cap_passes_the_server_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A huge (or far-future) Retry-After is not waited for: the next server, at once; the
    server alone is unreachable, the error saying why. Within the fetcher's deadline too."""
    from cernvm_build.cvmfs import fetch

    slept: list[float] = []
    monkeypatch.setattr(fetch, "_sleep", slept.append)
    monkeypatch.setattr(_Busy, "busy", 1 << 30)
    for later, cap, deadline in (
        ("99999999999999999999999999999999", "10", None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", "10", None),
        ("5", "2", 2.0),
    ):
        monkeypatch.setattr(_Busy, "later", later)
        with http_server(_Busy) as busy:
            f = HttpFetcher([busy], repo="x", retries=5, deadline=deadline)
            with pytest.raises(
                Unreachable, match=rf"HTTP 503 .*Retry-After \d+ s, more than the {cap} s waited"
            ):
                f.get("a", what="a")
            assert _Busy.seen >= 1
    assert slept == []
    monkeypatch.setattr(_Busy, "later", "1000")
    with http_server(_Busy) as busy, http_server(_Ok) as good:
        assert HttpFetcher([busy, good], repo="x", retries=5).get("a", what="a") == b"fine"
    assert slept == []


class _Ok(_Quiet):
    def do_GET(self) -> None:
        self._send(b"fine")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_local_source_s_fifo_or_folder_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """pr18d finding 3: a FIFO in place of a signed file or an object of a local Stratum directory
    was opened blocking: replicate, info and verify waited for a writer for ever."""
    import os

    from cernvm_build.cvmfs.fetch import LocalFetcher

    path = tmp_path / ".cvmfswhitelist"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    fetcher = LocalFetcher(tmp_path, repo="a.org")
    with pytest.raises(CvmfsError, match=r"a\.org: whitelist cannot be read at .*\.cvmfswhitelist: ") as e:
        fetcher.get(".cvmfswhitelist", what="whitelist")
    assert e.value.hint and "regular files" in e.value.hint


@pytest.mark.parametrize(
    ("location", "error"),
    [
        ("http://[x", "HTTP 302 redirect to a bad URL 'http://[x'"),
        ("{dead}/x", "redirected to '{dead}/x': "),
        # pr33a: a cloud's metadata service, never asked (httpredirect's rule, as the downloads')
        (
            "http://169.254.169.254/latest/meta-data/",
            "HTTP 302 redirect to 'http://169.254.169.254/latest/meta-data/' refused:"
            " into a link-local address, from 127.0.0.1",
        ),
    ],
)
def test_a_redirect_that_fails_names_where_it_led(location: str, error: str) -> None:
    """pr18d finding 6: the error named the URL asked for, and blamed it for the redirect's target."""
    dead = _dead()

    class Redirect(_Quiet):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", location.format(dead=dead))
            self.send_header("Content-Length", "0")
            self.end_headers()

    with http_server(Redirect) as url:
        f = HttpFetcher([f"{url}/cvmfs/x"], repo="x", retries=0, timeout=5)
        with pytest.raises(CvmfsError) as e:
            f.get(".cvmfspublished", what="manifest")
    assert f"{url}/cvmfs/x/.cvmfspublished: {error.format(dead=dead)}" in str(e.value), str(e.value)


def test_a_redirect_loop_says_so() -> None:
    """The redirect past the five followed was reported as "HTTP 302 Found", which says nothing."""

    class Loop(_Quiet):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()

    with http_server(Loop) as url:
        f = HttpFetcher([f"{url}/cvmfs/x"], repo="x", retries=0, timeout=5)
        with pytest.raises(Unreachable) as e:
            f.get(".cvmfspublished", what="manifest")
    assert f"{url}/loop: HTTP 302 Found, a redirect past the 5 followed (a loop?))" in str(e.value), str(
        e.value
    )


def test_a_length_bound_body_is_not_read_again_for_its_end() -> None:
    """Once a body of a declared length has all come, the fetch hands it on and stops: no further
    read of the response only to meet its end (a call per fetched object, issue 13); a shorter one
    still asks until the end, and is a broken transfer."""

    class Answer:
        def __init__(self, blocks: list[bytes], length: int) -> None:
            self.blocks, self.length = blocks, length

        def read1(self, n: int) -> bytes:
            assert self.blocks, "read past the end of a body that had all come"
            return self.blocks.pop(0)

    fetcher = HttpFetcher(["http://127.0.0.1:9/r"], repo="x.test")
    whole = Answer([b"abc", b"de"], 5)
    assert list(fetcher._body(whole, None, "obj")) == [b"abc", b"de"]  # type: ignore[arg-type]
    short = Answer([b"abc", b""], 5)
    with pytest.raises(_TransportError, match="after 3 of 5 bytes"):
        list(fetcher._body(short, None, "obj"))  # type: ignore[arg-type]
