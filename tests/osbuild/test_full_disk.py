"""A Debian tree built on a full cache disk, or one out of inodes: the OSError naming the file in the
tree, which the CLI shows as one line with "free some space"; it was an IntegrityError blaming the
package being unpacked ("not installable as shipped") (pr31a finding 1). Real tmpfs mounts, as root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cernvm_build.cli.app import _environment_error
from cernvm_build.osbuild import debian
from tests.osbuild.test_hostile_tree import _deb
from tests.support.tmpfsns import mount_tmpfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs; unpacking keeps owners (root)")


@pytest.mark.parametrize(
    ("options", "members"),
    [
        ("size=256k", [("./usr/share/big", os.urandom(1 << 20))]),  # a write's ENOSPC
        ("size=4m,nr_inodes=24", [(f"./usr/share/f{i}", b"x") for i in range(32)]),  # no inode left
    ],
    ids=["full", "inodes"],
)
def test_a_full_disk_under_the_tree_names_the_file_not_the_package(
    tmp_path: Path, small_fs: Path, options: str, members: list[tuple[str, bytes]]
) -> None:
    deb = _deb(tmp_path, "pkg", list(members))
    mount_tmpfs(small_fs, options)
    tree = small_fs / "tree"
    tree.mkdir()
    with pytest.raises(OSError) as e:
        debian._unpack(tree, [deb])
    assert e.value.errno == errno.ENOSPC
    assert str(e.value.filename).startswith(f"{tree}/usr/"), e.value
    shown = _environment_error(e.value)
    assert shown is not None and shown.hint == "free some space on that file system, or use another one"
