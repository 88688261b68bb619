"""A hostile repository *server* (pr33a), on real local sockets: what the mirror's HTTP source and
cernvm-launch's downloads (the same ``Deadlined.get``) and context URLs (urllib) do when the peer
answers a GET with an endless redirect body, a redirect out of bounds, a redirect loop, a partial or
empty answer, or a head past http.client's bounds: one line naming the URL and what happened,
nothing staged, memory bounded."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build import httpredirect
from cernvm_build.errors import ConfigFileError, ImageError, MirrorError
from cernvm_build.launch import catalog, contextsrc
from cernvm_build.mirror.source import HttpSource
from cernvm_build.mirror.yum import verify_yum
from tests.support import UNREAD_BOUND, endless_redirect_body, listening, sent_count


def test_a_redirect_s_endless_body_is_never_read_by_the_mirror(tmp_path: Path) -> None:
    """requests read a redirect's body whole before following it: 2.7 GB in 30 s to a MemoryError
    traceback, past the download's deadline. The body is left unread; the target's 404 is the
    answer (the file is not there)."""
    with endless_redirect_body() as (port, sent):
        src = HttpSource(f"http://127.0.0.1:{port}/", tmp_path / "stage", timeout=10)
        assert src.read("repodata/repomd.xml") is None
        assert sent_count(sent) < UNREAD_BOUND


def test_a_redirect_s_endless_body_is_never_read_by_a_context_url() -> None:
    """urllib reads a redirect's body whole too (``fp.read()`` before following): 2.7 GB in 19 s."""
    with endless_redirect_body() as (port, sent):
        with pytest.raises(ConfigFileError, match="cannot fetch the context: HTTP 404") as e:
            contextsrc.read_context(f"http://127.0.0.1:{port}/ctx")
        assert "\n" not in e.value.message
        assert sent_count(sent) < UNREAD_BOUND


def _redirect_to(location: bytes, hits: list[bytes]) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        with conn:
            hits.append(conn.recv(65536).split(b"\r\n")[0])
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")

    return handle


@pytest.mark.parametrize(
    ("location", "why"),
    [
        (b"http://169.254.169.254/latest/meta-data/iam/", "into a link-local address, from 127.0.0.1"),
        (b"http://[fe80::1%25lo]/x", "into a link-local address"),
        (b"file:///etc/passwd", "only http and https are followed"),
        (b"gopher://127.0.0.1/", "only http and https are followed"),
    ],
)
def test_a_redirect_out_of_bounds_is_refused_in_one_line(tmp_path: Path, location: bytes, why: str) -> None:
    """A loopback source may not redirect into the link-local block (a cloud's metadata service),
    nor any source to file:// or another scheme: the mirror, launch's image/catalog downloads and
    context URLs (one rule, ``httpredirect.refusal``) refuse it before connecting there."""
    hits: list[bytes] = []
    with listening(_redirect_to(location, hits)) as port:
        base = f"http://127.0.0.1:{port}/"
        src = HttpSource(base, tmp_path / "stage", timeout=5)
        with pytest.raises(MirrorError, match="cannot download: RedirectRefused: a redirect to") as m:
            src.read("repodata/repomd.xml")
        assert why in m.value.message and "\n" not in m.value.message
        with pytest.raises(ImageError, match=r"cannot fetch .*: RedirectRefused") as i:
            catalog.fetch(base + "index.json", tmp_path / "index.json")
        assert why in (i.value.hint or "")
        with pytest.raises(ConfigFileError, match=r"(?i)redirect.* (refused: |is not allowed)") as c:
            contextsrc.read_context(base + "ctx")  # urllib's own refusal for other schemes than ftp
        assert "\n" not in c.value.message
    assert len(hits) == 3  # one request each: the refused target was never asked
    assert not (tmp_path / "stage" / "repodata").exists() and not (tmp_path / "index.json").exists()


def test_redirect_rules() -> None:
    """The rule's cases that need no server of their own: https to http; into loopback from
    outside; within a block, or out of one, is followed."""
    assert httpredirect.refusal("https://192.0.2.1/a", "http://192.0.2.1/b") == "from https to http"
    assert httpredirect.refusal("http://192.0.2.1/a", "http://127.0.0.2/b") == (
        "into a loopback address, from 192.0.2.1"
    )
    assert httpredirect.refusal("http://192.0.2.1/a", "http://[::ffff:127.0.0.1]/b") is not None
    assert httpredirect.refusal("http://192.0.2.1/a", "http://localhost:8/b") is not None
    assert httpredirect.refusal("http://192.0.2.1/a", "http://192.0.2.1:99999/b") is not None
    # rv33a: a connect to the unspecified address is one to this machine (Linux), in any spelling
    for host in ("0.0.0.0", "0", "[::]", "[::ffff:0.0.0.0]", "0x0"):
        assert httpredirect.refusal("http://192.0.2.1/a", f"http://{host}:8/b") == (
            "into a loopback address, from 192.0.2.1"
        ), host
    assert httpredirect.refusal("http://127.0.0.1/a", "http://localhost/b") is None
    assert httpredirect.refusal("http://127.0.0.1/a", "https://192.0.2.1/b") is None
    assert httpredirect.refusal("http://192.0.2.1/a", "https://198.51.100.7/b") is None


def test_a_name_is_resolved_once_for_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """rv33a: every redirect to a CDN name was a DNS query of its own, in the CernVM-FS fetcher
    (the initrd's mount) too, where the kept-alive connection to that name needs none. A name that
    did not resolve is not asked again either: behind a proxy this machine may resolve no outside
    name, and each redirect waited out the resolver's timeout."""
    asked: list[str] = []
    answers = {"cdn.example": "198.51.100.7", "meta.example": "169.254.169.254"}

    def getaddrinfo(host: str, port: int, *args: object) -> list[tuple[object, ...]]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(httpredirect, "_resolved", {}, raising=False)  # (each test its own)
    monkeypatch.setattr(httpredirect, "_unresolved", {}, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    now = [1000.0]
    monkeypatch.setattr(httpredirect.time, "monotonic", lambda: now[0])
    for n in range(3):
        assert httpredirect.refusal("http://192.0.2.1/a", f"http://cdn.example/o{n}") is None
        assert httpredirect.refusal("http://192.0.2.1/a", f"http://meta.example/o{n}") == (
            "into a link-local address, from 192.0.2.1"
        )
        assert httpredirect.refusal("http://192.0.2.1/a", "http://later.example/") is None
    assert sorted(asked) == ["cdn.example", "later.example", "meta.example"]
    # a failure is kept a short while only: a name that resolves later is checked then (rv33b: kept
    # for good, a transient failure let metadata.google.internal through from then on)
    answers["later.example"] = "169.254.169.254"
    now[0] += httpredirect._UNRESOLVED_KEPT_S + 1
    assert httpredirect.refusal("http://192.0.2.1/a", "http://later.example/") == (
        "into a link-local address, from 192.0.2.1"
    )


def test_a_redirect_loop_stops_after_ten_hops(tmp_path: Path) -> None:
    hits: list[bytes] = []
    with listening(_redirect_to(b"/again", hits)) as port:
        src = HttpSource(f"http://127.0.0.1:{port}/", tmp_path / "stage", timeout=5)
        with pytest.raises(MirrorError, match="TooManyRedirects: more than 10 redirects") as e:
            src.read("repodata/repomd.xml")
        assert len(hits) == 11 and "\n" not in e.value.message
        # urllib's loop message spans three lines ("...would lead to an infinite loop.\nThe last 30x")
        with pytest.raises(ConfigFileError, match="infinite loop") as c:
            contextsrc.read_context(f"http://127.0.0.1:{port}/ctx")
        assert "\n" not in c.value.message


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        (
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-2/99\r\nContent-Length: 3\r\n\r\nabc",
            "HTTP 206",
        ),
        (b"HTTP/1.1 304 Not Modified\r\n\r\n", "HTTP 304 Not Modified"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "HTTP 204 No Content, not the file"),
        (
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)),
            "got more than 100 headers",
        ),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000, "got more than 65536 bytes when reading header line"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nabc",
            "IncompleteRead(3 bytes read, 96 more expected)",
        ),
    ],
    ids=["206", "304", "204", "101-headers", "long-header-line", "short-body"],
)
def test_an_answer_that_is_not_the_file_is_one_line_and_nothing_is_staged(
    tmp_path: Path, answer: bytes, line: str
) -> None:
    """A 206/204/304 to a plain GET was staged as the file (an index then failed its parse, a
    package its hash: lines blaming the repository); a head past http.client's bounds said only
    "cannot download: ConnectionError"."""

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(answer)

    with listening(handle) as port:
        src = HttpSource(f"http://127.0.0.1:{port}/", tmp_path / "stage", timeout=5)
        with pytest.raises(MirrorError) as e:
            src.read("repodata/repomd.xml")
    assert line in e.value.message and "\n" not in e.value.message
    assert not (tmp_path / "stage" / "repodata" / "repomd.xml").exists()


_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY l0 "lol">'
    + b"".join(b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10))
    + b"]><repomd>&l9;</repomd>"
)
_EXTERNAL = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><repomd>&x;</repomd>'


@pytest.mark.parametrize(("body", "why"), [(_LAUGHS, "amplification"), (_EXTERNAL, "undefined entity")])
def test_entity_expansion_in_a_served_repomd_is_one_problem(tmp_path: Path, body: bytes, why: str) -> None:
    """Billion laughs and an external entity in ``repomd.xml`` from a real server: expat (2.4 and
    later) refuses the expansion, and ElementTree resolves no external entity; one problem line."""

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    with listening(handle) as port:
        src = HttpSource(f"http://127.0.0.1:{port}/", tmp_path / "stage", timeout=5)
        result = verify_yum(src)
    assert len(result.problems) == 1 and "repomd.xml:1:" in result.problems[0]
    assert why in result.problems[0] and "root:" not in result.problems[0]
