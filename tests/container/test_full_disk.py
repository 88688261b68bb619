"""A container build on a full disk: one line naming the output folder (its layers' work files) or the
reader's scratch file, never a bare "No space left on device" (pr28a finding 8); a full object cache
is read past (finding 10)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.container.profiles import local_profile
from tests.support.tmpfsns import in_namespace, needs_unshare

FQRN = "full.pr28a.test"

pytestmark = needs_unshare


def test_a_full_disk_names_the_output_or_the_scratch_file(tmp_path: Path) -> None:
    tree = tmp_path / "tree" / "usr" / "bin"
    tree.mkdir(parents=True)
    for i in range(8):
        (tree / f"b{i}").write_bytes(os.urandom(100_000))  # ~800 kB that does not deflate
    (tmp_path / "prof.yaml").write_text(local_profile(FQRN, tmp_path / f"keys/{FQRN}.pub", branch="full"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli = f"{sys.executable} -P -m cernvm_build.cli.main"
    build = f"{cli} container {tmp_path}/prof.yaml --source {tmp_path}/repo --format oci,docker-archive -q"
    script = f"""
        mount -t tmpfs -o size=400k none {mnt} || exit 99
        {cli} cvmfs keygen {FQRN} --out {tmp_path}/keys -q || exit 98
        {cli} cvmfs create {tmp_path}/repo --fqrn {FQRN} --keys {tmp_path}/keys -q || exit 97
        {cli} cvmfs publish {tmp_path}/repo {tmp_path}/tree --keys {tmp_path}/keys -q || exit 96
        CERNVM_CACHE_DIR={tmp_path}/cache {build} --out {mnt}/out 2>{tmp_path}/out.err
        rm -rf {mnt}/out
        CERNVM_CACHE_DIR={mnt}/cache {build} --out {tmp_path}/out2 2>{tmp_path}/scratch.err || exit 95
        umount {mnt} && mount -t tmpfs -o size=64k none {mnt}
        CERNVM_CACHE_DIR={mnt}/cache {build} --out {tmp_path}/out3 2>{tmp_path}/catalog.err
    """
    done = in_namespace(script)
    assert done.returncode == 1, done.stderr
    # the layers' tars in OUT/.prof.work: the write's ENOSPC named no file
    err = (tmp_path / "out.err").read_text()
    assert (
        err.startswith(f"error: {mnt}/out/.prof.work/layer-0.tar") and ": No space left on device\n" in err
    ), err
    # the reader's object cache full: the objects are read without it, said once (pr28a finding 10)
    err = (tmp_path / "scratch.err").read_text()
    assert err.count("the cache is full") == 1 and err.count("\n") == 1, err
    assert (tmp_path / "out2" / "prof.oci.tar").exists()
    assert "Traceback" not in err
    # a disk too full for the catalog's scratch copy (the reader's store)
    err = (tmp_path / "catalog.err").read_text()
    assert err.startswith(f"error: {mnt}/cache/cvmfs/{FQRN}/tmp/") and ": No space left on device" in err, err
