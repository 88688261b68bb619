"""The real ``cvmfs2`` and the project's reader read a blacklist file the same way: given the same
``CVMFS_BLACKLIST`` file, both refuse the same repository (revoked certificate, revision floor) and
both mount it when the file lists something else (``cvmfs/blacklist.py``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cernvm_build.cvmfs import blacklist
from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.cvmfs.serve import serve
from cernvm_build.errors import CvmfsError, IntegrityError
from tests.cvmfs.conftest import FIXTURE, FQRN

from .real import locate

pytestmark = pytest.mark.integration

FPR = "F6:56:F2:CF:4B:4C:CE:BA:33:D6:B9:55:2A:A1:BC:24:3F:C5:D5:29"  # the fixture's certificate
#: the real 2.11.5 reports a blacklisted certificate as the root catalog's failure (the manifest's
#: verification fails inside it), a revision floor as such; None: it mounts
REVOKED, FLOOR = "(16 - file catalog failure)", "(25 - revision blacklisted)"
CASES = {
    "fingerprint": (f"{FPR}\n", REVOKED),
    "fingerprint, lower case, no colons, a comment": (
        f"# x\n{FPR.replace(':', '').lower()} # leaked\n",
        REVOKED,
    ),
    "revision floor above the trunk": (f"<{FQRN} 3\n", FLOOR),
    "revision floor at the trunk": (f"<{FQRN} 2\n", None),
    "another certificate and repository": (f"{'00:' * 19}00\n<other.cernvm.test 99\n", None),
}


def _real_mounts(tools_dir: Path, url: str, pub: Path, work: Path, listed: Path) -> tuple[bool, str]:
    tools = locate(tools_dir)
    mnt, cache = work / "mnt", work / "cache"
    mnt.mkdir()
    cache.mkdir()
    conf = work / "client.conf"
    conf.write_text(
        f"CVMFS_SERVER_URL={url}\nCVMFS_PUBLIC_KEY={pub}\nCVMFS_HTTP_PROXY=DIRECT\n"
        f"CVMFS_CACHE_BASE={cache}\nCVMFS_RELOAD_SOCKETS={cache}\nCVMFS_USER=root\n"
        f"CVMFS_SHARED_CACHE=no\nCVMFS_QUOTA_LIMIT=-1\nCVMFS_CLAIM_OWNERSHIP=no\nCVMFS_BLACKLIST={listed}\n"
    )
    cmd = [str(tools.cvmfs2), "-o", f"config={conf},fsname=cvmfs2,allow_other", FQRN, str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=tools.env)
    mounted = r.returncode == 0 and os.path.ismount(mnt)
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, timeout=60)
    return mounted, r.stdout + r.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_the_real_client_and_the_reader_agree(tmp_path: Path, case: str) -> None:
    text, refusal = CASES[case]
    mounts = refusal is None
    listed = tmp_path / "blacklist"
    listed.write_text(text)
    pub = FIXTURE / "keys" / f"{FQRN}.pub"
    with serve(FIXTURE.parent) as server:
        real, output = _real_mounts(tmp_path / "tools", f"{server.url}/cvmfs/@fqrn@", pub, tmp_path, listed)
        assert real is mounts, f"{case}: the real client {'mounted' if real else 'refused'}: {output[-600:]}"
        assert mounts or refusal in output, output
        try:
            open_repository(
                server.repo_url(FQRN), fqrn=FQRN, public_keys=[pub], blacklist=blacklist.load([listed])
            ).close()
            ours = True
        except IntegrityError as e:
            assert "blacklisted" in e.message
            ours = False
    assert ours is mounts, case


def test_a_line_the_real_client_skips_is_an_error_here(tmp_path: Path) -> None:
    """The one deliberate difference: the real client skips a line it cannot read (a mistyped
    fingerprint revokes nothing, silently); the reader refuses the file, naming the line."""
    listed = tmp_path / "blacklist"
    listed.write_text(f"{FPR[:-3]}\n")  # one byte short
    pub = FIXTURE / "keys" / f"{FQRN}.pub"
    with serve(FIXTURE.parent) as server:
        real, output = _real_mounts(tmp_path / "tools", f"{server.url}/cvmfs/@fqrn@", pub, tmp_path, listed)
    assert real, output
    with pytest.raises(CvmfsError, match=rf"^{listed}:1: not a certificate fingerprint"):
        blacklist.load([listed])
