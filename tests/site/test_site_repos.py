"""Package-repository pages from real yum and apt metadata (rpmbuild + createrepo_c, dpkg-deb +
apt-ftparchive): versions are read, checksums verified, never typed by hand."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
from pathlib import Path

import pytest
from sitehelpers import build_site

from cernvm_build.errors import BuildError, IntegrityError
from cernvm_build.site import repos
from cernvm_build.site.repos import read_apt, read_yum
from tests.mirror.repos import make_apt_repo, make_deb, make_rpm, make_yum_repo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def yum_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("rpms")
    root = tmp_path_factory.mktemp("yum")
    make_yum_repo(
        root / "EL" / "9" / "x86_64",
        [
            make_rpm(work, "cvmfs", "2.13.1"),
            make_rpm(work, "cvmfs", "2.13.0"),
            make_rpm(work, "cvmfs-fuse3", "2.13.1"),
        ],
    )
    make_yum_repo(root / "EL" / "8" / "x86_64", [make_rpm(work, "cvmfs", "2.12.7")])
    return root


@pytest.fixture(scope="module")
def apt_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("apt")
    debs = [make_deb(root / "in" / f"cvmfs_{v}_all.deb", "cvmfs", v) for v in ("2.13.0", "2.13.1")]
    make_apt_repo(root, "bookworm-prod", debs)
    return root


def test_yum_platforms_and_newest_versions(yum_tree: Path) -> None:
    platforms = {p.path: p for p in read_yum(yum_tree)}
    assert sorted(platforms) == ["EL/8/x86_64", "EL/9/x86_64"]
    el9 = platforms["EL/9/x86_64"]
    assert el9.count == 3
    assert [(p.name, p.version) for p in el9.latest()] == [("cvmfs", "2.13.1-1"), ("cvmfs-fuse3", "2.13.1-1")]


def test_apt_suites_and_versions(apt_tree: Path) -> None:
    (suite,) = read_apt(apt_tree)
    assert suite.path == "bookworm-prod"
    assert [(p.name, p.version, p.arch) for p in suite.latest()] == [("cvmfs", "2.13.1", "all")]


def test_damaged_metadata_is_refused(tmp_path: Path, yum_tree: Path, apt_tree: Path) -> None:
    import shutil

    yum = tmp_path / "yum"
    shutil.copytree(yum_tree, yum)
    primary = next((yum / "EL/9/x86_64/repodata").glob("*primary.xml*"))
    with gzip.open(primary, "rb") as f:
        xml = f.read()
    with gzip.open(primary, "wb") as f:
        f.write(xml.replace(b"2.13.1", b"9.99.9"))
    with pytest.raises(BuildError, match=r"does not match its sha256 in repomd\.xml") as e:
        read_yum(yum)
    assert "EL/9/x86_64/repodata/repomd.xml" in str(e.value.where)

    apt = tmp_path / "apt"
    shutil.copytree(apt_tree, apt)
    packages = apt / "dists/bookworm-prod/main/binary-amd64/Packages"
    packages.write_text(packages.read_text().replace("2.13.1", "2.13.2"))
    with pytest.raises(BuildError, match=r"does not match its SHA256 in Release"):
        read_apt(apt)


def test_repositories_page_lists_what_the_metadata_says(
    site: Path, tmp_path: Path, yum_tree: Path, apt_tree: Path
) -> None:
    out = tmp_path / "out"
    build_site(site, out, repo_metadata={"cvmfs": yum_tree, "cvmfs-apt": apt_tree})
    page = (out / "repositories/index.html").read_text()
    assert "EL/9/x86_64" in page and "EL/8/x86_64" in page and "bookworm-prod" in page
    assert "2.13.1-1" in page and "2.12.7-1" in page and "2.13.1" in page
    assert "2.13.0-1" not in page  # only the newest version of each package
    assert "baseurl=https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs/EL/$releasever/$basearch/" in page
    assert "package list is not shown here" not in page
    # without metadata the page points at the repository instead of inventing a list, and shows no
    # build machine's path or maintainer instructions
    build_site(site, tmp_path / "bare")
    bare = (tmp_path / "bare/repositories/index.html").read_text()
    assert (
        "package list is not shown here" in bare and "https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs/" in bare
    )
    assert "--repo-metadata" not in bare and str(tmp_path) not in bare and "/tmp/" not in bare


def _apt(root: Path, name: str, body: bytes) -> Path:
    """A suite whose Release lists one package list ``name`` holding ``body`` (checksum correct)."""
    binary = root / "dists/s/main/binary-amd64"
    binary.mkdir(parents=True, exist_ok=True)
    (binary / name).write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    (root / "dists/s/Release").write_text(
        f"Suite: s\nSHA256:\n {digest} {len(body)} main/binary-amd64/{name}\n"
    )
    return binary / name


def _yum(root: Path, name: str, body: bytes) -> Path:
    """A yum directory whose repomd.xml points at primary ``name`` holding ``body`` (checksum correct)."""
    repodata = root / "EL/9/x86_64/repodata"
    repodata.mkdir(parents=True, exist_ok=True)
    (repodata / name).write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    (repodata / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
        f'<location href="repodata/{name}"/><checksum type="sha256">{digest}</checksum></data></repomd>'
    )
    return repodata / name


def _stanza(i: int) -> bytes:
    return f"Package: p{i % 7}\nVersion: 1.{i}\nArchitecture: all\nDescription: d{i}\n long text\n\n".encode()


_PKG = (
    '<package type="rpm"><name>p{n}</name><arch>x86_64</arch><version epoch="0" ver="1.{i}" rel="1"/>'
    "<summary>s</summary></package>"
)


def _primary(entries: int) -> bytes:
    body = "".join(_PKG.format(n=i % 7, i=i) for i in range(entries))
    return f'<?xml version="1.0"?><metadata xmlns="{COMMON}">{body}</metadata>'.encode()


COMMON = "http://linux.duke.edu/metadata/common"


def test_package_lists_keep_the_newest_per_name_while_reading(tmp_path: Path) -> None:
    """Many versions of few packages: the platform holds one entry per (name, arch), counts them all."""
    _apt(tmp_path / "apt", "Packages.xz", lzma.compress(b"".join(_stanza(i) for i in range(2000))))
    (suite,) = read_apt(tmp_path / "apt")
    assert suite.count == 2000 and len(suite.best) == 7
    assert ("p0", "1.1995", "d1995") in [(p.name, p.version, p.summary) for p in suite.latest()]
    _yum(tmp_path / "yum", "primary.xml.gz", gzip.compress(_primary(2000)))
    (el9,) = read_yum(tmp_path / "yum")
    assert el9.count == 2000 and len(el9.best) == 7 and el9.latest()[0].version == "1.1995-1"


@pytest.mark.parametrize("order", ["listed", "reversed"])
def test_the_newest_is_by_dpkg_and_rpm_order(tmp_path: Path, order: str) -> None:
    """The pages show the version apt or dnf would install: a release candidate is older than the
    release, an epoch beats the rest, a binNMU is newer, ``^`` snapshots are after (the old
    approximate order took ``1.0~rc1`` for newer than ``1.0``, and ``1.0-1`` as ``1.0-1+b1``)."""
    deb = [("a", "1.0~rc1"), ("a", "1.0"), ("b", "1.0-1+b1"), ("b", "1.0-1"), ("c", "1:0.9"), ("c", "2.0")]
    evr = [("a", "0", "1.0~rc1", "1"), ("a", "0", "1.0", "1"), ("b", "1", "0.9", "1"), ("b", "0", "2.0", "1")]
    evr += [
        ("c", "0", "1.0^git1", "1"),
        ("c", "0", "1.0", "1"),
        ("d", "0", "1.0", "1.el9"),
        ("d", "0", "1.0", "1"),
    ]
    if order == "reversed":
        deb, evr = deb[::-1], evr[::-1]
    stanzas = "".join(f"Package: {n}\nVersion: {v}\nArchitecture: all\n\n" for n, v in deb)
    _apt(tmp_path / "apt", "Packages", stanzas.encode())
    (suite,) = read_apt(tmp_path / "apt")
    assert [(p.name, p.version) for p in suite.latest()] == [("a", "1.0"), ("b", "1.0-1+b1"), ("c", "1:0.9")]
    body = "".join(
        f'<package type="rpm"><name>{n}</name><arch>x86_64</arch><version epoch="{e}" ver="{v}" rel="{r}"/>'
        "</package>"
        for n, e, v, r in evr
    )
    _yum(tmp_path / "yum", "primary.xml", f'<metadata xmlns="{COMMON}">{body}</metadata>'.encode())
    (el9,) = read_yum(tmp_path / "yum")
    got = [(p.name, p.version) for p in el9.latest()]
    assert got == [("a", "1.0-1"), ("b", "1:0.9-1"), ("c", "1.0^git1-1"), ("d", "1.0-1.el9")]


def test_a_decompression_bomb_stops_at_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_UNPACKED bytes one error names the file (the real cap is 256 MiB; a small one here
    keeps the test fast, the code path is the same)."""
    monkeypatch.setattr(repos, "MAX_UNPACKED", 1 << 20)
    bomb = lzma.compress(b"".join(_stanza(i) for i in range(40000)))  # ~2.6 MiB unpacked
    path = _apt(tmp_path / "apt", "Packages.xz", bomb)
    with pytest.raises(BuildError, match=r"Packages\.xz unpacks to more than 1 MiB") as e:
        read_apt(tmp_path / "apt")
    assert str(e.value.where) == str(path) and "sync the mirror again" in str(e.value.hint)
    path = _yum(tmp_path / "yum", "primary.xml.gz", gzip.compress(_primary(40000)))
    with pytest.raises(BuildError, match=r"primary\.xml\.gz unpacks to more than 1 MiB") as e:
        read_yum(tmp_path / "yum")
    assert str(e.value.where) == str(path)
    # one endless line is stopped too, before the cap
    _apt(tmp_path / "line", "Packages", b"Package: " + b"x" * (2 << 20))
    monkeypatch.setattr(repos, "MAX_UNPACKED", 8 << 20)
    with pytest.raises(BuildError, match="a line longer than 1 MiB"):
        read_apt(tmp_path / "line")


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("primary.xml", b'<?xml version="1.0"?><metadata><package><name>&#x1b;</name></package></metadata>'),
        ("primary.xml.gz", gzip.compress(_primary(50))[:-30]),  # cut short
        ("primary.xml.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 64),  # not deflate data
        ("primary.xml.xz", lzma.compress(_primary(50))[:-20]),
        ("primary.xml.xz", b"not xz at all"),
    ],
    ids=["control-char-entity", "gz-cut-short", "gz-not-deflate", "xz-cut-short", "xz-not-xz"],
)
def test_damaged_yum_metadata_with_matching_checksum_is_one_error(
    tmp_path: Path, name: str, body: bytes
) -> None:
    path = _yum(tmp_path, name, body)
    with pytest.raises(BuildError, match=rf"{name.replace('.', '[.]')} cannot be read") as e:
        read_yum(tmp_path)
    assert str(e.value.where) == str(path) and "sync the mirror again" in str(e.value.hint)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("Packages.gz", gzip.compress(_stanza(1) * 50)[:-30]),
        ("Packages.xz", lzma.compress(_stanza(1) * 50)[:-20]),
        ("Packages.xz", b"\xfd7zXZ\x00garbage"),
    ],
    ids=["gz-cut-short", "xz-cut-short", "xz-garbage"],
)
def test_damaged_apt_metadata_with_matching_checksum_is_one_error(
    tmp_path: Path, name: str, body: bytes
) -> None:
    path = _apt(tmp_path, name, body)
    with pytest.raises(BuildError, match=rf"{name.replace('.', '[.]')} cannot be read") as e:
        read_apt(tmp_path)
    assert str(e.value.where) == str(path)


def test_package_lists_follow_the_deb822_rules_of_the_build(tmp_path: Path) -> None:
    """One parser (``debpkg.iter_deb822``, r15 finding 8a): field names in any case are read, a
    field given twice in a stanza is refused in one line naming the file."""
    _apt(tmp_path / "apt", "Packages", b"package: lower\nVERSION: 2\nDescription: d\n long\n\n")
    (suite,) = read_apt(tmp_path / "apt")
    assert [(p.name, p.version, p.summary) for p in suite.latest()] == [("lower", "2", "d")]
    _apt(tmp_path / "twice", "Packages", b"Package: a\nVersion: 1\nversion: 9\n\n")
    with pytest.raises(IntegrityError, match=r"Packages: stanza 1: field 'version' appears twice") as e:
        read_apt(tmp_path / "twice")
    assert "\n" not in str(e.value)


def test_a_checksum_type_that_is_no_repository_checksum_is_one_error(tmp_path: Path) -> None:
    """shake_128 is in hashlib.algorithms_available, but its hexdigest() wants a length: it was a
    TypeError traceback from the site build."""
    d = tmp_path / "EL/9/x86_64/repodata"
    d.mkdir(parents=True)
    (d / "primary.xml").write_bytes(b"<metadata xmlns='http://linux.duke.edu/metadata/common'/>")
    (d / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
        '<checksum type="shake_128">00</checksum><location href="repodata/primary.xml"/></data></repomd>'
    )
    with pytest.raises(BuildError, match="unknown checksum type 'shake_128'") as e:
        read_yum(tmp_path)
    assert str(d / "repomd.xml") in str(e.value.where)


@pytest.mark.parametrize("rel", ["dists/stable/Release", "EL/9/x86_64/repodata/repomd.xml"])
def test_a_fifo_for_release_or_repomd_is_one_error_not_a_wait(tmp_path: Path, rel: str) -> None:
    """The two files found by name in a --repo-metadata folder were read without a check: a FIFO
    there blocked the site build for ever."""
    import os

    (tmp_path / rel).parent.mkdir(parents=True)
    os.mkfifo(tmp_path / rel)
    with pytest.raises(BuildError, match="cannot be read: not a regular file") as e:
        (read_apt if rel.startswith("dists") else read_yum)(tmp_path)
    assert str(tmp_path / rel) in str(e.value.where)


def test_a_repo_metadata_flag_that_names_nothing_is_one_line(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--repo-metadata with a folder that is not there, or a name no repository has, was ignored without a
    word (the page built without its packages); a folder whose walk meets a path too long was an
    OSError traceback (pr19a 18)."""
    from cernvm_build.cli.main import main

    out = ["site", "build", "--site", str(site), "--out", str(tmp_path / "out")]
    assert main([*out, "--repo-metadata", f"cvmfs={tmp_path / 'none'}"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(BuildError, match=r"no repository 'nosuch' in repositories\.yaml"):
        build_site(site, tmp_path / "out", repo_metadata={"nosuch": tmp_path})
    deep = tmp_path / "deep"
    part = os.path.join(*(["d" * 200] * 15))  # ~3 KB
    os.makedirs(deep / part)
    monkeypatch.chdir(deep / part)
    os.makedirs(part)  # its deepest path ~6 KB: past PATH_MAX
    with pytest.raises(BuildError, match="cannot read the package metadata under"):
        build_site(site, tmp_path / "out", repo_metadata={"cvmfs": deep})


def test_a_repo_metadata_flag_without_a_repositories_file_is_one_line(site: Path, tmp_path: Path) -> None:
    """A site with no data/repositories.yaml: the check of --repo-metadata's names was after the file's
    absence returned, so any name was ignored without a word there."""
    (site / "data" / "repositories.yaml").unlink()
    with pytest.raises(BuildError, match=r"no repository 'cvmfs' in repositories\.yaml") as e:
        build_site(site, tmp_path / "out", repo_metadata={"cvmfs": tmp_path})
    assert "lists none" in (e.value.hint or "")
    build_site(site, tmp_path / "out")  # without the flag: no repositories, built
