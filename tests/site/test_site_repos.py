"""Package-repository pages from real yum and apt metadata (rpmbuild + createrepo_c, dpkg-deb +
apt-ftparchive): versions are read, checksums verified, never typed by hand."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from sitehelpers import build_site

from cernvm_build.errors import BuildError
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
    assert len(el9.packages) == 3
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
