"""Failures around a sync are one line each and publish nothing: a full or read-only hash cache
(a real tmpfs / read-only bind mount made by the test, as root), bad credentials or a missing bucket
(found before the source is verified). On moto and on Ceph RGW."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.mirror.check import SourceBroken
from cernvm_build.mirror.publish import mirror
from cernvm_build.mirror.s3plan import PROBE_PREFIX

from .conftest import Target
from .repos import make_rpm, make_yum_repo

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs / a read-only bind mount (needs root)"),
]


@pytest.fixture(scope="module")
def rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rpm(tmp_path_factory.mktemp("rpm"), "cvm-alpha", payload=b"alpha\n" * 100)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", str(m)], check=False)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_full_cache_disk_is_one_line_and_nothing_is_published(
    tmp_path: Path,
    rpm: Path,
    target: Target,
    mounts: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    make_yum_repo(src, [rpm])
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)], check=True)
    mounts.append(full)
    fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill it up
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(full / "cache"))
    rc, _, err = run_cli(
        ["mirror", "yum", str(src), target.url("r"), "--endpoint-url", target.endpoint], capsys
    )
    assert rc != 0
    assert "No space left on device" in one_error(err)
    assert target.objects() == {}

    # Room again: the same command publishes.
    (full / "filler").unlink()
    rc, _, err = run_cli(
        ["mirror", "yum", str(src), target.url("r"), "--endpoint-url", target.endpoint], capsys
    )
    assert rc == 0, err
    assert "r/repodata/repomd.xml" in target.objects()


def test_read_only_cache_is_one_line_and_nothing_changes(
    tmp_path: Path,
    rpm: Path,
    target: Target,
    mounts: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    make_yum_repo(src, [rpm])
    cache = tmp_path / "cache"
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(cache))
    mirror("yum", str(src), target.url("r"), client=target.client)
    before = target.objects()

    ro = tmp_path / "ro-cache"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(cache), str(ro)], check=True)
    mounts.append(ro)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(ro))
    make_yum_repo(src, [make_rpm(tmp_path / "b", "cvm-beta")], update=True)
    rc, _, err = run_cli(
        ["mirror", "yum", str(src), target.url("r"), "--endpoint-url", target.endpoint], capsys
    )
    assert rc != 0
    line = one_error(err)
    assert "Read-only file system" in line and str(ro) in line
    assert target.objects() == before


def test_credentials_and_bucket_are_checked_before_the_source(
    tmp_path: Path,
    rpm: Path,
    target: Target,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    make_yum_repo(src, [rpm])
    for p in (src / "Packages").glob("*.rpm"):
        p.write_bytes(b"damaged")  # a broken source: verifying it would fail
    with pytest.raises(SourceBroken):
        mirror("yum", str(src), target.url("r"), client=target.client)

    stages: list[str] = []

    def progress(stage: str, done: int, total: int | None) -> None:
        stages.append(stage)

    args = ["mirror", "yum", str(src), "--endpoint-url", target.endpoint]
    # A bucket that does not exist: said before the source is read.
    rc, _, err = run_cli([*args[:3], "s3://no-such-bucket-here/r", *args[3:]], capsys)
    assert rc != 0 and "bucket does not exist" in one_error(err)

    if target.name == "rgw":  # moto accepts any key; RGW checks the signature
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        rc, _, err = run_cli([*args[:3], target.url("r"), *args[3:]], capsys)
        assert rc != 0
        assert "access denied (SignatureDoesNotMatch)" in one_error(err)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
        with pytest.raises(Exception, match=r"access denied \(InvalidAccessKeyId\)"):
            mirror("yum", str(src), target.url("r"), endpoint_url=target.endpoint, progress=progress)
        assert "verify" not in stages
    assert target.objects() == {}


def test_cache_that_cannot_be_saved_after_a_publication_is_a_note(
    tmp_path: Path, rpm: Path, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publication is complete by then; the cache is only a cache."""
    from cernvm_build.mirror import hashcache

    src = tmp_path / "src"
    make_yum_repo(src, [rpm])
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))

    def fail(self: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "cache" / "mirror" / "hashes.json"))

    monkeypatch.setattr(hashcache.HashCache, "save", fail)
    rep = mirror("yum", str(src), target.url("r"), client=target.client)
    assert rep.sync is not None and "r/repodata/repomd.xml" in target.objects()
    assert any("hash cache not saved" in n and "No space left" in n for n in rep.sync.notes)


def test_a_refused_source_leaves_no_probe_object_behind(
    tmp_path: Path, rpm: Path, request: pytest.FixtureRequest, s3env: None
) -> None:
    """The conditional-write probe runs while the source is verified; a source refused before the
    probe has ended must not leave the probe's object in the bucket when the process exits (its
    thread would die with the process, between its PUT and its DELETE)."""
    from cernvm_build.mirror.locals3 import Delay, LocalS3
    from cernvm_build.mirror.s3client import make_client

    server: LocalS3 = request.getfixturevalue("s3server")
    client = make_client(endpoint_url=server.endpoint)
    client.create_bucket(Bucket="probe-left")
    src = tmp_path / "src"
    make_yum_repo(src, [rpm])
    for p in (src / "Packages").glob("*.rpm"):
        p.write_bytes(b"damaged")  # refused at once, while the probe's first PUT is still held
    server.delays.append(Delay("PUT", PROBE_PREFIX, 1.5))
    try:
        res = subprocess.run(
            [sys.executable, "-m", "cernvm_build.cli.main", "mirror", "yum", str(src), "s3://probe-left/r",
             "--endpoint-url", server.endpoint],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
        time.sleep(2)  # a PUT the server still held when the process ended lands now
    finally:
        server.delays.clear()
    assert client.list_objects_v2(Bucket="probe-left").get("KeyCount", 0) == 0


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:1/?X-Amz-Signature=s", "http://127.0.0.1:1/#f"])
def test_an_endpoint_with_a_query_is_one_line_naming_it(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr20a N7: botocore's "not a valid URI" came with the hint that a re-run finishes the sync."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    (tmp_path / "index.html").write_text("x")
    assert main(["mirror", "sync", str(tmp_path), "s3://b/site", "--endpoint-url", endpoint]) != 0
    err = capsys.readouterr().err
    assert f"the S3 endpoint '{endpoint}' has a query or fragment" in err and "re-run" not in err, err
