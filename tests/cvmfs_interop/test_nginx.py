"""``cvmfs nginx-config``: Debian's nginx, started by the test on 127.0.0.1 with the written
configuration, serves a replica: the cache headers of a Stratum-1, the reader and the real cvmfs2
read through it."""

from __future__ import annotations

import http.client
import subprocess
from pathlib import Path

import pytest

from cernvm_build.cvmfs.fetch import USER_AGENT
from cernvm_build.cvmfs.serve import LONG_CACHE, SHORT_CACHE
from tests.support.servers import nginx_origin, running, tool

from .real import locate, mounted
from .test_replicate import FQRN, _objects, _read_all, _tree

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_nginx_serves_a_replica_with_stratum1_cache_headers(tmp_path: Path) -> None:
    o = nginx_origin(tmp_path, FQRN, _tree(tmp_path / "src", 1))
    stratum, pub, port = o.stratum, o.public_key, o.port
    check = subprocess.run([tool("nginx"), "-t", "-c", str(o.conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with running(o.argv, port, "nginx"):
        base = f"/cvmfs/{FQRN}"
        status, headers, body = _get(port, f"{base}/.cvmfspublished")
        assert status == 200 and body == (stratum / ".cvmfspublished").read_bytes()
        assert headers["cache-control"] == SHORT_CACHE == "public, max-age=61"
        assert _get(port, f"{base}/.cvmfswhitelist")[1]["cache-control"] == SHORT_CACHE
        obj = sorted(_objects(stratum))[0]
        status, headers, body = _get(port, f"{base}/{obj}")
        assert status == 200 and body == (stratum / obj).read_bytes()
        assert headers["cache-control"] == LONG_CACHE and "immutable" in LONG_CACHE
        status, headers, _ = _get(port, f"{base}/data/00/{'0' * 38}")
        assert status == 404 and "cache-control" not in headers  # a miss is never cached
        assert _get(port, f"{base}/data/txn/publish.lock")[0] == 404
        assert _get(port, "/etc/passwd")[0] == 404
        assert _get(port, f"{base}/../../keys/{FQRN}.pub")[0] in (400, 404)

        url = f"http://127.0.0.1:{port}{base}"
        assert _read_all(url, pub) == _read_all(stratum, pub)
        tools = locate(tmp_path)
        with mounted(tools, f"http://127.0.0.1:{port}/cvmfs/@fqrn@", FQRN, pub, tmp_path / "real") as mnt:
            assert (mnt / "sub" / "nested").read_text() == "nested catalog file, step 1\n"
            assert (mnt / "big.bin").read_bytes() == (tmp_path / "src" / "big.bin").read_bytes()
        agents = {line.rsplit('"', 2)[-2] for line in o.log.read_text().splitlines()}
        assert agents - {"-", USER_AGENT}  # the real client's own requests went through nginx


def test_nginx_serves_no_link_out_of_the_stratum(tmp_path: Path) -> None:
    """pr26c: the written config let nginx follow symbolic links (its default), so a link in the
    Stratum to a file outside it was served, where ``cvmfs serve`` refuses such a path. The real
    nginx now refuses it too, in the signed files' location and under data/ alike."""
    o = nginx_origin(tmp_path, FQRN, _tree(tmp_path / "src", 1))
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web\n")
    (o.stratum / "leak").symlink_to(secret)
    (o.stratum / "data" / "00" / "leak").symlink_to(secret)
    (o.stratum / "data" / "outdir").symlink_to(tmp_path)
    with running(o.argv, o.port, "nginx"):
        base = f"/cvmfs/{FQRN}"
        assert _get(o.port, f"{base}/.cvmfspublished")[0] == 200  # the plain files still are served
        for path in (f"{base}/leak", f"{base}/data/00/leak", f"{base}/data/outdir/secret.txt"):
            status, _, body = _get(o.port, path)
            assert status in (403, 404) and b"not for the web" not in body, path
