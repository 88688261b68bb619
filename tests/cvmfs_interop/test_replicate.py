"""``cvmfs replicate``: a Stratum-1 replica of a repository the tests publish and serve on 127.0.0.1.

The project's reader and the real cvmfs2 mount the replica (trunk and a tag); a second replicate after
a new revision fetches only the new objects; a replicate killed mid-run publishes nothing and a re-run
converges; a tampered source object is refused and the replica's manifest is not touched."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.publish import create_repository, publish_tree
from cernvm_build.cvmfs.repository import SnapshotSpec, open_repository
from cernvm_build.cvmfs.serve import serve
from tests.support import FS_TOPDIR_FL, inode_flags, takes_topdir

from .real import locate, mounted

pytestmark = pytest.mark.integration

FQRN = "replica.cernvm.test"
MiB = 1 << 20


def _objects(stratum: Path) -> set[str]:
    return {
        str(p.relative_to(stratum)) for p in (stratum / "data").glob("??/*") if not p.name.startswith(".")
    }


def _tree(root: Path, step: int, files: int = 40) -> Path:
    rng = random.Random(step)
    for i in range(files):
        d = root / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(b"file %d of step %d\n" % (i, step if i < 3 else 0))
    (root / "big.bin").write_bytes(random.Random(1).randbytes(9 * MiB) + rng.randbytes(step))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / ".cvmfscatalog").write_bytes(b"")
    (root / "sub" / "nested").write_text(f"nested catalog file, step {step}\n")
    return root


def _replicate(capsys: pytest.CaptureFixture[str], url: str, dest: Path, pub: Path) -> dict[str, object]:
    code = main(["cvmfs", "replicate", url, str(dest), "--key", str(pub), "--json", "-j", "4"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)  # type: ignore[no-any-return]


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[tuple[Path, keymod.KeySet, str]]:
    keys = keymod.generate_keys(FQRN)
    keys.save(tmp_path / "keys")
    stratum = tmp_path / "srv" / FQRN
    create_repository(stratum, FQRN, keys)
    publish_tree(stratum, FQRN, keys, _tree(tmp_path / "src1", 1), tag="v1")
    with serve(tmp_path / "srv") as server:
        yield stratum, keys, server.repo_url(FQRN)


def _read_all(source: str | Path, pub: Path, tag: str | None = None) -> dict[str, bytes]:
    with open_repository(source, fqrn=FQRN, public_keys=[pub], snapshot=SnapshotSpec(tag=tag)) as repo:
        assert repo.verify().ok
        return {e.path: repo.read_bytes(e) for e in repo.walk("/") if e.is_file}


def test_replica_is_read_by_the_reader_and_the_real_cvmfs2_and_updates_incrementally(
    origin: tuple[Path, keymod.KeySet, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stratum, keys, url = origin
    pub = tmp_path / "keys" / f"{FQRN}.pub"
    dest = tmp_path / "replica" / FQRN
    first = _replicate(capsys, url, dest, pub)
    assert first["revision"] == 2 and first["previous_revision"] is None
    assert first["objects_skipped"] == 0 and first["objects_fetched"] == len(_objects(dest))
    assert (dest / ".cvmfspublished").read_bytes() == (stratum / ".cvmfspublished").read_bytes()
    assert (dest / ".cvmfs_last_snapshot").is_file() and not (dest / ".cvmfs_is_snapshotting").exists()
    if takes_topdir(tmp_path / "probe"):  # ext4: the fan-out directories spread over block groups
        assert inode_flags(dest / "data") & FS_TOPDIR_FL
    # all 256 fan-out directories, as on a real Stratum, though a few objects fill only some of them
    assert len(_objects(dest)) < 200
    assert {p.name for p in (dest / "data").iterdir()} == {f"{i:02x}" for i in range(256)} | {"txn"}
    want = _read_all(stratum, pub)
    with serve(tmp_path / "replica") as replica:
        assert _read_all(replica.repo_url(FQRN), pub) == want
        assert _read_all(replica.repo_url(FQRN), pub, tag="v1") == want
        tools = locate(tmp_path)
        with mounted(tools, f"{replica.url}/cvmfs/@fqrn@", FQRN, pub, tmp_path / "real") as mnt:
            got = {"/" + str(p.relative_to(mnt)): p.read_bytes() for p in mnt.rglob("*") if p.is_file()}
            assert got == want
            assert os.getxattr(mnt, "user.revision") == b"2"

    # a new revision: only its new objects travel, and the old tag stays readable from the replica
    before = _objects(dest)
    src_before = _objects(stratum)
    publish_tree(stratum, FQRN, keys, _tree(tmp_path / "src2", 2), tag="v2")
    second = _replicate(capsys, url, dest, pub)
    fetched = _objects(dest) - before
    assert second["revision"] == 3 and second["previous_revision"] == 2
    assert fetched and fetched <= _objects(stratum) - src_before
    assert second["objects_fetched"] == len(fetched)
    assert second["objects_skipped"] > len(fetched)  # most of the tree did not change
    assert second["bytes_fetched"] < 9 * MiB  # the 9 MiB random file: only its changed last chunk
    assert _read_all(dest, pub, tag="v1") == want
    assert _read_all(dest, pub) == _read_all(stratum, pub)
    assert second["catalogs_unchanged"] == 1  # tag v1: the revision the replica published
    third = _replicate(capsys, url, dest, pub)
    assert third["objects_fetched"] == 0
    # everything is the published revision's: no catalog read, no object looked up
    assert third["catalogs"] == 0 and third["catalogs_unchanged"] >= 2 and third["objects_skipped"] == 0

    # A replica that lacks a tag's revision (as another tool may make one): its catalog is not
    # trusted, it is walked, and what it names comes back.
    v1_root = dest / f"data/{first['root_hash'][:2]}/{first['root_hash'][2:]}C"  # type: ignore[index]
    only_v1 = hashlib.sha1(zlib.compress(b"file 0 of step 1\n")).hexdigest()
    only_v1_path = dest / f"data/{only_v1[:2]}/{only_v1[2:]}"
    assert v1_root.is_file() and only_v1_path.is_file()
    v1_root.unlink()
    only_v1_path.unlink()
    fourth = _replicate(capsys, url, dest, pub)
    assert fourth["objects_fetched"] == 2 and v1_root.is_file() and only_v1_path.is_file()
    assert _read_all(dest, pub, tag="v1") == want


class _SlowHandler(http.server.SimpleHTTPRequestHandler):
    """Serves ``/cvmfs/<fqrn>/...`` from a folder, each object request a little late (so that a
    kill lands in the middle of a replication)."""

    def translate_path(self, path: str) -> str:
        return super().translate_path(path.removeprefix("/cvmfs"))

    def do_GET(self) -> None:
        if "/data/" in self.path:
            time.sleep(0.02)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_killed_replicate_publishes_nothing_and_a_rerun_converges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = keymod.generate_keys(FQRN)
    keys.save(tmp_path / "keys")
    pub = tmp_path / "keys" / f"{FQRN}.pub"
    stratum = tmp_path / "srv" / FQRN
    create_repository(stratum, FQRN, keys)
    publish_tree(stratum, FQRN, keys, _tree(tmp_path / "src", 1, files=400), tag="v1")
    handler = lambda *a: _SlowHandler(*a, directory=str(tmp_path / "srv"))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/cvmfs/{FQRN}"
    dest = tmp_path / "replica"
    try:
        cmd = [sys.executable, "-m", "cernvm_build.cli.main", "cvmfs", "replicate", url, str(dest)]
        proc = subprocess.Popen([*cmd, "--key", str(pub), "-j", "2"], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(_objects(dest)) < 60 if dest.is_dir() else True:
            if proc.poll() is not None or time.monotonic() >= deadline:
                pytest.fail("replicate ended before the kill")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (dest / ".cvmfspublished").exists()  # killed mid-run: nothing published
        partial = _objects(dest)
        assert 60 <= len(partial) < len(_objects(stratum))
        again = _replicate(capsys, url, dest, pub)
        assert again["objects_skipped"] >= len(partial) - 4  # what was there was kept (minus catalogs)
        assert not list(dest.glob("data/??/.*.tmp")) and not list(dest.glob("data/txn/replicate-*"))
        assert _read_all(dest, pub) == _read_all(stratum, pub)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_tampered_source_object_is_refused_and_nothing_is_published(
    origin: tuple[Path, keymod.KeySet, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stratum, keys, url = origin
    pub = tmp_path / "keys" / f"{FQRN}.pub"
    dest = tmp_path / "replica"
    _replicate(capsys, url, dest, pub)
    published = (dest / ".cvmfspublished").read_bytes()
    publish_tree(stratum, FQRN, keys, _tree(tmp_path / "src2", 2), tag="v2")
    new = sorted(o for o in _objects(stratum) - _objects(dest) if o[-1] not in "CHXMLP")
    assert new
    victim = stratum / new[0]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    code = main(["cvmfs", "replicate", url, str(dest), "--key", str(pub)])
    err = capsys.readouterr().err
    assert code != 0 and "content hash mismatch" in err and "Traceback" not in err
    assert new[0].split("/")[-1][:8] in err  # the object is named
    assert (dest / ".cvmfspublished").read_bytes() == published  # the old revision stays published
    assert not (dest / new[0]).exists()
    assert not list(dest.glob("data/??/.*.tmp")) and not (dest / ".cvmfs_is_snapshotting").exists()
