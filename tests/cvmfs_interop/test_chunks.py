"""Chunk boundaries: the project cuts big files where the real server cuts them (same chunk objects,
so the two publishers deduplicate each other's chunks)."""

from __future__ import annotations

import random
import shlex
import sqlite3
import subprocess
import zlib
from pathlib import Path

import pytest

from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.chunking import ChunkingSettings, split_points
from cernvm_build.cvmfs.publish import create_repository, publish_tree

from .real import RealTools, locate

pytestmark = pytest.mark.integration

FQRN = "chunks.cernvm.test"
MiB = 1 << 20
CHUNKS = "SELECT offset, size, hash FROM chunks ORDER BY offset"


def _catalog(stratum: Path, name: str, tmp: Path) -> sqlite3.Connection:
    db = tmp / f"{name}.db"
    db.write_bytes(zlib.decompress((stratum / "data" / name[:2] / (name[2:] + "C")).read_bytes()))
    return sqlite3.connect(db)


def _chunks(cat: sqlite3.Connection, name: str) -> list[tuple[int, int, bytes]]:
    (p1, p2) = cat.execute("SELECT md5path_1, md5path_2 FROM catalog WHERE name = ?", (name,)).fetchone()
    q = "SELECT offset, size, hash FROM chunks WHERE md5path_1 = ? AND md5path_2 = ? ORDER BY offset"
    return [(int(o), int(s), bytes(h)) for o, s, h in cat.execute(q, (p1, p2))]


def _real_sync(tools: RealTools, work: Path, base: Path, base_hash: str, pub: Path, files: Path) -> str:
    """``cvmfs_swissknife sync`` (what ``cvmfs_server publish`` runs) of ``files`` over ``base``,
    with the server's default chunking, into a Stratum at ``work/real``; returns the new root hash.

    The tool keeps statistics in /var/spool/cvmfs/<fqrn>/: it runs in a private mount namespace with a
    tmpfs there, so nothing is written outside the test's directory."""
    real, tmp, empty = work / "real", work / "sync-tmp", work / "empty"
    for d in (real / "data" / "txn", tmp, empty):
        d.mkdir(parents=True)
    for i in range(256):
        (real / "data" / f"{i:02x}").mkdir()
    manifest = tmp / "manifest"
    cmd = [
        tools.swissknife, "sync", "-u", files, "-s", files, "-c", empty, "-t", tmp, "-b", base_hash,
        "-r", f"local,{real}/data/txn,{real}", "-w", f"file://{base}", "-o", manifest, "-N", FQRN,
        "-K", pub, "-e", "sha1", "-Z", "zlib", "-f", "overlayfs",
        "-p", "-l", str(4 * MiB), "-a", str(8 * MiB), "-h", str(16 * MiB),  # cvmfs_server's defaults
    ]  # fmt: skip
    inner = f"mount -t tmpfs none /var/spool && mkdir -p /var/spool/cvmfs/{FQRN} && exec "
    inner += " ".join(shlex.quote(str(c)) for c in cmd)
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
        capture_output=True,
        text=True,
        timeout=300,
        env=tools.env,
    )
    assert r.returncode == 0, f"cvmfs_swissknife sync failed: {r.stdout[-800:]}{r.stderr[-800:]}"
    return next(line[1:] for line in manifest.read_text().splitlines() if line.startswith("C"))


def test_big_files_are_cut_where_the_real_server_cuts_them(tmp_path: Path) -> None:
    tools = locate(tmp_path)
    rnd = random.Random(2026)
    big = rnd.randbytes(40 * MiB + 12345)
    files = tmp_path / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(big)
    (files / "shifted.bin").write_bytes(
        big[:MiB] + b"an insertion" + big[MiB:]
    )  # same chunks after the first
    (files / "text.log").write_bytes(b"".join(b"line %d of a log\n" % i for i in range(1_200_000)))  # 25 MB

    keys = keymod.generate_keys(FQRN)
    keys.save(tmp_path / "keys")
    ours = tmp_path / "ours"
    empty = create_repository(ours, FQRN, keys)
    real_root = _real_sync(tools, tmp_path, ours, empty.root_hash, tmp_path / "keys" / f"{FQRN}.pub", files)
    r = publish_tree(ours, FQRN, keys, files)  # the default chunking

    mine, theirs = _catalog(ours, r.root_hash, tmp_path), _catalog(tmp_path / "real", real_root, tmp_path)
    for name in ("big.bin", "shifted.bin", "text.log"):
        want = _chunks(theirs, name)
        assert len(want) >= 2, name
        assert _chunks(mine, name) == want, name
    assert len(_chunks(theirs, "big.bin")) >= 5  # cut by content (random data), not only at 16 MiB
    assert [s for _, s, _ in _chunks(theirs, "text.log")][0] == 16 * MiB  # regular text: the maximum
    # the cut rule alone (without storing) gives the same offsets, and the two publishers share chunks
    offsets = [o for o, _, _ in _chunks(theirs, "big.bin")][1:]
    assert split_points(big, ChunkingSettings())[:-1] == offsets
    shared = {h for _, _, h in _chunks(theirs, "big.bin")} & {h for _, _, h in _chunks(mine, "shifted.bin")}
    assert len(shared) >= len(offsets) - 1
