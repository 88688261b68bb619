from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.fsutil import atomic_dir, atomic_file, atomic_write, sha256_file


def test_atomic_file_vanishes_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(dest) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_and_hash(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b.txt"
    atomic_write(dest, b"abc")
    assert sha256_file(dest) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_atomic_dir_replaces_whole_or_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "tree"
    with atomic_dir(dest) as d:
        (d / "one").write_text("1")
    with pytest.raises(ValueError), atomic_dir(dest) as d:
        (d / "two").write_text("2")
        raise ValueError
    assert sorted(p.name for p in dest.iterdir()) == ["one"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]
