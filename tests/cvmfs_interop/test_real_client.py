"""The real ``cvmfs2`` mounts what the project publishes (trunk, a tag, a date) and every file
matches its source; the real server tool's ``check -c`` and ``scrub`` pass after every operation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cernvm_build.cvmfs.variant import expand
from tests.cvmfs_publish.helpers import describe

from .conftest import FQRN, VARIANT_CONFIG, Interop, iso
from .real import mounted

pytestmark = pytest.mark.integration


def test_server_checks_pass_after_every_operation(interop: Interop) -> None:
    failed = [
        f"{what} after {after}: exit {r.returncode}: {(r.stderr or r.stdout)[-400:]}"
        for after, what, r in interop.checks
        if r.returncode != 0
    ]
    assert not failed, "\n".join(failed)
    assert [after for after, what, _ in interop.checks if what == "scrub"] == [
        "create",
        "full publish",
        "incremental publish",
        "second incremental publish",
        "tag add",
        "tag remove",
        "resign",
    ]


def _expected(source: Path) -> dict[str, tuple[object, ...]]:
    """The source tree as the real client shows it: whole-second mtimes (2.11 has no ns), variant
    symlinks expanded with the client's configuration."""
    out = {}
    for path, (kind, mode, size, what, uid, gid, xattrs, mtime, group) in describe(source).items():
        if kind == stat.S_IFLNK:
            assert isinstance(what, str)
            what = expand(what, VARIANT_CONFIG)
            size = len(what.encode())
        out[path] = (kind, mode, size, what, uid, gid, xattrs, int(mtime) // 10**9 * 10**9, group)  # type: ignore[call-overload]
    return out


def _compare(mnt: Path, source: Path, markers: frozenset[str]) -> None:
    want, got = _expected(source), describe(mnt)
    # the markers the publisher added for /.cvmfsdirtab and the automatic split are in the repository
    assert {p for p in got if p.rsplit("/", 1)[-1] in (".cvmfscatalog", ".cvmfsautocatalog")} - set(
        want
    ) == markers
    got = {p: v for p, v in got.items() if p not in markers}
    diffs = [
        f"{p}: want {want.get(p)} got {got.get(p)}"
        for p in sorted(set(want) | set(got))
        if want.get(p) != got.get(p)
    ]
    assert not diffs, "\n".join(diffs[:20])


@pytest.mark.parametrize(
    ("snapshot", "config"),
    [
        ("trunk", {}),
        ("v1", {"CVMFS_REPOSITORY_TAG": "v1"}),
        ("v2", {"CVMFS_REPOSITORY_DATE": "date of v2 + 10 s"}),
    ],
    ids=["trunk", "tag", "date"],
)
def test_real_cvmfs2_mounts_and_every_file_matches(
    interop: Interop, tmp_path: Path, snapshot: str, config: dict[str, str]
) -> None:
    rev = interop.revisions[snapshot]
    if "CVMFS_REPOSITORY_DATE" in config:
        config = {"CVMFS_REPOSITORY_DATE": iso(rev.timestamp + 10)}
    with mounted(
        interop.tools, interop.url_template, FQRN, interop.pub, tmp_path, **config, **VARIANT_CONFIG
    ) as mnt:
        assert os.getxattr(mnt, "user.revision") == str(rev.number).encode()
        assert os.getxattr(mnt, "user.root_hash") == rev.root_hash.encode()
        _compare(mnt, rev.source, rev.markers)
        assert {"/sw/one/.cvmfscatalog", "/sw/two/.cvmfscatalog", "/auto/a/.cvmfsautocatalog"} <= rev.markers
        assert "/sw/skipme/.cvmfscatalog" not in rev.markers
        assert os.getxattr(mnt, "user.nclg") == str(rev.catalogs).encode()  # all catalogs were loaded
        # what the sample tree exercises is really there, so the comparison above means something
        st = (mnt / "data" / "big.bin").stat()
        assert st.st_size > 16 << 20
        assert os.getxattr(mnt / "data" / "big.bin", "user.chunks") not in (b"", b"1")
        assert (mnt / "usr/bin/tool1").stat().st_ino == (mnt / "usr/bin/tool1-hard").stat().st_ino
        assert os.getxattr(mnt / "opt/sw", "user.catalog_counters", follow_symlinks=False)
        assert stat.S_ISBLK((mnt / "loop9").lstat().st_mode)
        assert (mnt / "loop9").lstat().st_rdev == os.makedev(7, 9)
