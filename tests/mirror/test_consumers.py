"""What publishes through the mirror's engine, on moto and on Ceph RGW: the site publish, the release
publish (artifacts, then a package repository through the mirror), and ``mirror verify`` from the CLI."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.release.publish import RepoTarget, publish_release
from cernvm_build.releaseindex import ReleaseArtifact, ReleaseIndex
from cernvm_build.site.publish import publish as publish_site

from .conftest import Target
from .repos import make_rpm, make_yum_repo

pytestmark = pytest.mark.integration


def get(url: str) -> bytes:
    return bytes(urllib.request.urlopen(url).read())


def test_site_publish(tmp_path: Path, target: Target) -> None:
    out = tmp_path / "public"
    (out / "css").mkdir(parents=True)
    (out / "index.html").write_text('<link href="css/site.css">hello')
    (out / "css" / "site.css").write_text("body{}")
    (out / "sitemap.xml").write_text("<urlset/>")
    rep = publish_site(out, target.url("www"), endpoint_url=target.endpoint)
    assert rep.uploaded[0] == "css/site.css" and rep.uploaded[-1] == "sitemap.xml"
    assert get(target.http("www/index.html")) == b'<link href="css/site.css">hello'

    (out / "index.html").write_text('<link href="css/site2.css">again')
    (out / "css" / "site.css").rename(out / "css" / "site2.css")
    rep = publish_site(out, target.url("www"), endpoint_url=target.endpoint)
    assert rep.uploaded == ["css/site2.css", "index.html"] and rep.deleted == ["css/site.css"]
    assert get(target.http("www/css/site2.css")) == b"body{}"


def test_release_publish_and_mirror_verify(
    tmp_path: Path, target: Target, signing_key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    secret, public = signing_key
    rel = tmp_path / "release"
    rel.mkdir()
    image = rel / "cernvm-test.iso"
    image.write_bytes(b"an image" * 1000)
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    (rel / "SHA256SUMS").write_text(f"{sha}  {image.name}\n")
    index = ReleaseIndex(
        version="2026.12-1",
        date="2026-12-01T00:00:00Z",
        source_date_epoch=1796083200,
        profiles=(),
        artifacts=(
            ReleaseArtifact(image.name, image.name, "test", "image", "iso", sha, image.stat().st_size),
        ),
    )
    (rel / "index.json").write_text(index.dumps())
    repo = tmp_path / "yum"
    make_yum_repo(repo, [make_rpm(tmp_path / "rpm", "cvm-alpha")], secret_key=secret)

    report = publish_release(
        rel,
        target.url("releases"),
        endpoint_url=target.endpoint,
        repos=[RepoTarget("yum", str(repo), target.url("yum"), public)],
    )
    assert report.version == "2026.12-1"
    assert report.artifacts["uploaded"][-1] == "index.json"
    assert get(target.http(f"releases/2026.12-1/{image.name}")) == image.read_bytes()
    assert report.repositories[0]["source"]["packages"] == 1

    rc = main(["mirror", "verify", "yum", target.url("yum"), "--gpg-key", str(public),
               "--endpoint-url", target.endpoint])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "ok, 1 repository, 1 package, signatures good" in out
    # -q: nothing but errors.
    rc = main(["mirror", "verify", "yum", target.url("yum"), "--endpoint-url", target.endpoint, "-q"])
    out, err = capsys.readouterr()
    assert rc == 0 and out == "" and err == ""
