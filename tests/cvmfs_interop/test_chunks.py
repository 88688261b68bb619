"""Chunk boundaries: the project cuts big files where the real server cuts them (same chunk objects,
so the two publishers deduplicate each other's chunks)."""

from __future__ import annotations

import random
import sqlite3
import zlib
from pathlib import Path

import pytest

from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.chunking import ChunkingSettings, split_points
from cernvm_build.cvmfs.publish import create_repository, publish_tree

from .real import DEFAULT_CHUNKS, locate, real_sync

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
    pub = tmp_path / "keys" / f"{FQRN}.pub"
    real_root = real_sync(tools, tmp_path, FQRN, ours, empty.root_hash, pub, files, *DEFAULT_CHUNKS)
    r = publish_tree(ours, FQRN, keys, files)  # the default chunking

    mine, theirs = _catalog(ours, r.root_hash, tmp_path), _catalog(tmp_path / "real", real_root, tmp_path)
    for name in ("big.bin", "shifted.bin", "text.log"):
        want = _chunks(theirs, name)
        assert len(want) >= 2, name
        assert _chunks(mine, name) == want, name
    assert len(_chunks(theirs, "big.bin")) >= 5  # cut by content (random data), not only at 16 MiB
    assert _chunks(theirs, "text.log")[0][1] == 16 * MiB  # regular text: the maximum
    # the cut rule alone (without storing) gives the same offsets, and the two publishers share chunks
    offsets = [o for o, _, _ in _chunks(theirs, "big.bin")][1:]
    assert split_points(big, ChunkingSettings())[:-1] == offsets
    shared = {h for _, _, h in _chunks(theirs, "big.bin")} & {h for _, _, h in _chunks(mine, "shifted.bin")}
    assert len(shared) >= len(offsets) - 1
