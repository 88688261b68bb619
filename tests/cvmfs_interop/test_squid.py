"""Squid in the path: Debian's squid, started by the test on 127.0.0.1 as a site proxy in front of an
nginx Stratum (``cvmfs nginx-config``); the reader goes through it with ``proxy=``. Two readers with
empty caches read every file: through squid the origin serves the objects once, without it twice.
Two squids, one of them stopped: proxy groups and fail-over (``CVMFS_HTTP_PROXY`` syntax) in the
reader, the FUSE mount (the initrd's ``cvmfs.mount``) and, for comparison, the real cvmfs2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.cvmfs.squid import squid_config
from tests.support import free_port
from tests.support.servers import nginx_origin, object_requests, running, tool

from .real import locate, mounted
from .test_replicate import FQRN, _tree

pytestmark = pytest.mark.integration


def _squid(logs: Path, name: str) -> tuple[list[str], int, Path]:
    """A site squid as ``cvmfs squid-config`` writes it, on a free port, its run directory in
    ``logs``: (argv, port, access log)."""
    port = free_port()
    run = logs / name
    run.mkdir()
    run.chmod(0o1777)
    conf = run / "squid.conf"
    conf.write_text(squid_config(port=port, run_dir=run, listen="127.0.0.1", clients=("127.0.0.1",)))
    return [tool("squid"), "-N", "-f", str(conf)], port, run / "access.log"


def test_reader_through_squid_hits_the_origin_once(tmp_path: Path, logs: Path) -> None:
    o = nginx_origin(tmp_path, FQRN, _tree(tmp_path / "src", 1))
    pub, nginx_argv, origin, log = o.public_key, o.argv, o.port, o.log
    squid_argv, proxy, _ = _squid(logs, "squid")
    url = f"http://127.0.0.1:{origin}/cvmfs/{FQRN}"

    def read_everything(via: str | None) -> dict[str, bytes]:
        with open_repository(url, fqrn=FQRN, public_keys=[pub], proxy=via) as repo:
            return {e.path: repo.read_bytes(e) for e in repo.walk("/") if e.is_file}

    def objectobject_requests() -> int:
        return object_requests(log)

    with running(nginx_argv, origin, "nginx"):
        direct = read_everything(None)
        once = objectobject_requests()
        assert read_everything(None) == direct
        assert objectobject_requests() == 2 * once  # no proxy: every reader goes to the origin
        with running(squid_argv, proxy, "squid"):
            before = objectobject_requests()
            assert read_everything(f"http://127.0.0.1:{proxy}") == direct
            first = objectobject_requests() - before
            assert read_everything(f"http://127.0.0.1:{proxy}") == direct
            second = objectobject_requests() - before - first
    assert first == once  # the first reader's misses went through to the origin
    assert second == 0  # the second reader's objects all came from squid


def test_proxy_groups_and_fail_over_with_two_squids_one_stopped(tmp_path: Path, logs: Path) -> None:
    o = nginx_origin(tmp_path, FQRN, _tree(tmp_path / "src", 1))
    pub, nginx_argv, origin, origin_log = o.public_key, o.argv, o.port, o.log
    a_argv, a_port, a_log = _squid(logs, "squid-a")
    b_argv, b_port, b_log = _squid(logs, "squid-b")
    a, b, dead = (f"http://127.0.0.1:{p}" for p in (a_port, b_port, free_port()))
    url = f"http://127.0.0.1:{origin}/cvmfs/{FQRN}"

    def read(chain: str) -> dict[str, bytes]:
        with open_repository(url, fqrn=FQRN, public_keys=[pub], proxy=chain, retries=0) as repo:
            return {e.path: repo.read_bytes(e) for e in repo.walk("/") if e.is_file}

    with running(nginx_argv, origin, "nginx"):
        want = read("DIRECT")
        objects = object_requests(origin_log)
        with running(a_argv, a_port, "squid A") as squid_a, running(b_argv, b_port, "squid B"):
            # ';' is fail-over, not balancing: with both up, only the first group is used
            assert read(f"{a};{b}") == want
            assert object_requests(a_log) == objects and object_requests(b_log) == 0
            # a dead member of a group hands over to the next member of that group, never to DIRECT
            before = object_requests(origin_log)
            assert read(f"{dead}|{b};DIRECT") == want
            assert object_requests(b_log) == objects and object_requests(origin_log) == before + objects
            # one squid stopped while a reader is half-way: the rest comes through the next group
            with open_repository(url, fqrn=FQRN, public_keys=[pub], proxy=f"{a};{b}", retries=0) as repo:
                files = [e for e in repo.walk("/") if e.is_file]
                half = len(files) // 2
                got = {e.path: repo.read_bytes(e) for e in files[:half]}
                a_served, b_served = object_requests(a_log), object_requests(b_log)
                squid_a.terminate()
                squid_a.wait(timeout=30)
                got.update({e.path: repo.read_bytes(e) for e in files[half:]})
            assert got == want
            assert object_requests(a_log) == a_served and object_requests(b_log) > b_served
            # the FUSE mount (as the initrd runs it) through the same chain, A stopped
            mnt = tmp_path / "mnt"
            mnt.mkdir()
            cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", url]
            cmd += ["--public-key", str(pub), "--proxy", f"{a}|{dead};{b};DIRECT", str(mnt)]
            cmd += ["--cache", str(tmp_path / "fuse-cache")]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            try:
                before_b = object_requests(b_log)
                got = {"/" + str(p.relative_to(mnt)): p.read_bytes() for p in mnt.rglob("*") if p.is_file()}
                assert got == want
                assert object_requests(b_log) > before_b  # through the second group, not DIRECT
            finally:
                subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60)
            # the real cvmfs2 with the same chain (the reference for the semantics)
            tools = locate(tmp_path)
            before_b, before_origin = object_requests(b_log), object_requests(origin_log)
            chain = f"{a}|{dead};{b};DIRECT"
            with mounted(tools, url, FQRN, pub, tmp_path / "real", CVMFS_HTTP_PROXY=f"'{chain}'") as real:
                got = {"/" + str(p.relative_to(real)): p.read_bytes() for p in real.rglob("*") if p.is_file()}
            assert got == want
            through_b = object_requests(b_log) - before_b
            assert through_b > 0  # the second group served it (squid B's misses are its only origin hits)
            assert object_requests(origin_log) - before_origin <= through_b
