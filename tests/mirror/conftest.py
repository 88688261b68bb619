"""Real S3 servers on 127.0.0.1 for the mirror tests: moto, and a single-node Ceph RADOS Gateway (one
cluster per test session, started on first use); each test gets its own bucket. ``target`` runs a
test against both."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.mirror import localrgw
from cernvm_build.mirror.locals3 import CREDENTIALS_ENV, LocalS3
from cernvm_build.mirror.s3client import make_client

_counter = itertools.count()


@pytest.fixture(scope="session")
def s3server() -> Iterator[LocalS3]:
    server = LocalS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rgwserver() -> Iterator[localrgw.LocalRGW]:
    problem = localrgw.available()
    if problem:
        pytest.skip(f"Ceph RGW: {problem}")
    server = localrgw.LocalRGW().start()
    yield server
    server.stop()


@dataclass
class Target:
    """One S3 server a test runs against, with a fresh public bucket on it."""

    name: str  # "moto" | "rgw"
    endpoint: str
    client: Any
    bucket: str

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def http(self, prefix: str = "") -> str:
        return f"{self.endpoint}/{self.bucket}/{prefix}".rstrip("/")

    def objects(self) -> dict[str, str]:
        """key → ETag of everything in the bucket."""
        out: dict[str, str] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            out.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
        return out


@pytest.fixture(params=["moto", "rgw"])
def target(request: pytest.FixtureRequest, s3env: None) -> Target:
    server = request.getfixturevalue("s3server" if request.param == "moto" else "rgwserver")
    if isinstance(server, LocalS3):
        server.faults.clear()
        server.ignore_conditions = False
    client = make_client(endpoint_url=server.endpoint)
    name = f"test-{next(_counter)}-{request.param}"
    client.create_bucket(Bucket=name)
    server.make_public(client, name)
    return Target(request.param, server.endpoint, client, name)


@pytest.fixture
def s3env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for k, v in CREDENTIALS_ENV.items():
        monkeypatch.setenv(k, v)
    # Nothing from the host's own AWS set-up may leak into the tests.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def s3(s3server: LocalS3, s3env: None) -> Any:
    server = s3server
    server.faults.clear()
    server.ignore_conditions = False
    return make_client(endpoint_url=server.endpoint)


@pytest.fixture
def bucket(s3: Any, s3server: LocalS3) -> str:
    name = f"test-{next(_counter)}-bucket"
    s3.create_bucket(Bucket=name)
    s3server.make_public(s3, name)
    return name


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway gpg key pair (secret.asc, public.asc), made once per test session."""
    from cernvm_build.gpg import generate_test_key

    return generate_test_key(tmp_path_factory.mktemp("gpgkey"))


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from cernvm_build.gpg import generate_test_key

    return generate_test_key(tmp_path_factory.mktemp("otherkey"), name="Somebody Else")


@pytest.fixture
def http_dir() -> Iterator[Any]:
    """``http_dir(path) -> URL``: serve a folder over HTTP on 127.0.0.1 for the test's duration."""
    import functools
    import http.server
    import threading

    servers: list[http.server.ThreadingHTTPServer] = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    def serve(path: Path) -> str:
        handler = functools.partial(Quiet, directory=str(path))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/"

    yield serve
    for srv in servers:
        srv.shutdown()
        srv.server_close()
