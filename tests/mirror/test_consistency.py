"""A published yum repository stays consistent: while it is re-mirrored a reader always finds what
the index names, a server failing mid-way leaves the old publication intact, a re-run finishes."""

from __future__ import annotations

import gzip
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.errors import MirrorError
from cernvm_build.mirror.locals3 import Fault, LocalS3
from cernvm_build.mirror.publish import mirror, verify_published

from .repos import make_rpm, make_yum_repo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rpm_versions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    work = tmp_path_factory.mktemp("rpmv")
    return [
        make_rpm(work / str(v), "cvm-tool", version=f"1.{v}", payload=bytes([v]) * 3000) for v in range(4)
    ]


def read_like_dnf(base: str) -> list[str]:
    """Fetch repomd.xml, every metadata file it names, then every package primary names."""
    problems = []

    def get(rel: str) -> bytes | None:
        try:
            return urllib.request.urlopen(f"{base}/{rel}").read()
        except urllib.error.HTTPError as e:
            problems.append(f"{rel}: HTTP {e.code}")
            return None

    repomd = get("repodata/repomd.xml")
    if repomd is None:
        return problems
    hrefs = re.findall(rb'<location href="([^"]+)"', repomd)
    primary = None
    for href in hrefs:
        data = get(href.decode())
        if b"-primary.xml.gz" in href and data is not None:
            primary = gzip.decompress(data)
    for href in re.findall(rb'<location href="([^"]+)"', primary or b""):
        get(href.decode())
    return problems


def test_reader_during_remirror_never_misses(
    tmp_path: Path, rpm_versions: list[Path], s3: Any, s3server: LocalS3, bucket: str
) -> None:
    src = tmp_path / "repo"
    dest = f"s3://{bucket}/el9"
    make_yum_repo(src, [rpm_versions[0]])
    mirror("yum", str(src), dest, client=s3)
    stop = threading.Event()
    seen: list[str] = []
    rounds = [0]

    def reader() -> None:
        while not stop.is_set():
            seen.extend(read_like_dnf(f"{s3server.endpoint}/{bucket}/el9"))
            rounds[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for rpm in rpm_versions[1:]:
            # Each update replaces the package (old one removed from the source) and the metadata.
            for old in (src / "Packages").glob("*.rpm"):
                old.unlink()
            make_yum_repo(src, [rpm], update=True)
            mirror("yum", str(src), dest, client=s3, keep=1)
    finally:
        stop.set()
        t.join()
    assert rounds[0] > 0
    assert seen == []
    assert verify_published("yum", dest, client=s3).problems == []


def test_server_failing_midway_leaves_the_old_publication_then_rerun_finishes(
    tmp_path: Path, rpm_versions: list[Path], s3: Any, s3server: LocalS3, bucket: str
) -> None:
    src = tmp_path / "repo"
    dest = f"s3://{bucket}/el9"
    make_yum_repo(src, rpm_versions[:2])
    mirror("yum", str(src), dest, client=s3)
    before = s3.get_object(Bucket=bucket, Key="el9/repodata/repomd.xml")["Body"].read()

    make_yum_repo(src, rpm_versions[2:], update=True)
    s3server.faults.append(Fault("PUT", after=3, status=503, key_part=bucket))
    with pytest.raises(MirrorError) as err:
        mirror("yum", str(src), dest, client=s3, jobs=2)
    assert "re-run" in (err.value.hint or "")
    s3server.faults.clear()
    # The index was not switched and everything it names is there.
    assert s3.get_object(Bucket=bucket, Key="el9/repodata/repomd.xml")["Body"].read() == before
    old = verify_published("yum", dest, client=s3)
    assert old.problems == [] and old.packages == 2

    rep = mirror("yum", str(src), dest, client=s3, jobs=2)
    assert rep.sync is not None and "repodata/repomd.xml" in rep.sync.uploaded
    new = verify_published("yum", dest, client=s3)
    assert new.problems == [] and new.packages == 4


def test_server_gone_is_a_clear_error(tmp_path: Path, rpm_versions: list[Path], s3env: None) -> None:
    src = tmp_path / "repo"
    make_yum_repo(src, rpm_versions[:1])
    server = LocalS3().start()
    endpoint = server.endpoint
    server.stop()
    with pytest.raises(MirrorError, match="cannot reach the S3 endpoint"):
        mirror("yum", str(src), "s3://some-bucket/p", endpoint_url=endpoint)


def test_previous_publication_is_kept_even_without_the_sync_manifest(
    tmp_path: Path, rpm_versions: list[Path], s3: Any, bucket: str
) -> None:
    src = tmp_path / "repo"
    dest = f"s3://{bucket}/el9"
    make_yum_repo(src, [rpm_versions[0]])
    mirror("yum", str(src), dest, client=s3)
    first = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    s3.delete_object(Bucket=bucket, Key="el9/.cernvm-sync.json")  # e.g. published by another tool before

    for old in (src / "Packages").glob("*.rpm"):
        old.unlink()
    make_yum_repo(src, [rpm_versions[1]])  # fresh metadata: the old files are gone from the source
    rep = mirror("yum", str(src), dest, client=s3, keep=1)
    assert rep.sync is not None and rep.sync.deleted == []
    now = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert first - {"el9/.cernvm-sync.json", "el9/repodata/repomd.xml"} <= now  # old package + metadata kept
