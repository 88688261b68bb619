"""The development Stratum server: layout, cache headers, HEAD, ranges, no escapes."""

from __future__ import annotations

import http.client
import urllib.parse
from pathlib import Path

import pytest

from cernvm_build.cvmfs.serve import LONG_CACHE, SHORT_CACHE, Server, serve
from cernvm_build.errors import CvmfsError

from .conftest import FQRN, ROOT_REV2, Fixture


def request(server: Server, method: str, path: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    u = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_cache_headers(fx: Fixture, server: Server) -> None:
    resp, body = request(server, "GET", f"/cvmfs/{FQRN}/.cvmfspublished")
    assert resp.status == 200 and body == (fx.repo / ".cvmfspublished").read_bytes()
    assert resp.getheader("Cache-Control") == SHORT_CACHE
    resp, _ = request(server, "GET", f"/cvmfs/{FQRN}/.cvmfswhitelist")
    assert resp.getheader("Cache-Control") == SHORT_CACHE
    obj = f"/cvmfs/{FQRN}/data/{ROOT_REV2[:2]}/{ROOT_REV2[2:]}C"
    resp, body = request(server, "GET", obj)
    assert resp.status == 200 and resp.getheader("Cache-Control") == LONG_CACHE
    assert body == fx.object(ROOT_REV2, "C").read_bytes()


def test_head_and_ranges(fx: Fixture, server: Server) -> None:
    path = f"/cvmfs/{FQRN}/.cvmfspublished"
    full = (fx.repo / ".cvmfspublished").read_bytes()
    resp, body = request(server, "HEAD", path)
    assert resp.status == 200 and body == b"" and int(resp.getheader("Content-Length")) == len(full)
    resp, body = request(server, "GET", path, {"Range": "bytes=1-40"})
    assert resp.status == 206 and body == full[1:41]
    assert resp.getheader("Content-Range") == f"bytes 1-40/{len(full)}"
    resp, body = request(server, "GET", path, {"Range": "bytes=-5"})
    assert resp.status == 206 and body == full[-5:]
    resp, _ = request(server, "GET", path, {"Range": f"bytes={len(full) + 10}-"})
    assert resp.status == 416


def test_not_found_and_no_escape(server: Server) -> None:
    for path in (
        f"/cvmfs/{FQRN}/data/00/missing",
        f"/cvmfs/{FQRN}/../keys/{FQRN}.masterkey",
        f"/cvmfs/{FQRN}/%2e%2e/keys/{FQRN}.masterkey",
        "/cvmfs/other.repo/.cvmfspublished",
        f"/cvmfs/{FQRN}/data",
    ):
        resp, _ = request(server, "GET", path)
        assert resp.status == 404, path


def test_folder_of_repositories(fx: Fixture, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "srv"
    shutil.copytree(fx.repo, root / FQRN)
    shutil.copytree(fx.repo, root / "copy.test")
    with serve(root) as s:
        assert sorted(s.repositories) == ["copy.test", FQRN]
        resp, _ = request(s, "GET", "/cvmfs/copy.test/.cvmfspublished")
        assert resp.status == 200
        with pytest.raises(CvmfsError, match="serves 2 repositories"):
            s.repo_url()


def test_nothing_to_serve(tmp_path: Path) -> None:
    with pytest.raises(CvmfsError, match="no repository here"):
        serve(tmp_path)


def test_a_client_that_went_away_is_not_a_traceback(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """socketserver prints a traceback for whatever a request raises; a client that closed its
    connection mid-answer (BrokenPipe/ConnectionReset while the headers go out) is not an error of
    the server's. Anything else still is."""
    for gone in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")):
        try:
            raise gone
        except ConnectionError:
            server.httpd.handle_error(None, ("127.0.0.1", 1))  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a bug")
    except ValueError:
        server.httpd.handle_error(None, ("127.0.0.1", 1))  # type: ignore[arg-type]
    assert "ValueError: a bug" in capsys.readouterr().err
