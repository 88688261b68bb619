"""yum: real RPMs (rpmbuild), real repodata (createrepo_c), mirrored to a real S3 server, installed
with the real dnf over HTTP from that server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cli.main import main
from cernvm_build.mirror.check import SourceBroken
from cernvm_build.mirror.locals3 import LocalS3
from cernvm_build.mirror.publish import mirror, verify_published

from .conftest import Target
from .repos import dnf_install, make_rpm, make_yum_repo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("rpms")
    return {
        "a": make_rpm(work, "cvm-alpha", payload=b"alpha\n" * 100),
        "b": make_rpm(work, "cvm-beta", payload=b"beta\n" * 100),
        "c": make_rpm(work, "cvm-gamma", payload=b"gamma\n" * 100),
    }


def keys(s3: Any, bucket: str, prefix: str = "") -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for p in pages for o in p.get("Contents", [])}


def test_signed_repo_mirrored_installs_with_dnf_and_updates_incrementally(
    tmp_path: Path,
    rpms: dict[str, Path],
    signing_key: tuple[Path, Path],
    target: Target,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On moto and on Ceph RGW."""
    s3, bucket = target.client, target.bucket
    secret, public = signing_key
    repo = tmp_path / "src" / "cvmfs" / "EL" / "9" / "x86_64"
    make_yum_repo(repo, [rpms["a"], rpms["b"]], secret_key=secret)
    dest = f"s3://{bucket}/yum"
    rc = main(["mirror", "yum", str(tmp_path / "src"), dest, "--gpg-key", str(public),
               "--endpoint-url", target.endpoint, "-q"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0 and out == "" and err == ""  # -q: nothing but errors (no bar, no summary)
    published = keys(s3, bucket, "yum/")
    assert "yum/cvmfs/EL/9/x86_64/repodata/repomd.xml.asc" in published
    assert "yum/cvmfs/EL/9/x86_64/Packages/cvm-alpha-1.0-1.noarch.rpm" in published

    base = f"{target.endpoint}/{bucket}/yum/cvmfs/EL/9/x86_64"
    root = dnf_install(tmp_path / "c1", base, "cvm-beta", public_key=public)
    assert (root / "usr/share/cvm-beta/data").read_bytes() == b"beta\n" * 100

    checked = verify_published("yum", dest, gpg_key=public, client=s3)
    assert checked.problems == [] and checked.packages == 2 and checked.repos == ["cvmfs/EL/9/x86_64"]

    # Nothing changed: nothing uploaded.
    again = mirror("yum", str(tmp_path / "src"), dest, gpg_key=public, client=s3)
    assert again.sync is not None and again.sync.uploaded == [] and "PUT" not in again.sync.requests

    # A new package: only it and the new metadata go up; the previous repodata stays for old readers.
    old_repodata = {k for k in published if "/repodata/" in k and not k.endswith(("repomd.xml", ".asc"))}
    make_yum_repo(repo, [rpms["c"]], secret_key=secret, update=True)
    upd = mirror("yum", str(tmp_path / "src"), dest, gpg_key=public, client=s3, keep=1)
    assert upd.sync is not None
    assert not any(
        r.endswith(("cvm-alpha-1.0-1.noarch.rpm", "cvm-beta-1.0-1.noarch.rpm")) for r in upd.sync.uploaded
    )
    assert any(r.endswith("cvm-gamma-1.0-1.noarch.rpm") for r in upd.sync.uploaded)
    assert upd.sync.uploaded[-2:] == [
        "cvmfs/EL/9/x86_64/repodata/repomd.xml",
        "cvmfs/EL/9/x86_64/repodata/repomd.xml.asc",
    ]
    assert old_repodata <= keys(s3, bucket, "yum/")
    root = dnf_install(tmp_path / "c2", base, "cvm-gamma", public_key=public)
    assert (root / "usr/share/cvm-gamma/data").exists()


def test_mirror_from_http_source(
    tmp_path: Path, rpms: dict[str, Path], s3: Any, s3server: LocalS3, bucket: str, http_dir: Any
) -> None:
    src = tmp_path / "src"
    make_yum_repo(src, [rpms["a"]])
    url = http_dir(src)
    rep = mirror("yum", url, f"s3://{bucket}/r", client=s3)
    assert rep.checked.packages == 1
    assert keys(s3, bucket) >= {"r/repodata/repomd.xml", "r/Packages/cvm-alpha-1.0-1.noarch.rpm"}
    assert verify_published("yum", f"s3://{bucket}/r", client=s3).problems == []


def _broken(tmp_path: Path, rpms: dict[str, Path], secret: Path, how: str) -> Path:
    src = tmp_path / how
    make_yum_repo(src, [rpms["a"], rpms["b"]], secret_key=secret)
    pkgs = src / "Packages"
    if how == "missing":
        (pkgs / rpms["a"].name).unlink()
    elif how == "mismatch":
        data = bytearray((pkgs / rpms["b"].name).read_bytes())
        data[-1] ^= 0xFF  # same size, different content
        (pkgs / rpms["b"].name).write_bytes(bytes(data))
    elif how == "badsig":
        repomd = src / "repodata" / "repomd.xml"
        repomd.write_bytes(repomd.read_bytes().replace(b"<revision>", b"<revision>1"))
    elif how == "metadata":
        primary = next((src / "repodata").glob("*-primary.xml.gz"))
        primary.write_bytes(primary.read_bytes()[:-4] + b"\0\0\0\0")
    return src


@pytest.mark.parametrize(
    ("how", "expect"),
    [
        ("missing", "Packages/cvm-alpha-1.0-1.noarch.rpm: missing"),
        ("mismatch", "Packages/cvm-beta-1.0-1.noarch.rpm: sha256 mismatch"),
        ("badsig", "repodata/repomd.xml.asc: bad signature"),
        ("metadata", "-primary.xml.gz: sha256 mismatch"),
    ],
)
def test_broken_source_is_refused_with_a_list(
    tmp_path: Path,
    rpms: dict[str, Path],
    signing_key: tuple[Path, Path],
    s3: Any,
    bucket: str,
    how: str,
    expect: str,
) -> None:
    secret, public = signing_key
    src = _broken(tmp_path, rpms, secret, how)
    with pytest.raises(SourceBroken) as err:
        mirror("yum", str(src), f"s3://{bucket}/r", gpg_key=public, client=s3)
    assert any(expect in p for p in err.value.problems), err.value.problems
    assert keys(s3, bucket) == set()  # nothing published


def test_signature_by_another_key_is_refused(
    tmp_path: Path,
    rpms: dict[str, Path],
    signing_key: tuple[Path, Path],
    other_key: tuple[Path, Path],
    s3: Any,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    make_yum_repo(src, [rpms["a"]], secret_key=other_key[0])
    with pytest.raises(SourceBroken) as err:
        mirror("yum", str(src), f"s3://{bucket}/r", gpg_key=signing_key[1], client=s3)
    assert err.value.problems == ["repodata/repomd.xml.asc: signed by an unknown key"]
    # pr33b: --json's failure was {"ok", "problems"} alone, without the five keys every error's
    # document has, and the hint said to fix a repository whose only fault was the key given
    argv = ["mirror", "yum", str(src), f"s3://{bucket}/r", "--gpg-key", str(signing_key[1])]
    assert main([*argv, "--endpoint-url", s3.meta.endpoint_url, "--json"]) == SourceBroken.exit_code
    doc = json.loads(capsys.readouterr().out)
    assert {"error", "message", "where", "hint", "exit_code"} <= set(doc) and doc["exit_code"] == 9
    assert doc["ok"] is False and doc["problems"] == err.value.problems
    assert doc["hint"].startswith("check that --gpg-key is the key the repository is signed with")
    (src / "repodata" / "repomd.xml.asc").unlink()
    with pytest.raises(SourceBroken, match=r"repomd\.xml\.asc: missing, but a signing key was given"):
        mirror("yum", str(src), f"s3://{bucket}/r", gpg_key=signing_key[1], client=s3)


def test_cli_lists_problems_and_dry_run_changes_nothing(
    tmp_path: Path,
    rpms: dict[str, Path],
    signing_key: tuple[Path, Path],
    s3server: LocalS3,
    s3: Any,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret, _ = signing_key
    src = _broken(tmp_path, rpms, secret, "missing")
    rc = main(["mirror", "yum", str(src), f"s3://{bucket}/r", "--endpoint-url", s3server.endpoint])
    err = capsys.readouterr().err
    assert rc == 9 and "problem(s) in the source" in err and "cvm-alpha-1.0-1.noarch.rpm: missing" in err
    assert "Traceback" not in err

    good = tmp_path / "good"
    make_yum_repo(good, [rpms["a"]], secret_key=secret)
    rc = main(
        ["mirror", "yum", str(good), f"s3://{bucket}/r", "--endpoint-url", s3server.endpoint, "--dry-run"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "would upload" in out and "repodata/repomd.xml" in out
    assert keys(s3, bucket) == set()


def test_verify_finds_damage_in_a_published_repo(
    tmp_path: Path,
    rpms: dict[str, Path],
    s3: Any,
    bucket: str,
    s3server: LocalS3,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    make_yum_repo(src, [rpms["a"], rpms["b"]])
    mirror("yum", str(src), f"s3://{bucket}/r", client=s3)
    s3.delete_object(Bucket=bucket, Key="r/Packages/cvm-beta-1.0-1.noarch.rpm")
    rc = main(["mirror", "verify", "yum", f"s3://{bucket}/r", "--endpoint-url", s3server.endpoint, "--json"])
    out = capsys.readouterr().out
    assert rc == 9 and '"ok": false' in out and "cvm-beta-1.0-1.noarch.rpm: missing" in out
    # Re-mirroring repairs it.
    mirror("yum", str(src), f"s3://{bucket}/r", client=s3)
    assert verify_published("yum", f"s3://{bucket}/r", client=s3).problems == []
    shutil.rmtree(src)


def recompress_primary_with_zstd(repo: Path) -> None:
    """Debian's createrepo_c has no zstd: recompress primary by hand and rewrite repomd.xml."""
    import hashlib
    import lzma
    import subprocess
    import xml.etree.ElementTree as ET

    ns = "http://linux.duke.edu/metadata/repo"
    ET.register_namespace("", ns)
    ET.register_namespace("rpm", "http://linux.duke.edu/metadata/rpm")
    repomd = repo / "repodata" / "repomd.xml"
    tree = ET.parse(repomd)
    for data in tree.getroot().findall(f"{{{ns}}}data"):
        if data.get("type") != "primary":
            continue
        loc = data.find(f"{{{ns}}}location")
        assert loc is not None
        old = repo / str(loc.get("href"))
        raw = lzma.decompress(old.read_bytes())
        zst = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
        digest = hashlib.sha256(zst).hexdigest()
        new = f"repodata/{digest}-primary.xml.zst"
        (repo / new).write_bytes(zst)
        old.unlink()
        loc.set("href", new)
        data.find(f"{{{ns}}}checksum").text = digest  # type: ignore[union-attr]
        data.find(f"{{{ns}}}size").text = str(len(zst))  # type: ignore[union-attr]
    tree.write(repomd, xml_declaration=True, encoding="UTF-8")


@pytest.mark.parametrize("compression", ["zstd", "xz"])
def test_other_metadata_compressions(
    tmp_path: Path, rpms: dict[str, Path], s3: Any, bucket: str, compression: str
) -> None:
    from .repos import run

    src = tmp_path / "src"
    (src / "Packages").mkdir(parents=True)
    shutil.copy2(rpms["a"], src / "Packages")
    run("createrepo_c", "--quiet", "--general-compress-type=xz", "--no-database", src)
    if compression == "zstd":
        recompress_primary_with_zstd(src)
    ext = "zst" if compression == "zstd" else "xz"
    assert list((src / "repodata").glob(f"*-primary.xml.{ext}"))
    rep = mirror("yum", str(src), f"s3://{bucket}/r", client=s3)
    assert rep.checked.packages == 1 and rep.checked.problems == []
