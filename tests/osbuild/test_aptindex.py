"""The verified Debian index: signed InRelease → Packages → .deb, against the real lists, gpg and dpkg."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build import debpkg
from cernvm_build.errors import BuildError, IntegrityError
from cernvm_build.osbuild import aptindex, resolve
from cernvm_build.paths import cache_dir

pytestmark = pytest.mark.integration

SUITE = ("bookworm",)
LIST_PREFIX = "deb.debian.org_debian_dists_bookworm"


@pytest.fixture(scope="module")
def index() -> aptindex.Index:
    return aptindex.load_index(("bookworm", "bookworm-updates", "bookworm-security"))


def _lists_copy(tmp_path: Path) -> Path:
    """The bookworm suite's InRelease and Packages list, as apt keeps them, in a folder of our own."""
    lists = tmp_path / "lists"
    lists.mkdir()
    for p in aptindex.LISTS.glob(f"{LIST_PREFIX}_*"):
        if p.name.endswith("InRelease") or "_main_binary-amd64_Packages" in p.name:
            shutil.copy(p, lists / p.name)
    return lists


def test_index_is_signed_by_debian_and_resolves_a_systemd_os(index: aptindex.Index) -> None:
    assert [s.suite for s in index.suites] == ["bookworm", "bookworm-updates", "bookworm-security"]
    assert all(len(s.signer) == 40 for s in index.suites)
    names = {p.name for p in resolve.closure(index, ("systemd-sysv", "openssh-server", "usr-is-merged"))}
    # init's alternatives: the first (systemd-sysv) wins; the merged tree needs no usrmerge conversion
    assert {"systemd", "systemd-sysv", "openssh-server", "libc6", "dpkg"} <= names
    assert "sysvinit-core" not in names and "usrmerge" not in names
    assert all(len(index.packages[n].sha256) == 64 for n in names)


def test_a_changed_release_text_is_refused(tmp_path: Path) -> None:
    lists = _lists_copy(tmp_path)
    inrelease = lists / f"{LIST_PREFIX}_InRelease"
    inrelease.write_bytes(inrelease.read_bytes().replace(b"\nLabel: Debian\n", b"\nLabel: Debiam\n", 1))
    with pytest.raises(IntegrityError, match="bad signature") as e:
        aptindex.load_index(SUITE, lists=lists)
    assert "\n" not in str(e.value) and inrelease.name in str(e.value)


def test_a_foreign_keyring_is_refused(tmp_path: Path) -> None:
    lists = _lists_copy(tmp_path)
    foreign = Path("/usr/share/keyrings/debian-archive-removed-keys.gpg")
    with pytest.raises(IntegrityError, match=r"unknown key|no valid signature"):
        aptindex.load_index(SUITE, lists=lists, keyring=foreign)


def test_a_changed_packages_list_is_refused(tmp_path: Path) -> None:
    lists = _lists_copy(tmp_path)
    real = next(lists.glob(f"{LIST_PREFIX}_main_binary-amd64_Packages*"))
    data = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", real], capture_output=True, check=True
    ).stdout
    real.unlink()
    # a list whose SHA256 for systemd was swapped: same size, other bytes
    tampered = data.replace(b"\nPackage: systemd\n", b"\nPackage: systemc\n", 1)
    (lists / f"{LIST_PREFIX}_main_binary-amd64_Packages").write_bytes(tampered)
    with pytest.raises(IntegrityError, match=r"B\) is not ") as e:
        aptindex.load_index(SUITE, lists=lists)
    assert "\n" not in str(e.value)


def test_a_tampered_deb_is_refused_and_a_missing_one_named(tmp_path: Path, index: aptindex.Index) -> None:
    pkg = index.packages["base-files"]
    real = debpkg.fetch_verified(pkg.name, pkg.version, pkg.arch, pkg.sha256, cache_dir("debs"), offline=True)
    mine = tmp_path / "debs"
    mine.mkdir()
    bad = mine / real.path.name
    bad.write_bytes(real.path.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match=r"base-files .* does not match the signed index") as e:
        debpkg.fetch_verified(pkg.name, pkg.version, pkg.arch, pkg.sha256, mine, offline=True)
    assert "\n" not in str(e.value)
    bad.unlink()
    with pytest.raises(BuildError, match=r"not in .* \(offline build\)"):
        debpkg.fetch_verified(pkg.name, pkg.version, pkg.arch, pkg.sha256, mine, offline=True)


def test_cli_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    lists = _lists_copy(tmp_path)
    inrelease = lists / f"{LIST_PREFIX}_InRelease"
    inrelease.write_bytes(inrelease.read_bytes().replace(b"\nLabel: Debian\n", b"\nLabel: Debiam\n", 1))
    for suite in ("bookworm-updates", "bookworm-security"):  # present, so bookworm is checked first
        for p in aptindex.LISTS.glob(f"*_dists_{suite}_*"):
            shutil.copy(p, lists / p.name)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cernvm_build.cli.main",
            "os",
            "debian12",
            "--no-modules",
            "--offline",
            "--apt-lists",
            lists,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == IntegrityError.exit_code
    err = proc.stderr.strip().splitlines()
    assert err[0].startswith("error: ") and "bad signature" in err[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("records", [[1], {"busybox": 5}, {"busybox": {"Package": "busybox"}}])
def test_a_damaged_memo_of_apt_s_answers_is_asked_again(
    records: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memo of apt-cache's records, of the current state but damaged: TypeError/KeyError
    tracebacks (pr19b finding 13); apt is asked again."""
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(debpkg, "_MEMO_STATE", None)
    monkeypatch.setattr(debpkg, "_RECORDS", {})
    debpkg._memo().write_text(json.dumps({"state": debpkg._apt_state(), "records": records}))
    name, version, _arch, sha256 = debpkg.resolve("busybox")
    assert name == "busybox" and version and len(sha256) == 64
