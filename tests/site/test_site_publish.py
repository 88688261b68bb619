"""`site publish`: the built site into real S3 servers on 127.0.0.1 (moto, and a single-node Ceph RADOS
Gateway), through the mirror engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from tests.mirror.conftest import Target

pytestmark = pytest.mark.integration


def keys(target: Target) -> set[str]:
    pages = target.client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix="www/")
    return {o["Key"] for p in pages for o in p.get("Contents", [])}


def test_publish_then_republish_only_changes(
    target: Target, site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = target.client
    args = ["site", "publish", target.url("www"), "--endpoint-url", target.endpoint, "--site", str(site)]
    args += ["--out", str(tmp_path / "out"), "--json"]
    assert main(args) == 0
    capsys.readouterr()
    published = keys(target)
    assert {"www/index.html", "www/docs/quickstart/client/index.html", "www/sitemap.xml"} <= published
    body = client.get_object(Bucket=target.bucket, Key="www/index.html")["Body"].read()
    assert body == (tmp_path / "out" / "index.html").read_bytes()

    page = site / "content" / "docs" / "guides" / "site.md"
    page.write_text(page.read_text().replace("This site is generated", "This site is made"))
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    text = json.dumps(report)
    assert "docs/guides/site/index.html" in text
    assert "docs/quickstart/client/index.html" not in text  # unchanged pages are not uploaded again
    body = client.get_object(Bucket=target.bucket, Key="www/docs/guides/site/index.html")["Body"].read()
    assert b"This site is made" in body


@pytest.mark.parametrize(
    "endpoint", ["javascript:x", "http://[::1", "http://127.0.0.1:99999", "http://u:secret@h"]
)
def test_an_endpoint_that_is_no_http_url_is_one_line(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """botocore's ValueError for 'javascript:x' or an unclosed '[' was a traceback; a password in the
    endpoint was echoed by the connection error (pr19a 14). Refused before any request."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("<p>x</p>")
    args = ["site", "publish", "s3://b/www", "--endpoint-url", endpoint, "--no-build", "--out", str(out)]
    assert main([*args, "--dry-run"]) != 0
    err = capsys.readouterr().err
    assert "the S3 endpoint" in err and "Traceback" not in err and "secret" not in err, err
