"""What we write matches what the real cvmfs_server writes; the CLI and HTTP serving work end to end."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs.export import export_directory
from cernvm_build.cvmfs.keys import load_keys
from cernvm_build.cvmfs.publish import create_repository, publish_tree
from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.cvmfs.serve import serve

from .helpers import FIXTURE, FQRN, make_sample_tree

pytestmark = pytest.mark.integration

FX = "fixture.cernvm.test"
REAL_ROOT = "ca734188abe4255977cc1d053b5331c9f24c55cb"  # revision 2, written by cvmfs_server
ROWS = (
    "SELECT md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, flags, name, symlink,"
    " uid, gid, xattr FROM catalog ORDER BY md5path_1, md5path_2"
)


def _open(stratum: Path, name: str, tmp: Path) -> sqlite3.Connection:
    db = tmp / f"{name}.db"
    db.write_bytes(zlib.decompress((stratum / "data" / name[:2] / (name[2:] + "C")).read_bytes()))
    return sqlite3.connect(db)


def test_republished_fixture_matches_real_server_catalogs(tmp_path: Path) -> None:
    with open_repository(FIXTURE / "repo", fqrn=FX, public_keys=[FIXTURE / "keys" / f"{FX}.pub"]) as repo:
        export_directory(repo, tmp_path / "tree")
    keys = load_keys(FIXTURE / "keys", FX)
    s = tmp_path / "stratum"
    create_repository(s, FX, keys)
    r = publish_tree(s, FX, keys, tmp_path / "tree")  # default 4/8/16 MiB chunking, SHA-1, zlib
    ours, real = _open(s, r.root_hash, tmp_path), _open(FIXTURE / "repo", REAL_ROOT, tmp_path)
    # same rows: path hashes, link counts, content hashes (same zlib bytes), sizes, modes, flags
    assert ours.execute(ROWS).fetchall() == real.execute(ROWS).fetchall()
    assert dict(ours.execute("SELECT * FROM statistics")) == dict(real.execute("SELECT * FROM statistics"))
    keys_ours = {k for (k,) in ours.execute("SELECT key FROM properties")}
    assert keys_ours == {k for (k,) in real.execute("SELECT key FROM properties")}
    (path, ours_nested, size), = ours.execute("SELECT * FROM nested_catalogs").fetchall()  # fmt: skip
    (rpath, real_nested, rsize), = real.execute("SELECT * FROM nested_catalogs").fetchall()  # fmt: skip
    assert (path, size) == (rpath, rsize)
    on, rn = _open(s, ours_nested, tmp_path), _open(FIXTURE / "repo", real_nested, tmp_path)
    assert on.execute(ROWS).fetchall() == rn.execute(ROWS).fetchall()
    chunks = "SELECT md5path_1, md5path_2, offset, size, hash FROM chunks ORDER BY 1, 2, 3"
    assert on.execute(chunks).fetchall() == rn.execute(chunks).fetchall()
    assert dict(on.execute("SELECT * FROM statistics")) == dict(rn.execute("SELECT * FROM statistics"))


def test_cli_publish_and_read_over_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys, srv = tmp_path / "keys", tmp_path / "srv"
    stratum = srv / FQRN
    src = make_sample_tree(tmp_path / "src")
    assert main(["cvmfs", "keygen", FQRN, "--out", str(keys)]) == 0
    assert main(["cvmfs", "keygen", FQRN, "--out", str(keys)]) == 5  # never overwrites keys silently
    assert main(["cvmfs", "create", str(stratum), "--fqrn", FQRN, "--keys", str(keys), "-q"]) == 0
    capsys.readouterr()
    argv = ["cvmfs", "publish", str(stratum), str(src), "--keys", str(keys), "--tag", "v1", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["revision"] == 2 and result["tag"] == "v1" and result["catalogs"] == 2
    assert main(["cvmfs", "tag", "add", str(stratum), "keep", "--keys", str(keys), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["revision"] == 2
    assert main(["cvmfs", "tag", "remove", str(stratum), "gone", "--keys", str(keys)]) == 5
    assert "unknown tag 'gone'" in capsys.readouterr().err
    assert main(["cvmfs", "resign", str(stratum), "--keys", str(keys), "--days", "3", "-q"]) == 0
    with serve(srv) as server:
        url = server.repo_url(FQRN)
        with open_repository(url, fqrn=FQRN, public_keys=[keys / f"{FQRN}.pub"]) as repo:
            assert repo.read_bytes("/etc/os-release") == (src / "etc/os-release").read_bytes()
            assert repo.read_bytes("/opt/sw/big.bin") == (src / "opt/sw/big.bin").read_bytes()
            assert {t.name for t in repo.tags()} >= {"v1", "keep", "trunk"}
