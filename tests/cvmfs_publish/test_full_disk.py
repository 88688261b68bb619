"""A publish that meets a full disk: one line that names the repository's side, and a re-run with space
finishes the job."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.support.tmpfsns import in_namespace, needs_unshare

pytestmark = needs_unshare


def test_a_full_disk_names_the_side_that_is_full(tmp_path: Path) -> None:
    # pr24b finding 9: ENOSPC of the object store was "SOURCE: cannot read: No space left on device,
    # hint: check permissions"
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3_000_000))
    (src / "small").write_text("hi\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli = f"{sys.executable} -P -m cernvm_build.cli.main"
    script = f"""
        set -u
        mount -t tmpfs -o size=2m none {mnt} || exit 99
        {cli} cvmfs keygen f.test --out {tmp_path}/keys -q || exit 98
        {cli} cvmfs create {mnt}/srv --fqrn f.test --keys {tmp_path}/keys -q || exit 97
        {cli} cvmfs publish {mnt}/srv {src} --keys {tmp_path}/keys -q 2>{tmp_path}/full.err
        echo $? >{tmp_path}/full.rc
        mount -o remount,size=20m {mnt}
        {cli} cvmfs publish {mnt}/srv {src} --keys {tmp_path}/keys -q || exit 96
        {cli} cvmfs verify {mnt}/srv --key {tmp_path}/keys/f.test.pub -q || exit 95
        dd if=/dev/zero of={mnt}/fill bs=1M 2>/dev/null
        {cli} cvmfs export {mnt}/srv {mnt}/out.tar --key {tmp_path}/keys/f.test.pub -q 2>{tmp_path}/tar.err
        echo $? >{tmp_path}/tar.rc
        {cli} cvmfs export {mnt}/srv {mnt}/out --key {tmp_path}/keys/f.test.pub -q 2>{tmp_path}/dir.err
        echo $? >{tmp_path}/dir.rc
        ls -A {mnt} >{tmp_path}/left
    """
    done = in_namespace(script)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "full.rc").read_text().strip() == "5"
    err = (tmp_path / "full.err").read_text()
    assert f"cannot store {src}/big in the repository: No space left on device" in err, err
    assert "check permissions" not in err and "Traceback" not in err
    # an export onto a full disk: a tar's line named no file, a folder's blamed the tree (finding 10)
    tar_err = (tmp_path / "tar.err").read_text()
    assert f"error: {mnt}/out.tar: No space left on device" in tar_err, tar_err
    # and the same full disk under a folder: exit 5 (a repository's error) where the tar's was 1, its
    # line naming the entry, not the output (rv34a): now both the output, exit 1 as every full disk
    err = (tmp_path / "dir.err").read_text()
    assert err.startswith(f"error: {mnt}/out: No space left on device\nhint: free some space"), err
    assert (tmp_path / "tar.rc").read_text() == (tmp_path / "dir.rc").read_text() == "1\n"
    assert (tmp_path / "left").read_text().split() == ["fill", "srv"]  # no half-written export left


def test_a_replica_on_a_full_disk_names_the_object(tmp_path: Path) -> None:
    # pr28a finding 15: an object's write in `cvmfs replicate` said only "No space left on device"
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(200_000))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli = f"{sys.executable} -P -m cernvm_build.cli.main"
    replicate = f"{cli} cvmfs replicate {tmp_path}/srv {mnt}/rep --key {tmp_path}/keys/f.test.pub -q"
    script = f"""
        set -u
        mount -t tmpfs -o size=500k none {mnt} || exit 99
        {cli} cvmfs keygen f.test --out {tmp_path}/keys -q || exit 98
        {cli} cvmfs create {tmp_path}/srv --fqrn f.test --keys {tmp_path}/keys -q || exit 97
        {cli} cvmfs publish {tmp_path}/srv {src} --keys {tmp_path}/keys -q || exit 96
        {replicate} 2>{tmp_path}/rep.err
        echo $? >{tmp_path}/rep.rc
        mount -o remount,size=20m {mnt}
        {replicate} || exit 95
        {cli} cvmfs verify {mnt}/rep --key {tmp_path}/keys/f.test.pub -q || exit 94
    """
    done = in_namespace(script)
    assert done.returncode == 0, done.stderr  # and the re-run with space finishes, verified
    assert (tmp_path / "rep.rc").read_text() == "1\n"
    err = (tmp_path / "rep.err").read_text()
    assert err.startswith(f"error: {mnt}/rep/data/") and ": No space left on device\n" in err, err
