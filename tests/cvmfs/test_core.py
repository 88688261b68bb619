"""Properties the initrd and big files rely on: stdlib-only imports, spilled large objects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.cvmfs import store as store_mod
from cernvm_build.cvmfs.cache import ObjectCache
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.objects import compress, hash_bytes
from cernvm_build.cvmfs.store import ObjectStore

ROOT = Path(__file__).resolve().parents[2]


def test_reader_and_mount_import_only_the_standard_library() -> None:
    """The mount daemon runs in the initrd: the standard library only (no mfusepy: it speaks the
    kernel's FUSE protocol itself)."""
    code = (
        "import sys, json; before = set(sys.modules);"
        "import cernvm_build.cvmfs.mount, cernvm_build.cvmfs.repository, cernvm_build.cvmfs.fuse,"
        " cernvm_build.cvmfs.fuse_inodes, cernvm_build.cvmfs.serve, cernvm_build.cvmfs;"
        "new = {m.split('.')[0] for m in set(sys.modules) - before};"
        "print(json.dumps(sorted(new - set(sys.stdlib_module_names))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(json.loads(out.stdout)) == {"cernvm_build"}


def test_large_objects_are_spilled_and_read_by_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "LRU_MAX_ITEM", 1000)
    plain = bytes(range(256)) * 40  # 10240 bytes > LRU_MAX_ITEM
    data = compress(plain)
    h = hash_bytes(data)
    (tmp_path / "data" / str(h)[:2]).mkdir(parents=True)
    (tmp_path / h.path("P")).write_bytes(data)
    s = ObjectStore(LocalFetcher(tmp_path, repo="x.test"), None, repo="x.test")
    kw = {"size": len(plain), "compressed": True, "what": "chunk"}
    assert s.read(str(h), "P", offset=5000, length=300, **kw) == plain[5000:5300]  # type: ignore[arg-type]
    assert s.read(str(h), "P", offset=10200, length=300, **kw) == plain[10200:]  # type: ignore[arg-type]
    scratch = s.scratch()
    assert [p.name for p in scratch.iterdir()] == [f"{h}P"]
    s.close()
    assert not scratch.exists()


def test_a_signed_file_the_cache_holds_already_is_not_written_again(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "c", repo="x.test")
    cache.save_meta(".cvmfspublished", b"manifest 1")
    ino = (tmp_path / "c" / ".cvmfspublished").stat().st_ino
    cache.save_meta(".cvmfspublished", b"manifest 1")  # a restart on the same revision
    assert (tmp_path / "c" / ".cvmfspublished").stat().st_ino == ino
    for newer in (b"manifest 2", b"manifest 1 and more"):  # changed, or the old one a prefix of it
        cache.save_meta(".cvmfspublished", newer)
        assert cache.load_meta(".cvmfspublished") == newer
