"""``release publish --site-dest`` copies the site's sources into a scratch folder: on a full or
inode-less disk that copy's ``shutil.Error`` (one for all its files, no errno) was a traceback; it is
the CLI's one line naming the first file and saying to free space (pr31a finding 4). Real tmpfs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from cernvm_build.cli import app
from cernvm_build.release.publish import site_with_release
from tests.support.tmpfsns import mount_tmpfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")


@pytest.mark.parametrize("options", ["size=64k", "size=4m,nr_inodes=16"], ids=["full", "inodes"])
def test_a_full_disk_under_the_copy_of_the_site_is_one_line(
    tmp_path: Path, small_fs: Path, options: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mount_tmpfs(small_fs, options)
    parser = argparse.ArgumentParser(prog="cernvm-build")
    # the copy fails before the release's files are read
    parser.set_defaults(func=lambda args, out: site_with_release(tmp_path / "release", small_fs) and 0)

    assert app.run(parser, []) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"error: {small_fs}/site/") and ": No space left on device\n" in err, err
    assert "hint: free some space on that file system" in err and "Traceback" not in err
    assert len(err.splitlines()) == 2, err
