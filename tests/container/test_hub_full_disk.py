"""Publishing into a hub on a full disk: one line naming the hub's scratch folder beside it, never a
bare "No space left on device" (pr31a finding 2: the scratch tars of the layers named no file)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.container.profiles import local_profile, publish_lines
from tests.support.tmpfsns import in_namespace, needs_unshare

FQRN = "hubfull.pr31a.test"
HUB = "unpacked.pr31a.test"

pytestmark = needs_unshare


def test_a_full_disk_under_the_hub_names_its_scratch_folder(tmp_path: Path) -> None:
    tree = tmp_path / "tree" / "usr" / "bin"
    tree.mkdir(parents=True)
    for i in range(8):
        (tree / f"b{i}").write_bytes(os.urandom(100_000))  # ~800 kB that does not deflate
    (tmp_path / "prof.yaml").write_text(local_profile(FQRN, tmp_path / f"keys/{FQRN}.pub", branch="hub"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli = f"{sys.executable} -P -m cernvm_build.cli.main"
    build = (
        f"CERNVM_CACHE_DIR={tmp_path}/cache {cli} container {tmp_path}/prof.yaml --source {tmp_path}/repo"
        f" --format cvmfs --hub-fqrn {HUB} --hub-stratum {mnt}/hub --hub-keys {tmp_path}/hubkeys"
        f" --out {tmp_path}/out -q"
    )
    script = f"""
        mount -t tmpfs -o size=400k none {mnt} || exit 99
        {publish_lines(cli, FQRN, tmp_path)}
        {cli} cvmfs keygen {HUB} --out {tmp_path}/hubkeys -q || exit 95
        {cli} cvmfs create {mnt}/hub --fqrn {HUB} --keys {tmp_path}/hubkeys -q || exit 94
        {build} 2>{tmp_path}/full.err
        echo $? >{tmp_path}/rc
        ls -a {mnt} >{tmp_path}/left
        umount {mnt} && mount -t tmpfs -o size=64m none {mnt}
        {cli} cvmfs create {mnt}/hub --fqrn {HUB} --keys {tmp_path}/hubkeys -q || exit 93
        {build}
    """
    done = in_namespace(script)
    assert done.returncode == 0, done.stderr
    err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "rc").read_text() == "1\n", err
    assert err.startswith(f"error: {mnt}/.hub-") and ": No space left on device\n" in err, err
    assert "hint: free some space on that file system" in err and "Traceback" not in err, err
    assert (tmp_path / "left").read_text().split() == [".", "..", "hub"]  # the scratch folder went
