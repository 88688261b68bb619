"""The release flow on the demo profile: build (signed), publish to a real S3 server on 127.0.0.1 with an
interruption that a re-run finishes, the site's downloads page from the index, verify catching a flipped
byte, and a rebuild that is byte-identical."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cernvm_build import gpg
from cernvm_build.cli import reference as cli_reference
from cernvm_build.cvmfs.serve import serve
from cernvm_build.demo.repository import publish_demo
from cernvm_build.errors import CernVMError
from cernvm_build.mirror.locals3 import CREDENTIALS_ENV, Fault, LocalS3
from cernvm_build.mirror.s3client import make_client
from cernvm_build.release.build import ReleaseOptions, build_release, release_context, release_profiles
from cernvm_build.release.publish import publish_release
from cernvm_build.release.rebuild import rebuild
from cernvm_build.release.verify import verify
from tests.support import linked_cache

pytestmark = pytest.mark.integration
VERSION = "2026.11-1"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The demo repository served on a free port, a profile pointing at it, a signing key, S3."""
    tmp = tmp_path_factory.mktemp("release")
    mp = pytest.MonkeyPatch()
    mp.setenv("CERNVM_CACHE_DIR", str(linked_cache(tmp / "cache")))
    repo = publish_demo(tmp / "repo")
    for k, v in CREDENTIALS_ENV.items():
        mp.setenv(k, v)
    mp.setenv("AWS_CONFIG_FILE", str(tmp / "aws-config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "aws-credentials"))
    with serve(repo.root) as server:
        profiles = tmp / "profiles"
        profiles.mkdir()
        (profiles / "demo-rel.yaml").write_text(
            "extends: demo\n"
            "cvmfs:\n"
            f"  servers: !replace ['{server.url}/cvmfs/@fqrn@']\n"
            "image:\n  formats: !replace [iso]\n"
            "container:\n  formats: !replace [oci]\n"
        )
        mp.setenv("CERNVM_PROFILE_PATH", str(profiles))
        secret, public = gpg.generate_test_key(tmp / "keys")
        s3 = LocalS3().start()
        client = make_client(endpoint_url=s3.endpoint)
        client.create_bucket(Bucket="releases")
        s3.make_public(client, "releases")
        client.create_bucket(Bucket="www")
        s3.make_public(client, "www")
        release, directory = build_release(
            ReleaseOptions(VERSION, release_profiles(["demo-rel"]), tmp / "out", sign_key=secret),
            release_context(VERSION),
        )
        yield {"tmp": tmp, "dir": directory, "release": release, "public": public, "s3": s3, "client": client}
        s3.stop()
    mp.undo()


def _keys(client: object, bucket: str, prefix: str = "") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)  # type: ignore[attr-defined]
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_release_is_complete_and_signed(env: dict[str, object]) -> None:
    directory, release = Path(str(env["dir"])), env["release"]
    names = sorted(a.name for a in release.artifacts)  # type: ignore[attr-defined]
    assert names == [
        "demo-rel.oci.tar",
        "ucernvm-demo.2026.11-1.cernvm.x86_64.iso",
        "ucernvm-demo.2026.11-1.cernvm.x86_64.manifest.json",
    ]
    assert (directory / "SHA256SUMS.asc").is_file()
    notes = (directory / "RELEASE-NOTES.md").read_text()
    row = next(line for line in notes.splitlines() if line.startswith("| demo-rel |"))
    assert "| demo.cernvm.test | / | trunk |" in row
    # the container carries the same name as the notes: tagged and labelled with the snapshot's tag
    oci = next(a for a in release.artifacts if a.name == "demo-rel.oci.tar")  # type: ignore[attr-defined]
    with tarfile.open(directory / oci.path) as t:
        index = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "trunk"
    report = verify(directory / "index.json", public_keys=[Path(str(env["public"]))])
    assert report.ok, report.findings
    assert report.signer == release.signer  # type: ignore[attr-defined]


def test_interrupted_publish_is_finished_by_a_rerun(env: dict[str, object]) -> None:
    s3, client, directory = env["s3"], env["client"], Path(str(env["dir"]))
    s3.faults.append(Fault("PUT", after=2, status=500))  # type: ignore[attr-defined]
    with pytest.raises(CernVMError):
        publish_release(directory, "s3://releases/cernvm", endpoint_url=s3.endpoint)  # type: ignore[attr-defined]
    s3.faults.clear()  # type: ignore[attr-defined]
    partial = _keys(client, "releases", f"cernvm/{VERSION}/")
    # Indexes go last: an interrupted publish never shows an index naming what is not there.
    assert f"cernvm/{VERSION}/index.json" not in partial
    assert f"cernvm/{VERSION}/SHA256SUMS" not in partial
    report = publish_release(
        directory,
        "s3://releases/cernvm",
        endpoint_url=s3.endpoint,
        site_dest="s3://www/site",  # type: ignore[attr-defined]
        site_generators=cli_reference.GENERATORS,
    )
    published = _keys(client, "releases", f"cernvm/{VERSION}/")
    for a in env["release"].artifacts:  # type: ignore[attr-defined]
        assert f"cernvm/{VERSION}/{a.path}" in published
    index = requests.get(f"{s3.endpoint}/releases/cernvm/{VERSION}/index.json", timeout=10).json()  # type: ignore[attr-defined]
    assert index == json.loads((directory / "index.json").read_text())
    assert report.site is not None
    # The downloads page names the artifacts from the index, never a hand-typed version string.
    site_keys = _keys(client, "www", "site/")
    pages = [k for k in site_keys if k.endswith(".html") and "download" in k]
    assert pages, sorted(site_keys)[:20]
    page = requests.get(f"{s3.endpoint}/www/{pages[0]}", timeout=10).text  # type: ignore[attr-defined]
    assert "ucernvm-demo.2026.11-1.cernvm.x86_64.iso" in page
    # ... and the release has its news post, made from the generated release notes.
    post = requests.get(f"{s3.endpoint}/www/site/releases/{VERSION}/index.html", timeout=10)  # type: ignore[attr-defined]
    assert post.status_code == 200 and "Platforms" in post.text


def test_publish_to_a_ceph_rados_gateway(env: dict[str, object], rgwserver: Any) -> None:
    """The same publish into a single-node Ceph RADOS Gateway (what CERN's S3 runs): artifacts, index
    and the site, read back over the gateway's HTTP."""
    directory, rgw = Path(str(env["dir"])), rgwserver
    client = make_client(endpoint_url=rgw.endpoint)
    for bucket in ("rel-releases", "rel-www"):
        client.create_bucket(Bucket=bucket)
        rgw.make_public(client, bucket)
    publish_release(directory, "s3://rel-releases/cernvm", endpoint_url=rgw.endpoint,
                    site_dest="s3://rel-www/site", site_generators=cli_reference.GENERATORS)  # fmt: skip
    published = _keys(client, "rel-releases", f"cernvm/{VERSION}/")
    for a in env["release"].artifacts:  # type: ignore[attr-defined]
        assert f"cernvm/{VERSION}/{a.path}" in published
    index = requests.get(f"{rgw.endpoint}/rel-releases/cernvm/{VERSION}/index.json", timeout=10).json()
    assert index == json.loads((directory / "index.json").read_text())
    post = requests.get(f"{rgw.endpoint}/rel-www/site/releases/{VERSION}/index.html", timeout=10)
    assert post.status_code == 200 and "Platforms" in post.text


def test_verify_catches_a_flipped_byte(env: dict[str, object], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / VERSION
    shutil.copytree(Path(str(env["dir"])), copy)
    iso = next(copy.glob("images/*/*.iso"))
    data = bytearray(iso.read_bytes())
    data[len(data) // 2] ^= 0x40
    iso.write_bytes(bytes(data))
    report = verify(copy / "index.json", public_keys=[Path(str(env["public"]))])
    assert [f.artifact for f in report.findings] == [iso.name]


def test_rebuild_is_byte_identical(env: dict[str, object]) -> None:
    report = rebuild(Path(str(env["dir"])) / "index.json")
    assert report.identical, json.dumps(report.to_json())
