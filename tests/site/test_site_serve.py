"""`site serve`: a real HTTP server on 127.0.0.1 that rebuilds when a source changes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sitehelpers import Builder, Edit

from cernvm_build.errors import CernVMError
from cernvm_build.site import serve
from cernvm_build.site.build import BuildReport
from cernvm_build.site.serve import Preview
from tests.support import (
    BODY_HEADERS,
    a_body_is_never_the_next_request,
    bounded_server_drops_silent_and_extra,
    one_client_gets_its_share_of_the_slots,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def preview(site: Path, tmp_path: Path) -> Iterator[Preview]:
    p = Preview(Builder(site, tmp_path / "out"), port=0, interval=0.1)
    p.start()
    yield p
    p.stop()


def wait_for(fn, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if fn():
            return True
        time.sleep(0.1)
    return False


def test_serves_pages_and_the_404_page(preview: Preview) -> None:
    r = requests.get(preview.url + "docs/quickstart/client/", timeout=10)
    assert r.status_code == 200 and "Quick start: the client" in r.text
    assert r.headers["Cache-Control"] == "no-store"
    missing = requests.get(preview.url + "no/such/page/", timeout=10)
    assert missing.status_code == 404 and "This page does not exist" in missing.text
    assert (404, "/no/such/page/") in preview.requests


def test_a_page_is_streamed_with_the_reload_tag_not_copied_whole(preview: Preview, tmp_path: Path) -> None:
    """pr17d: each request read the page whole and made a second copy with the tag (64 silent clients
    of a 22 MB page: 2.7 GB). Python's allocations while one 8 MB page is sent stay far below its size."""
    import hashlib
    import tracemalloc

    body = b"<p>" + b"x" * (8 << 20) + b"</p>\n"
    page = tmp_path / "out" / "big.html"
    page.write_bytes(b"<html><body>" + body + b"</body>\n</html>\n")
    (tmp_path / "out" / "nobody.html").write_bytes(b"<p>no body</p>")
    tag = f'<script src="/{serve.LIVE_PATH}.js"></script>'.encode()
    want = hashlib.sha256(b"<html><body>" + body + tag + b"</body>\n</html>\n").hexdigest()
    got = hashlib.sha256()
    tracemalloc.start()
    try:
        with requests.get(preview.url + "big.html", timeout=30, stream=True) as r:
            assert r.headers["Content-Length"] == str(page.stat().st_size + len(tag))
            for piece in r.iter_content(1 << 16):
                got.update(piece)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.hexdigest() == want
    assert peak < len(body) // 4, peak  # (the page read whole and copied with the tag: 25 MB)
    assert requests.get(preview.url + "nobody.html", timeout=10).content == b"<p>no body</p>" + tag


def test_rebuilds_on_change_and_survives_errors(preview: Preview, site: Path, edit: Edit) -> None:
    page = site / "content" / "docs" / "guides" / "site.md"
    url = preview.url + "docs/guides/site/"
    edit(page, "This site is generated", "This very site is generated")
    assert wait_for(lambda: "This very site" in requests.get(url, timeout=10).text)
    # a broken edit keeps the last good site online
    edit(page, "title: Building and publishing this site", "title: [broken")
    time.sleep(1.0)
    assert "This very site" in requests.get(url, timeout=10).text
    edit(page, "title: [broken", "title: Fixed title")
    assert wait_for(lambda: "Fixed title" in requests.get(url, timeout=10).text)


def test_live_reload_generation_moves_when_the_output_changes(
    preview: Preview, site: Path, edit: Edit
) -> None:
    page = requests.get(preview.url + "docs/guides/site/", timeout=10).text
    assert '<script src="/__livereload.js"></script></body>' in page  # added by the server only
    assert "__livereload" not in (preview.builder.out_dir / "docs/guides/site/index.html").read_text()
    assert "location.reload" in requests.get(preview.url + "__livereload.js", timeout=10).text
    before = requests.get(preview.url + "__livereload", timeout=10).text
    edit(site / "content" / "docs" / "guides" / "site.md", "This site is generated", "This site is built")
    assert wait_for(lambda: requests.get(preview.url + "__livereload", timeout=10).text != before)


def test_a_silent_connection_is_closed_and_connections_are_bounded(site: Path, tmp_path: Path) -> None:
    """An idle or half-sent request held a thread for ever; past the bound a new connection is closed
    at once, and the server answers again when one ends."""
    p = Preview(Builder(site, tmp_path / "out"), port=0, interval=60, idle_timeout=2, max_connections=2)
    p.start()
    try:
        host, port = p.server.server_address[:2]
        bounded_server_drops_silent_and_extra((str(host), port))
        assert wait_for(lambda: requests.get(p.url, timeout=5).status_code == 200)
    finally:
        p.stop()


def test_one_client_cannot_hold_every_slot(site: Path, tmp_path: Path) -> None:
    """One address could hold every slot; past its share it is answered 503, others are served."""
    p = Preview(Builder(site, tmp_path / "out"), port=0, interval=60, idle_timeout=5, max_connections=4,
                max_per_client=2)  # fmt: skip
    p.start()
    try:
        host, port = p.server.server_address[:2]
        assert wait_for(lambda: requests.get(p.url, timeout=5).status_code == 200)
        one_client_gets_its_share_of_the_slots((str(host), port), "/")
    finally:
        p.stop()


@pytest.mark.parametrize("keep_alive", [False, True], ids=["as-shipped", "keep-alive"])
@pytest.mark.parametrize("headers", BODY_HEADERS)
def test_a_request_body_is_never_taken_as_the_next_request(
    preview: Preview, headers: str, keep_alive: bool
) -> None:
    """pr18d finding 1 (found in ``cvmfs serve``): a GET's body was left unread for the next request.
    The preview answers HTTP/1.0 and closes after each request, which alone hid it; the rule is
    ``boundedhttp``'s, so it also holds on a kept-alive connection (the handler made HTTP/1.1)."""
    if keep_alive:
        preview._handler.protocol_version = "HTTP/1.1"
    host, port = preview.server.server_address[:2]
    a_body_is_never_the_next_request((str(host), port), "/", "/no/such/page/", headers)
    assert not any(path == "/no/such/page/" for _, path in preview.requests)


def test_an_unexpected_error_in_a_rebuild_is_reported_and_the_preview_keeps_watching(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A builder bug (an exception that is no CernVMError) killed the watcher thread: the preview served
    a stale site for good, with no word (pr17a finding 6). It is a failed build now, and the next edit
    is built."""
    errors: list[CernVMError] = []
    p = Preview(
        Builder(site, tmp_path / "out"), port=0, interval=0.1, on_build=lambda r, e: e and errors.append(e)
    )
    page = site / "content" / "docs" / "guides" / "site.md"
    real_build = p.builder.build

    def build() -> BuildReport:  # the fault: a bug of the builder that this page's text sets off
        if "BOOM" in page.read_text():
            raise ValueError("boom\nand a second line")
        return real_build()

    monkeypatch.setattr(p.builder, "build", build)
    p.start()
    try:
        url = p.url + "docs/guides/site/"
        edit(page, "This site is generated", "BOOM This site is generated")
        assert wait_for(lambda: bool(errors))
        assert str(errors[0]).endswith("the rebuild failed unexpectedly: ValueError: boom")
        assert errors[0].hint and "still served" in errors[0].hint
        edit(page, "BOOM This site is generated", "This fixed site is generated")
        assert wait_for(lambda: "This fixed site" in requests.get(url, timeout=10).text)
    finally:
        p.stop()


def test_the_requests_kept_are_bounded(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request was kept for good (a long-running preview grew without bound; pr17a finding 5)."""
    monkeypatch.setattr(serve, "REQUESTS_KEPT", 5)
    p = Preview(Builder(site, tmp_path / "out"), port=0, interval=60)
    p.start()
    try:
        for i in range(8):
            requests.get(p.url + f"no/{i}/", timeout=10)
        requests.get(p.url + "x" * 5000, timeout=10)
    finally:
        p.stop()
    assert [path for _s, path in p.requests][:4] == [f"/no/{i}/" for i in range(4, 8)]
    assert len(p.requests) == 5 and p.requests[-1] == (404, "/" + "x" * (serve.PATH_KEPT - 1))


def test_a_link_loop_in_the_site_is_a_failed_build_not_a_dead_watcher(
    site: Path, tmp_path: Path, edit: Edit
) -> None:
    """A link loop in the site folder (ELOOP, not ENOENT, from the watcher's stat) was a traceback
    at start, and made while serving it ended the watcher thread: no rebuild again, no word (pr19a 1)."""
    errors: list[CernVMError] = []
    loop = site / "content" / "loop.md"
    loop.symlink_to(loop.name)
    p = Preview(
        Builder(site, tmp_path / "out"), port=0, interval=0.1, on_build=lambda r, e: e and errors.append(e)
    )
    p.start()
    try:
        assert errors and "loop.md" in str(errors[0])
        loop.unlink()
        url = p.url + "docs/guides/site/"
        edit(site / "content" / "docs" / "guides" / "site.md", "This site is generated", "Looped site")
        assert wait_for(lambda: "Looped site" in requests.get(url, timeout=10).text)
        loop.symlink_to(loop.name)  # made while serving: the watcher goes on
        assert wait_for(lambda: len(errors) > 1)
        loop.unlink()
        edit(site / "content" / "docs" / "guides" / "site.md", "Looped site", "Unlooped site")
        assert wait_for(lambda: "Unlooped site" in requests.get(url, timeout=10).text)
    finally:
        p.stop()


def test_only_files_and_folders_inside_the_output_are_served(preview: Preview, tmp_path: Path) -> None:
    """A FIFO in the output held a server thread for ever in its open (a connection slot each), a link
    out of the output served what it named, and a HEAD's length was the page's without the reload tag
    (pr19a 2)."""
    import os

    out = preview.builder.out_dir
    secret = tmp_path / "secret.txt"
    secret.write_text("not the site's")
    (out / "secret.txt").symlink_to(secret)
    (out / "secret.html").symlink_to(secret)
    (out / "inside.html").symlink_to(out / "404.html")
    os.mkfifo(out / "fifo.txt")
    for name in ("secret.txt", "secret.html", "fifo.txt"):
        r = requests.get(preview.url + name, timeout=10)
        assert r.status_code == 404 and "not the site's" not in r.text, name
    assert requests.get(preview.url + "inside.html", timeout=10).status_code == 200
    for path in ("", "docs/", "assets/site.css"):
        got, head = (
            requests.get(preview.url + path, timeout=10),
            requests.head(preview.url + path, timeout=10),
        )
        assert got.status_code == head.status_code == 200
        assert head.headers["Content-Length"] == got.headers["Content-Length"] == str(len(got.content)), path
        assert head.content == b""


def test_a_404_page_or_folder_linked_out_of_the_output_is_not_served(
    preview: Preview, tmp_path: Path
) -> None:
    """note19: the preview followed a symbolic link ``404.html`` to a file outside the output and sent
    it to every request for a missing page; a folder linked out of the output is not served either."""
    out = preview.builder.out_dir
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.html").write_text("not the site's")
    (out / "404.html").unlink()
    (out / "404.html").symlink_to(secret / "secret.html")
    (out / "linked").symlink_to(secret)
    for path in ("no/such/page/", "linked/secret.html", "linked/"):
        r = requests.get(preview.url + path, timeout=10)
        assert r.status_code == 404 and "not the site's" not in r.text, path


def test_a_path_encoding_a_lone_surrogate_is_a_400_not_a_traceback(preview: Preview) -> None:
    """pr21 N1: ``/%ed%a0%80`` decodes (as ``translate_path`` decodes, ``surrogatepass``) to a
    lone surrogate no file name can hold: ``open`` raised ``UnicodeEncodeError``, the server printed a
    traceback and closed the connection with no answer. A surrogate in the query is no path."""
    import socket

    for path in ("%ed%a0%80", "%ed%a0%80.html", "docs/%ed%b0%80/"):
        for method in ("GET", "HEAD"):
            with socket.create_connection(preview.server.server_address[:2], timeout=10) as s:
                s.sendall(f"{method} /{path} HTTP/1.0\r\n\r\n".encode())
                status = s.makefile("rb").readline()
            assert status.startswith(b"HTTP/1.0 400"), (method, path, status)
    assert requests.get(preview.url + "?q=%ed%a0%80", timeout=10).status_code == 200


@pytest.mark.parametrize("below", ["", "x"], ids=["file", "below-a-file"])
def test_an_output_folder_that_cannot_be_made_is_one_error(site: Path, tmp_path: Path, below: str) -> None:
    """pr21 N13: ``site serve --out FILE`` was a FileExistsError (or NotADirectoryError) traceback."""
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / below if below else tmp_path / "file"
    p = Preview(Builder(site, out), port=0)
    try:
        with pytest.raises(CernVMError) as e:
            p.start()
    finally:
        p.server.server_close()
    assert e.value.message.startswith(f"cannot make the output folder {out}: ")
    assert (tmp_path / "file").read_text() == ""


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _get_over(family: int, address: str, port: int) -> bytes:
    import socket

    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((address, port))
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        return s.recv(64)


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
@pytest.mark.parametrize("host", ["::1", "::"])
def test_an_ipv6_host_is_served_over_ipv6(site: Path, tmp_path: Path, host: str) -> None:
    """``--host ::1`` bound an IPv4 socket (socketserver's default family): a bind error. ``::`` takes
    IPv4 clients too where the system allows dual stack (Linux does unless bindv6only is set)."""
    import socket

    p = Preview(Builder(site, tmp_path / "out"), host=host, port=0, interval=60)
    p.start()
    try:
        port = int(p.url.rsplit(":", 1)[1].split("/", 1)[0])
        assert p.url == f"http://[{host}]:{port}/"
        assert _get_over(socket.AF_INET6, "::1", port).startswith(b"HTTP/1.0 200")
        if host == "::" and Path("/proc/sys/net/ipv6/bindv6only").read_text().strip() == "0":
            assert _get_over(socket.AF_INET, "127.0.0.1", port).startswith(b"HTTP/1.0 200")
    finally:
        p.stop()


def test_a_host_name_with_an_ipv4_address_is_served_over_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    """rv23: a name's first address decided the family, and ``localhost`` often answers ``::1``
    first: ``--host localhost`` then refused ``http://127.0.0.1``, which it had served. A name with
    an IPv4 address binds IPv4; an IPv6-only name, IPv6; a literal, its own family."""
    import socket

    from cernvm_build import boundedhttp

    answers = {
        "both": [socket.AF_INET6, socket.AF_INET],
        "v6only": [socket.AF_INET6],
        "::1": [socket.AF_INET6],
        "127.0.0.1": [socket.AF_INET],
    }

    def getaddrinfo(host: str, *args: object) -> list[tuple[object, ...]]:
        return [(family, socket.SOCK_STREAM, 6, "", ("", 0)) for family in answers[host]]

    monkeypatch.setattr(boundedhttp.socket, "getaddrinfo", getaddrinfo)
    assert boundedhttp.address_family("both") == socket.AF_INET
    assert boundedhttp.address_family("v6only") == socket.AF_INET6
    assert boundedhttp.address_family("::1") == socket.AF_INET6
    assert boundedhttp.address_family("127.0.0.1") == socket.AF_INET
