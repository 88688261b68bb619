"""A Debian tree built on a full cache disk, or one out of inodes: the OSError naming the file in the
tree, which the CLI shows as one line with "free some space"; it was an IntegrityError blaming the
package being unpacked ("not installable as shipped") (pr31a finding 1). Real tmpfs mounts, as root."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cernvm_build.cli.app import _environment_error
from cernvm_build.errors import BuildError
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


#: dpkg as a full disk meets it: what it unpacks fills the disk, its error says so (if the log can
#: still take it), exit 2; or a failure of its own (exit 1) on a disk with room
_DPKG = """#!/bin/sh
echo "Unpacking pkg (1) ..."
if [ -e /full ]; then
    dd if=/dev/zero of=/usr/share/pkg.dpkg-new bs=64k 2>/dev/null
    echo "dpkg: error processing archive /.debs/pkg.deb (--unpack): cannot copy extracted data: \\
failed to write (No space left on device)" >&2
    exit 2
fi
echo "dpkg: error processing package pkg (--configure): installed pkg package post-installation \\
script subprocess returned error exit status 1" >&2
exit 1
"""


def _chroot(tree: Path, *, full: bool) -> None:
    """A root dpkg runs in (the host's sh, env and dd with their libraries) with a stand-in dpkg: the
    stage's own logic (its namespace, mounts, chroot and what it makes of dpkg's failure) is tested."""
    for d in ("usr/bin", "usr/share", "proc", "dev", ".debs", "root"):
        (tree / d).mkdir(parents=True)
    (tree / "bin").symlink_to("usr/bin")
    for tool in ("sh", "env", "dd", "echo"):
        host = Path(shutil.which(tool) or tool).resolve()
        shutil.copy(host, tree / "usr/bin" / tool)
        libs = subprocess.run(["ldd", str(host)], capture_output=True, text=True, check=True).stdout
        for lib in re.findall(r"(/\S+) \(0x", libs):
            dest = tree / lib.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(lib, dest)
    (tree / "usr/bin/dpkg").write_text(_DPKG)
    (tree / "usr/bin/dpkg").chmod(0o755)
    if full:
        (tree / "full").touch()


def test_dpkg_on_a_full_disk_is_the_full_disks_line_and_leaves_nothing(
    tmp_path: Path, small_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dpkg's stage on a full cache disk was "installing the Debian packages failed", dpkg blamed, its
    log kept on the full disk (``debian-build-failed.log``) for the user to read; it is the CLI's
    full-disk line naming the cache's folder, the install log gone with the tree (``atomic_dir``)."""
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(small_fs / "cache"))
    deb = _deb(tmp_path, "pkg", [("./usr/share/pkg", b"x")])
    mount_tmpfs(small_fs, "size=64m")  # room for dpkg's own failure (``debian.FULL_BELOW``)
    tree = small_fs / "os" / ".debian12-x.1.tmp"
    _chroot(tree, full=True)
    with pytest.raises(OSError) as e:
        debian._install(tree, tmp_path, [deb], 0, None)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tree.parent), e.value
    shown = _environment_error(e.value)
    assert shown is not None and shown.hint == "free some space on that file system, or use another one"
    assert sorted(p.name for p in tree.parent.iterdir()) == [tree.name]  # no log beside it
    assert not (small_fs / "cache" / "os" / "debian-build-failed.log").exists()
    # a failure of dpkg's own, on a disk with room: as before, its log kept and named
    (tree / "usr/share/pkg.dpkg-new").unlink()
    (tree / "full").unlink()
    with pytest.raises(BuildError, match=r"installing the Debian packages failed \(exit 1\)") as failed:
        debian._install(tree, tmp_path, [deb], 0, None)
    assert "debian-build-failed.log" in str(failed.value.hint)


def test_a_failure_of_dpkg_s_own_where_only_root_has_room_is_not_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rv33a: dpkg (root) may write into the blocks kept back from other users; with none left for
    them (``f_bavail`` 0) and 1 GiB for root, a maintainer script's failure was "No space left on
    device" and its log deleted. A stand-in ``statvfs``: a real ext4 with reserved blocks nearly full
    is a disk image this test does not need for the rule."""
    log = tmp_path / "dpkg.log"
    log.write_text("dpkg: error processing package pkg (--configure): ... returned error exit status 1\n")
    room = os.statvfs_result((4096, 4096, 1 << 20, 1 << 18, 0, 1000, 500, 500, 0, 255))
    monkeypatch.setattr(debian.os, "statvfs", lambda _path: room)
    monkeypatch.setattr(debian.os, "geteuid", lambda: 0)
    debian._raise_if_full(tmp_path / "tree", log)  # dpkg's own failure: the caller keeps its log
    assert log.exists()
    monkeypatch.setattr(debian.os, "geteuid", lambda: 1000)  # not root: the kept-back room is not its
    with pytest.raises(OSError) as e:
        debian._raise_if_full(tmp_path / "tree", log)
    assert e.value.errno == errno.ENOSPC and not log.exists()
