"""What a web server serves comes out readable by it whatever the publisher's umask (pr28b finding 6)."""

from __future__ import annotations

import os
from pathlib import Path

from cernvm_build.cli.main import main

PRIVATE = {"txn", "stats", "tmp"}  # the publisher's own: never served


def _served(root: Path) -> dict[str, int]:
    modes = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in PRIVATE]
        for name in [".", *files]:
            path = Path(folder, name)
            modes[str(path.relative_to(root))] = path.stat().st_mode & 0o777
    return modes


def test_a_repository_and_its_replica_published_under_umask_077_are_readable_by_the_web_server(
    tmp_path: Path,
) -> None:
    # objects were 0600 in 0700 folders (a 403 for nginx's user on every one) while .cvmfspublished
    # beside them was 0644; the replica's objects were 0644 on purpose, in 0700 folders
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x\n")
    old = os.umask(0o077)
    try:
        keys, srv, rep = tmp_path / "keys", tmp_path / "srv" / "r", tmp_path / "rep" / "r"
        assert main(["cvmfs", "keygen", "demo.cernvm.test", "--out", str(keys)]) == 0
        assert main(["cvmfs", "create", str(srv), "--fqrn", "demo.cernvm.test", "--keys", str(keys)]) == 0
        assert main(["cvmfs", "publish", str(srv), str(tree), "--keys", str(keys)]) == 0
        pub = str(keys / "demo.cernvm.test.pub")
        assert main(["cvmfs", "replicate", str(srv), str(rep), "--key", pub]) == 0
    finally:
        os.umask(old)
    for root in (srv, rep):
        modes = _served(root)
        assert len(modes) > 256
        wrong = {p: oct(m) for p, m in modes.items() if m != (0o755 if (root / p).is_dir() else 0o644)}
        assert wrong == {}, root
    assert (keys / "demo.cernvm.test.masterkey").stat().st_mode & 0o777 == 0o600


def test_the_keys_folder_and_the_repository_made_under_umask_000_are_not_writable_by_others(
    tmp_path: Path,
) -> None:
    # keygen's --out folder was 0777 under umask 000: anyone could replace the 0600 master key in it
    old = os.umask(0)
    try:
        keys, srv = tmp_path / "new" / "keys", tmp_path / "srv" / "repo"
        assert main(["cvmfs", "keygen", "demo.cernvm.test", "--out", str(keys)]) == 0
        assert main(["cvmfs", "create", str(srv), "--fqrn", "demo.cernvm.test", "--keys", str(keys)]) == 0
    finally:
        os.umask(old)
    # the folders above them made too (a 0777 one let anyone swap the keys folder for another)
    for folder in (keys, keys.parent, srv, srv.parent):
        assert oct(folder.stat().st_mode & 0o777) == oct(0o755), folder
    assert (keys / "demo.cernvm.test.masterkey").stat().st_mode & 0o777 == 0o600


def test_a_shared_stratum_published_under_umask_027_keeps_its_group_write_and_setgid(tmp_path: Path) -> None:
    # the served folders' chmod set 0755 outright: a stratum 2775 (setgid, written by a group of
    # publishers) became 0755 at the first publish, and the rest of the group could no longer publish
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x\n")
    keys, srv = tmp_path / "keys", tmp_path / "srv"
    assert main(["cvmfs", "keygen", "demo.cernvm.test", "--out", str(keys)]) == 0
    assert main(["cvmfs", "create", str(srv), "--fqrn", "demo.cernvm.test", "--keys", str(keys)]) == 0
    for folder in (srv, srv / "data", srv / "data" / "00"):
        os.chmod(folder, 0o2775)
    old = os.umask(0o027)
    try:
        assert main(["cvmfs", "publish", str(srv), str(tree), "--keys", str(keys)]) == 0
    finally:
        os.umask(old)
    for folder in (srv, srv / "data", srv / "data" / "00"):
        assert oct(folder.stat().st_mode & 0o7777) == oct(0o2775), folder
