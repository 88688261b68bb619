"""`site publish`: the built site into a real S3 server on 127.0.0.1 (moto), through the mirror engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.mirror.locals3 import CREDENTIALS_ENV, LocalS3
from cernvm_build.mirror.s3client import make_client

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[LocalS3, object]]:
    for k, v in CREDENTIALS_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    server = LocalS3().start()
    client = make_client(endpoint_url=server.endpoint)
    client.create_bucket(Bucket="site-www")
    yield server, client
    server.stop()


def keys(client: object) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="site-www", Prefix="www/")  # type: ignore[attr-defined]
    return {o["Key"] for p in pages for o in p.get("Contents", [])}


def test_publish_then_republish_only_changes(
    s3: tuple[LocalS3, object], site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, client = s3
    args = ["site", "publish", "s3://site-www/www", "--endpoint-url", server.endpoint, "--site", str(site)]
    args += ["--out", str(tmp_path / "out"), "--json"]
    assert main(args) == 0
    capsys.readouterr()
    published = keys(client)
    assert {"www/index.html", "www/docs/quickstart/client/index.html", "www/sitemap.xml"} <= published
    body = client.get_object(Bucket="site-www", Key="www/index.html")["Body"].read()  # type: ignore[attr-defined]
    assert body == (tmp_path / "out" / "index.html").read_bytes()

    page = site / "content" / "docs" / "guides" / "site.md"
    page.write_text(page.read_text().replace("This site is generated", "This site is made"))
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    text = json.dumps(report)
    assert "docs/guides/site/index.html" in text
    assert "docs/quickstart/client/index.html" not in text  # unchanged pages are not uploaded again
    body = client.get_object(Bucket="site-www", Key="www/docs/guides/site/index.html")["Body"].read()  # type: ignore[attr-defined]
    assert b"This site is made" in body
