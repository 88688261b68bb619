"""apt: real .debs (dpkg-deb), real indexes (apt-ftparchive, by-hash), signed with gpg, mirrored to a
real S3 server and installed with the real apt-get over HTTP from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cernvm_build.mirror.check import SourceBroken
from cernvm_build.mirror.publish import mirror, verify_published

from .conftest import Target
from .repos import apt_install, make_apt_repo, make_deb, make_source_package

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("debs")
    return {
        "a": make_deb(work / "cvm-alpha_1.0_all.deb", "cvm-alpha", payload=b"alpha\n" * 100),
        "b": make_deb(work / "cvm-beta_1.0_all.deb", "cvm-beta", payload=b"beta\n" * 100),
    }


def keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_signed_repo_mirrored_installs_with_apt_get(
    tmp_path: Path,
    debs: dict[str, Path],
    signing_key: tuple[Path, Path],
    target: Target,
) -> None:
    """On moto and on Ceph RGW."""
    s3, bucket = target.client, target.bucket
    secret, public = signing_key
    src = tmp_path / "apt"
    make_apt_repo(src, "bookworm-prod", [debs["a"], debs["b"]], secret_key=secret)
    make_apt_repo(src, "bookworm-testing", [debs["a"]], secret_key=secret)
    rep = mirror("apt", str(src), f"s3://{bucket}/apt", gpg_key=public, client=s3)
    assert rep.checked.repos == ["bookworm-prod", "bookworm-testing"] and rep.checked.packages == 4
    assert rep.sync is not None
    # The Release files of every suite are the very last uploads, InRelease after Release(.gpg).
    tail = [r.rsplit("/", 1)[-1] for r in rep.sync.uploaded[-6:]]
    assert sorted(tail) == sorted(["Release", "Release.gpg", "InRelease"] * 2)
    assert "apt/pool/main/cvm-beta_1.0_all.deb" in keys(s3, bucket)

    root = apt_install(tmp_path, target.http("apt"), "bookworm-prod", "cvm-beta", public_key=public)
    assert (root / "usr/share/cvm-beta/data").read_bytes() == b"beta\n" * 100
    assert verify_published("apt", f"s3://{bucket}/apt", gpg_key=public, client=s3).problems == []


def test_order_of_release_files(
    tmp_path: Path, debs: dict[str, Path], signing_key: tuple[Path, Path], s3: Any, bucket: str
) -> None:
    secret, public = signing_key
    src = tmp_path / "apt"
    make_apt_repo(src, "stable", [debs["a"]], secret_key=secret)
    rep = mirror("apt", str(src), f"s3://{bucket}", gpg_key=public, client=s3)
    assert rep.sync is not None
    names = [r.rsplit("/", 1)[-1] for r in rep.sync.uploaded]
    assert names[-3:] == ["Release", "Release.gpg", "InRelease"]
    assert names.index("Packages.gz") < names.index("Release")


@pytest.mark.parametrize("how", ["missing", "mismatch", "badsig", "unsigned", "packages"])
def test_broken_source_is_refused(
    tmp_path: Path,
    debs: dict[str, Path],
    signing_key: tuple[Path, Path],
    s3: Any,
    bucket: str,
    how: str,
) -> None:
    secret, public = signing_key
    src = tmp_path / "apt"
    make_apt_repo(src, "stable", [debs["a"], debs["b"]], secret_key=secret)
    dist = src / "dists" / "stable"
    expect = {
        "missing": "pool/main/cvm-alpha_1.0_all.deb: missing",
        "mismatch": "pool/main/cvm-beta_1.0_all.deb: sha256 mismatch",
        "badsig": "dists/stable/InRelease: bad signature",
        "unsigned": "dists/stable/Release.gpg: missing",
        "packages": "dists/stable/main/binary-amd64/Packages.gz: size 31, but dists/stable/Release",
    }[how]
    if how == "missing":
        (src / "pool/main/cvm-alpha_1.0_all.deb").unlink()
    elif how == "mismatch":
        p = src / "pool/main/cvm-beta_1.0_all.deb"
        data = bytearray(p.read_bytes())
        data[-1] ^= 1
        p.write_bytes(bytes(data))
    elif how == "badsig":
        text = (dist / "InRelease").read_text().replace("Suite: stable", "Suite: stabel")
        (dist / "InRelease").write_text(text)
    elif how == "unsigned":
        (dist / "InRelease").unlink()
        (dist / "Release.gpg").unlink()
    elif how == "packages":
        import gzip

        (dist / "main/binary-amd64/Packages.gz").write_bytes(gzip.compress(b"Package: x\n"))
    with pytest.raises(SourceBroken) as err:
        mirror("apt", str(src), f"s3://{bucket}/apt", gpg_key=public, client=s3)
    assert any(expect in p for p in err.value.problems), err.value.problems
    assert keys(s3, bucket) == set()


def test_source_packages_are_verified_and_published(
    tmp_path: Path, debs: dict[str, Path], signing_key: tuple[Path, Path], target: Target
) -> None:
    """Sources indexes: the .dsc, .orig and .debian files of each source package, by SHA256 and size."""
    secret, public = signing_key
    files = make_source_package(tmp_path / "srcpkg", "cvm-alpha")
    src = tmp_path / "apt"
    make_apt_repo(src, "stable", [debs["a"]], secret_key=secret, sources=files)
    rep = mirror("apt", str(src), target.url("apt"), gpg_key=public, client=target.client)
    assert rep.checked.source_packages == 1 and rep.checked.packages == 1
    published = set(target.objects())
    for f in files:
        assert f"apt/pool/main/{f.name}" in published
    assert "apt/dists/stable/main/source/Sources.gz" in published
    assert verify_published("apt", target.url("apt"), gpg_key=public, client=target.client).problems == []

    # A damaged .orig and a missing .debian tarball are each named; nothing more is published.
    orig = src / "pool" / "main" / files[1].name
    data = bytearray(orig.read_bytes())
    data[len(data) // 2] ^= 0xFF
    orig.write_bytes(bytes(data))
    (src / "pool" / "main" / files[2].name).unlink()
    before = target.objects()
    with pytest.raises(SourceBroken) as err:
        mirror("apt", str(src), target.url("apt"), gpg_key=public, client=target.client)
    assert sorted(p.split(":")[0] for p in err.value.problems) == [
        f"pool/main/{files[2].name}",
        f"pool/main/{files[1].name}",
    ]
    assert all("(named by Sources" in p or "mismatch" in p for p in err.value.problems), err.value.problems
    assert target.objects() == before
