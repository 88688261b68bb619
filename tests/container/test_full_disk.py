"""A container build on a full disk: one line naming the output folder (its layers' work files) or the
reader's scratch file, never a bare "No space left on device" (pr28a finding 8); a full object cache
is read past (finding 10)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.container.profiles import local_profile, publish_lines
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
        {publish_lines(cli, FQRN, tmp_path)}
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


def _digests(out: Path) -> dict[str, str]:
    import hashlib

    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (out / "prof.oci.tar", out / "prof.docker.tar", out / "prof.oci" / "index.json")
    }


def test_a_format_that_fails_leaves_the_earlier_outputs_whole_and_is_named(tmp_path: Path) -> None:
    """Several formats at once, the last (docker-archive) on a disk too full for it: the error names
    that format and its output, the folder keeps the earlier build's outputs, none of them replaced by
    this build's (the oci layout and archive were, before: a set of two builds), nothing else is left
    there, and the same command on a disk with room finishes the job."""
    tree = tmp_path / "tree" / "usr" / "share"
    tree.mkdir(parents=True)
    for i in range(8):  # ~2 MB that deflates well: the docker archive's raw layer is the big output
        (tree / f"t{i}").write_bytes(b"%d lines of text\n" % i * 15_000)
    (tmp_path / "prof.yaml").write_text(local_profile(FQRN, tmp_path / f"keys/{FQRN}.pub", branch="full"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli = f"{sys.executable} -P -m cernvm_build.cli.main"
    build = (
        f"CERNVM_CACHE_DIR={tmp_path}/cache {cli} container {tmp_path}/prof.yaml --source {tmp_path}/repo"
        f" --format oci,docker-archive -q --out {mnt}/out"
    )
    script = f"""
        mount -t tmpfs -o size=64m none {mnt} || exit 99
        {publish_lines(cli, FQRN, tmp_path)}
        {build} || exit 95
        cp -a {mnt}/out {tmp_path}/first
        echo new > {tmp_path}/tree/usr/share/new
        {cli} cvmfs publish {tmp_path}/repo {tmp_path}/tree --keys {tmp_path}/keys -q || exit 94
        used=$(df -k --output=used {mnt} | tail -1)
        # room for the layer's work files and the small oci outputs, not for the docker archive too
        mount -o remount,size=$((used + 3 * 1024))k {mnt} || exit 93
        {build} 2>{tmp_path}/full.err && exit 92
        cp -a {mnt}/out {tmp_path}/after
        mount -o remount,size=64m {mnt} || exit 91
        {build} 2>{tmp_path}/again.err || exit 90
        cp -a {mnt}/out {tmp_path}/again
    """
    done = in_namespace(script)
    assert done.returncode == 0, (done.returncode, done.stderr)
    first, after, again = (_digests(tmp_path / d) for d in ("first", "after", "again"))
    assert after == first  # the earlier build's outputs, all of them
    err = (tmp_path / "full.err").read_text()
    assert err.startswith(
        f"error: {mnt}/out/prof.docker.tar: the docker-archive format: cannot write it: No space left"
    ), err
    assert "no output in that folder was replaced" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "after").iterdir()) == sorted(
        p.name for p in (tmp_path / "first").iterdir()
    )  # no work folder, no temporary left
    assert all(again[k] != first[k] for k in first), (again, first)  # the re-run made them all anew
