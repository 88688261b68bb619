"""Squid in the path: Debian's squid, started by the test on 127.0.0.1 as a site proxy in front of an
nginx Stratum (``cvmfs nginx-config``); the reader goes through it with ``proxy=``. Two readers with
empty caches read every file: through squid the origin serves the objects once, without it twice."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.publish import create_repository, publish_tree
from cernvm_build.cvmfs.repository import open_repository

from .test_nginx import _free_port
from .test_replicate import FQRN, _tree

pytestmark = pytest.mark.integration


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, f"{what} exited: {proc.stderr.read() if proc.stderr else ''!r}"
            if time.monotonic() >= deadline:
                pytest.fail(f"{what} did not start listening")
            time.sleep(0.05)


@contextlib.contextmanager
def _running(cmd: list[str], port: int, what: str) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        _wait_port(port, proc, what)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed (hint: apt-get install {name}; 'make deps' installs it)")
    return path


def test_reader_through_squid_hits_the_origin_once(tmp_path: Path) -> None:
    nginx, squid = _tool("nginx"), _tool("squid")
    keys = keymod.generate_keys(FQRN)
    keys.save(tmp_path / "keys")
    pub = tmp_path / "keys" / f"{FQRN}.pub"
    stratum = tmp_path / "srv" / FQRN
    create_repository(stratum, FQRN, keys)
    publish_tree(stratum, FQRN, keys, _tree(tmp_path / "src", 1), tag="v1")
    origin, proxy = _free_port(), _free_port()
    run = tmp_path / "nginx"
    run.mkdir()
    conf = run / "nginx.conf"
    argv = ["cvmfs", "nginx-config", str(tmp_path / "srv"), "--port", str(origin), "--listen", "127.0.0.1"]
    assert main([*argv, "--user", "root", "-o", str(conf)]) == 0
    squid_conf = tmp_path / "squid.conf"
    squid_conf.write_text(
        f"http_port 127.0.0.1:{proxy}\npid_filename none\ncache_log /dev/null\naccess_log none\n"
        "cache_store_log none\ncache_mem 64 MB\nmaximum_object_size_in_memory 32 MB\n"
        "maximum_object_size 32 MB\nhttp_access allow localhost\nhttp_access deny all\n"
        "netdb_filename none\nshutdown_lifetime 0 seconds\ncoredump_dir /tmp\n"
    )
    url = f"http://127.0.0.1:{origin}/cvmfs/{FQRN}"
    log = run / "access.log"

    def read_everything(via: str | None) -> dict[str, bytes]:
        with open_repository(url, fqrn=FQRN, public_keys=[pub], proxy=via) as repo:
            return {e.path: repo.read_bytes(e) for e in repo.walk("/") if e.is_file}

    def object_requests() -> int:
        return sum(1 for line in log.read_text().splitlines() if "/data/" in line)

    with _running([nginx, "-c", str(conf), "-g", "daemon off;"], origin, "nginx"):
        direct = read_everything(None)
        once = object_requests()
        assert read_everything(None) == direct
        assert object_requests() == 2 * once  # no proxy: every reader goes to the origin
        with _running([squid, "-N", "-f", str(squid_conf)], proxy, "squid"):
            before = object_requests()
            assert read_everything(f"http://127.0.0.1:{proxy}") == direct
            first = object_requests() - before
            assert read_everything(f"http://127.0.0.1:{proxy}") == direct
            second = object_requests() - before - first
    assert first == once  # the first reader's misses went through to the origin
    assert second == 0  # the second reader's objects all came from squid
