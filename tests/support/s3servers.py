"""Real S3 servers on 127.0.0.1 for every test that needs one: moto, and a single-node Ceph RADOS
Gateway (one cluster per test session, started on first use); ``target`` gives a test a fresh public
bucket on each (parametrized: moto and rgw; ``indirect`` parametrization picks one). Registered once
in ``tests/conftest.py``, so the mirror's and the CernVM-FS tests share the same servers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
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
        server.delays.clear()
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
