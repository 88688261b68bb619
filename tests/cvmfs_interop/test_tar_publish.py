"""A tar stream published by the project (the path DUCC layers take) passes the real server's checks
and reads the same through the real cvmfs2 as its source tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.publish import create_repository, publish_tar
from cernvm_build.cvmfs.serve import serve
from tests.cvmfs_publish.helpers import describe, make_sample_tree

from .real import locate, mounted

pytestmark = pytest.mark.integration

FQRN = "tar.cernvm.test"


def test_tar_publish_is_accepted_and_read_by_the_real_tools(tmp_path: Path) -> None:
    tools = locate(tmp_path)
    src = make_sample_tree(tmp_path / "src")
    tar = tmp_path / "tree.tar.gz"
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-C", str(src), "-czf", str(tar), "."], check=True
    )
    keys = keymod.generate_keys(FQRN)
    keys.save(tmp_path / "keys")
    pub = tmp_path / "keys" / f"{FQRN}.pub"
    stratum = tmp_path / "srv" / FQRN
    create_repository(stratum, FQRN, keys)
    with open(tar, "rb") as f:
        r = publish_tar(stratum, FQRN, keys, f, tag="from-tar")
    assert r.catalogs == 2  # the .cvmfscatalog marker in the tar
    with serve(tmp_path / "srv") as server:
        check = tools.check(server.repo_url(FQRN), FQRN, pub, tmp_path / "check")
        assert check.returncode == 0, check.stdout + check.stderr
        scrub = tools.scrub(stratum)
        assert scrub.returncode == 0, scrub.stdout + scrub.stderr
        url = f"{server.url}/cvmfs/@fqrn@"
        with mounted(tools, url, FQRN, pub, tmp_path / "mount", CVMFS_REPOSITORY_TAG="from-tar") as mnt:
            got = describe(mnt, mtimes=False)
    # every entry below the root: types, modes, sizes, contents, targets, owners, xattrs, devices
    # and hard links (grouped per directory, as the real server groups them)
    assert got == describe(src, mtimes=False)
