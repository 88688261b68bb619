"""SBOM: SPDX from the tree's dpkg status or rpm database (read with the real rpm), attached to the
image as a file, a label and an OCI artifact that refers to the image; none, said so, without one."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.container import sbom
from cernvm_build.container.sbom import parse_dpkg_status, read_rpmdb
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository, publish_tree
from cernvm_build.errors import BuildError
from tests.container.profiles import local_profile

FQRN = "sbom.example.test"

STATUS = """\
Package: busybox
Status: install ok installed
Maintainer: Debian Busybox Team <busybox@packages.debian.org>
Architecture: amd64
Version: 1:1.35.0-4+b3
Description: Tiny utilities
 for small and embedded systems

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5
"""


def test_dpkg_status_lists_installed_packages_only() -> None:
    pkgs = parse_dpkg_status(STATUS)
    assert [(p.name, p.version, p.arch) for p in pkgs] == [
        ("base-files", "12.4+deb12u5", "amd64"),
        ("busybox", "1:1.35.0-4+b3", "amd64"),
    ]
    assert pkgs[1].purl == "pkg:deb/debian/busybox@1%3A1.35.0-4%2Bb3?arch=amd64"
    assert pkgs[1].supplier == "Debian Busybox Team"


def test_a_damaged_status_file_is_one_clear_error() -> None:
    with pytest.raises(BuildError, match=r"var/lib/dpkg/status: stanza 1: the line 'garbage"):
        parse_dpkg_status("garbage without colon\n")


def make_rpmdb(tmp: Path) -> Path:
    """A real rpm database holding one package built here with rpmbuild."""
    top = tmp / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    (top / "SPECS" / "hello.spec").write_text(
        "Name: cernvm-hello\nVersion: 1.2\nRelease: 3\nSummary: test\nLicense: MIT\nBuildArch: noarch\n"
        "%description\ntest\n%files\n"
    )
    subprocess.run(["rpmbuild", "--define", f"_topdir {top}", "-bb", str(top / "SPECS" / "hello.spec")],
                   check=True, capture_output=True)  # fmt: skip
    db = tmp / "db"
    db.mkdir()
    rpm = next((top / "RPMS").rglob("*.rpm"))
    subprocess.run(["rpm", "--dbpath", str(db), "--initdb"], check=True, capture_output=True)
    subprocess.run(["rpm", "--dbpath", str(db), "-i", "--justdb", "--nodeps", "--nosignature", str(rpm)],
                   check=True, capture_output=True)  # fmt: skip
    return db


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("rpmbuild"), reason="needs rpmbuild to make a package")
def test_rpm_database_read_with_rpm(tmp_path: Path) -> None:
    db = make_rpmdb(tmp_path)
    files = {p.name: p.read_bytes() for p in db.iterdir() if p.is_file()}
    pkgs = read_rpmdb(files, "var/lib/rpm")
    assert [(p.name, p.version, p.arch, p.license) for p in pkgs] == [
        ("cernvm-hello", "1.2-3", "noarch", "MIT")
    ]


def build(base: Path, tree: Path, tag: str, capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    keys = generate_keys(FQRN)
    keys.save(base / "keys")
    create_repository(base / "stratum", FQRN, keys)
    publish_tree(base / "stratum", FQRN, keys, tree, tag=tag)
    prof = base / "p.yaml"
    prof.write_text(local_profile(FQRN, base / "keys" / f"{FQRN}.pub", branch="sbom", tag=tag))
    capsys.readouterr()
    rc = main(
        ["container", str(prof), "--source", str(base / "stratum"), "--out", str(base / "out"), "--json"]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc: dict = json.loads(captured.out)  # type: ignore[type-arg]
    doc["stderr"] = captured.err
    return doc


def labels(oci: Path, tag: str) -> dict[str, str]:
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{oci}:{tag}"], check=True,
                                     capture_output=True, text=True).stdout)  # fmt: skip
    return dict(info["Labels"])


@pytest.mark.integration
def test_debian_tree_gets_an_spdx_sbom_attached(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "tree"
    (tree / "var" / "lib" / "dpkg").mkdir(parents=True)
    (tree / "var" / "lib" / "dpkg" / "status").write_text(STATUS)
    (tree / "etc").mkdir()
    (tree / "etc" / "os-release").write_text("ID=debian\n")
    doc = build(tmp_path, tree, "deb1", capsys)
    spdx_art = next(a for a in doc["artifacts"] if a["format"] == "spdx")
    spdx = json.loads(Path(spdx_art["path"]).read_text())
    assert spdx["spdxVersion"] == "SPDX-2.3"
    assert [(p["name"], p["versionInfo"]) for p in spdx["packages"]] == [
        ("base-files", "12.4+deb12u5"),
        ("busybox", "1:1.35.0-4+b3"),
    ]
    oci = tmp_path / "out" / "p.oci"
    lab = labels(oci, "deb1")
    blob = Path(spdx_art["path"]).read_bytes()
    assert lab["cvmfs.sbom"] == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert lab["cvmfs.sbom.source"] == "dpkg:var/lib/dpkg/status"
    # the layout also carries it as an artifact whose subject is the image
    index = json.loads((oci / "index.json").read_text())
    art = next(m for m in index["manifests"] if m.get("artifactType") == "application/spdx+json")
    manifest = json.loads((oci / "blobs" / "sha256" / art["digest"][7:]).read_text())
    image = next(m for m in index["manifests"] if "annotations" in m)
    assert manifest["subject"]["digest"] == image["digest"]
    assert (oci / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]).read_bytes() == blob
    # ... and the tools still read the image by its tag
    subprocess.run(["umoci", "raw", "unpack", "--image", f"{oci}:deb1", str(tmp_path / "rootfs")], check=True)


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("rpmbuild"), reason="needs rpmbuild to make a package")
def test_el_tree_sbom_from_its_rpm_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(make_rpmdb(tmp_path / "rpm"), tree / "var" / "lib" / "rpm")
    doc = build(tmp_path, tree, "el1", capsys)
    spdx = json.loads(Path(next(a for a in doc["artifacts"] if a["format"] == "spdx")["path"]).read_text())
    (pkg,) = spdx["packages"]
    assert (pkg["name"], pkg["versionInfo"], pkg["licenseDeclared"]) == ("cernvm-hello", "1.2-3", "MIT")


@pytest.mark.integration
def test_a_tree_without_package_database_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text("ID=demo\n")
    doc = build(tmp_path, tree, "none1", capsys)
    assert not [a for a in doc["artifacts"] if a["format"] == "spdx"]
    assert labels(tmp_path / "out" / "p.oci", "none1")["cvmfs.sbom"] == "none"


@pytest.mark.integration
def test_a_hostile_rpm_database_is_one_error_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rpmdb.sqlite whose Packages is an endless sorted view: rpm would sort for ever (spilling to
    $TMPDIR); it is stopped at its deadline with one BuildError, not a TimeoutExpired traceback."""
    db = tmp_path / "rpm"
    subprocess.run(["rpm", "--dbpath", str(db), "--initdb"], check=True, capture_output=True)
    con = sqlite3.connect(db / "rpmdb.sqlite")
    con.executescript(
        "DROP TABLE Packages; CREATE VIEW Packages AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL"
        " SELECT x + 1 FROM c) SELECT x AS hnum, zeroblob(100) AS blob FROM c ORDER BY x DESC;"
    )
    con.close()
    monkeypatch.setattr(sbom, "RPM_TIMEOUT", 2.0)
    files = {p.name: p.read_bytes() for p in db.iterdir() if p.is_file()}
    with pytest.raises(BuildError, match="rpm took more than 2 s"):
        read_rpmdb(files, "var/lib/rpm")


def test_an_rpm_folder_of_too_many_or_too_big_files_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"f{i}" for i in range(sbom.MAX_DB_FILES + 1)]
    with pytest.raises(BuildError, match="65 files is more than an rpm database has"):
        sbom.sbom_of(lambda p: None if p == sbom.DPKG_STATUS else b"", lambda d: names)
    monkeypatch.setattr(sbom, "MAX_DB_FILE", 10)
    with pytest.raises(BuildError, match="bigger than"):
        sbom.sbom_of(lambda p: None if p == sbom.DPKG_STATUS else b"123456", lambda d: names[:2])


def test_a_huge_dpkg_status_is_refused_before_it_is_read() -> None:
    """A hostile tree's 500 MB status file would be decoded and split (three copies in memory)."""

    class _Entry:
        is_file, is_dir, size = True, False, sbom.MAX_DPKG_STATUS + 1

    class _Repo:
        fqrn = "hostile.test"

        def lookup(self, path: str) -> _Entry:
            return _Entry()

        def read_bytes(self, entry: object) -> bytes:
            raise AssertionError("read although too big")

    read, _ = sbom.repository_reader(_Repo(), "/")  # type: ignore[arg-type]
    with pytest.raises(BuildError, match="too big for a package database file"):
        read(sbom.DPKG_STATUS)
    assert sbom.MAX_DPKG_STATUS < sbom.MAX_DB_FILE
