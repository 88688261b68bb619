"""An S3 endpoint that accepts connections and never answers (pr33c), on a real local socket: `mirror
sync` ends after the mirror's retry budget with one line naming the endpoint (it took 725 s, six
requests of botocore's 120 s read timeout); a slow server answering within the timeout still syncs
(moto, each request held)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from cernvm_build.cli.main import main
from cernvm_build.mirror import s3direct
from cernvm_build.mirror.locals3 import Delay, LocalS3
from cernvm_build.mirror.s3client import make_client, s3_error
from tests.support import listening


def test_botocore_gets_the_mirrors_timeouts_and_retry_budget(s3env: None) -> None:
    """One source of truth: botocore's requests wait and retry as our own PUTs do, and a dead
    endpoint costs at most two and a half minutes per request (it was 12)."""
    config = make_client(endpoint_url="http://127.0.0.1:9").meta.config
    assert config.connect_timeout == s3direct.CONNECT_TIMEOUT
    assert config.read_timeout == s3direct.READ_TIMEOUT
    assert config.retries == {"total_max_attempts": s3direct.ATTEMPTS, "mode": "standard"}
    assert s3direct.ATTEMPTS * max(s3direct.CONNECT_TIMEOUT, s3direct.READ_TIMEOUT) <= 150


def test_a_connect_timeout_names_the_endpoint_not_the_request() -> None:
    e = botocore.exceptions.ConnectTimeoutError(endpoint_url="https://s3.example:8443/b?list-type=2&prefix=p")
    err = s3_error(e, "s3://b/p")
    assert err.message == (
        f"s3://b/p: the S3 endpoint https://s3.example:8443 did not accept a connection within"
        f" {s3direct.CONNECT_TIMEOUT:g} s ({s3direct.ATTEMPTS} tries)"
    )
    assert "--endpoint-url" in (err.hint or "")


@pytest.fixture
def stalled() -> Iterator[tuple[int, list[bytes]]]:
    """A server that reads each request and never answers; yields its port and the requests."""
    seen: list[bytes] = []
    done = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            seen.append(conn.recv(65536))
            done.wait(60)

    with listening(handle) as port:
        yield port, seen
        done.set()


def test_a_stalled_endpoint_ends_the_sync_in_one_line_after_the_retry_budget(
    tmp_path: Path,
    s3env: None,
    stalled: tuple[int, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, seen = stalled
    monkeypatch.setattr(s3direct, "READ_TIMEOUT", 1.0)  # the test's patience, not the rule's
    (tmp_path / "a.txt").write_text("hello")
    endpoint = f"http://127.0.0.1:{port}"
    rc = main(["mirror", "sync", str(tmp_path), "s3://b/p", "--endpoint-url", endpoint, "--last", "*.txt"])
    err = capsys.readouterr().err
    assert rc == 9 and "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    said = f"the S3 endpoint {endpoint} did not answer within 1 s ({s3direct.ATTEMPTS} tries)"
    assert lines == [f"error: s3://b/p: {said}"], err
    assert "hint: check --endpoint-url" in err
    assert len(seen) == s3direct.ATTEMPTS  # botocore's 5 retries after the first made it 6


def test_a_slow_endpoint_answering_within_the_timeout_still_syncs(
    tmp_path: Path, s3server: LocalS3, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3direct, "READ_TIMEOUT", 3.0)
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "index.html").write_text("<p>x</p>")
    server = s3server
    server.delays[:] = [Delay(method, "", 1.0) for method in ("GET", "PUT", "HEAD", "POST")]
    try:
        rc = main(
            ["mirror", "sync", str(tmp_path), f"s3://{bucket}/p", "--endpoint-url", server.endpoint, "-q"]
        )
    finally:
        server.delays.clear()
    assert rc == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="p/")["Contents"]}
    assert {"p/a.txt", "p/index.html"} <= keys
