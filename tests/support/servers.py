"""Real servers tests start on 127.0.0.1: nginx (a Stratum written by ``cvmfs nginx-config``) and
squid, with their access logs counted; the objects ``cvmfs.serve`` sent. Shared by the nginx, squid,
fleet, image and Debian tests and ``bench/fleet.py``."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.publish import create_repository, publish_tree

from . import free_port


def tool(name: str) -> str:
    """The path of a server binary; a missing one FAILS the test with what to install."""
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed (hint: apt-get install {name}; 'make deps' installs it)")
    return path


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
def running(cmd: list[str], port: int, what: str) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` started, once it listens on ``port``; terminated at the end."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        _wait_port(port, proc, what)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _object_sent(line: str) -> bool:
    return "/data/" in line and '" 200 ' in line


@contextlib.contextmanager
def requests_served(keep: Callable[[str], bool] = lambda _line: True) -> Iterator[list[str]]:
    """The log lines of the requests the test server (``cvmfs.serve``) answers while the block runs
    (those ``keep`` keeps)."""
    lines: list[str] = []

    class Record(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            line = record.getMessage()
            if keep(line):
                lines.append(line)

    logger = logging.getLogger("cernvm_build.cvmfs.serve")
    handler, level = Record(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def object_requests_served() -> contextlib.AbstractContextManager[list[str]]:
    """The repository objects (``/data/``) the test server sends while the block runs: its log lines."""
    return requests_served(_object_sent)


def object_requests(log: Path) -> int:
    """Object requests in an access log (nginx's or squid's)."""
    return sum(1 for line in log.read_text().splitlines() if "/data/" in line) if log.exists() else 0


@dataclass(frozen=True)
class Origin:
    """A published repository and the nginx configuration that serves it (not started)."""

    stratum: Path
    public_key: Path
    conf: Path
    port: int

    @property
    def argv(self) -> list[str]:
        return [tool("nginx"), "-c", str(self.conf), "-g", "daemon off;"]

    @property
    def log(self) -> Path:
        return self.conf.parent / "access.log"


def nginx_origin(work: Path, fqrn: str, tree: Path, *, normalize_owner: bool = False) -> Origin:
    """``tree`` published as ``fqrn`` (tag v1) under ``work/srv`` and an nginx configuration for it."""
    keys = keymod.generate_keys(fqrn)
    keys.save(work / "keys")
    stratum = work / "srv" / fqrn
    create_repository(stratum, fqrn, keys)
    publish_tree(stratum, fqrn, keys, tree, tag="v1", normalize_owner=normalize_owner)
    port = free_port()
    conf = work / "nginx" / "nginx.conf"
    conf.parent.mkdir()
    argv = ["cvmfs", "nginx-config", str(work / "srv"), "--port", str(port), "--listen", "127.0.0.1"]
    assert main([*argv, "--user", "root", "-o", str(conf)]) == 0
    return Origin(stratum, work / "keys" / f"{fqrn}.pub", conf, port)
