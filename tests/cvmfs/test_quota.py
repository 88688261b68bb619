"""The cache's size limit: LRU eviction that never drops catalogs, order kept across restarts, and a
real mount that stays under its --quota-limit while reading more than it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.cvmfs.quota import CLEAN_TO, Quota
from cernvm_build.cvmfs.serve import Server

from .conftest import FQRN, Fixture


def _obj(root: Path, name: str, size: int, mtime: int) -> Path:
    p = root / "data" / name[:2] / name[2:]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * size)
    os.utime(p, (mtime, mtime))
    return p


def test_the_start_scan_also_sweeps_old_temporaries_in_one_walk(tmp_path: Path) -> None:
    """The mount's start walks the cache once: the scan with ``sweep_before`` removes a crashed
    writer's old temporary (in ``data/`` or ``plain/``), keeps a young one (a live writer's) and
    counts neither."""
    kept = _obj(tmp_path, "aa" + "1" * 38, 100, 100)
    old = tmp_path / "plain" / "bb" / ".x.1-2.tmp"
    young = tmp_path / "data" / "aa" / ".y.tmp"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"z" * 50)
    young.write_bytes(b"z" * 70)
    os.utime(old, (100, 100))
    q = Quota(tmp_path, 2000)
    q.scan(sweep_before=1000)
    assert q.total == 100 and kept.exists() and young.exists() and not old.exists()


def test_least_recently_used_go_first_and_catalogs_never(tmp_path: Path) -> None:
    cat = _obj(tmp_path, "aa" + "0" * 38 + "C", 400, 100)  # the oldest, but a catalog
    old = _obj(tmp_path, "bb" + "1" * 38, 200, 200)
    mid = _obj(tmp_path, "cc" + "2" * 38, 400, 300)
    new = _obj(tmp_path, "dd" + "3" * 38, 300, 400)
    q = Quota(tmp_path, 2000)
    assert q.scan().files == 0 and q.total == 1300
    q.used(old)  # now the most recently used
    q.limit = 1200  # over: evict down to 900 (CLEAN_TO), oldest use first, skipping the catalog
    q.used(new)
    assert cat.exists() and old.exists() and not mid.exists() and new.exists()
    assert q.total == 900 and q.evicted.files == 1
    extra = _obj(tmp_path, "ee" + "4" * 38, 400, 500)
    q.used(extra)  # 1300: old, then new go (in their order of use)
    assert not old.exists() and not new.exists() and cat.exists() and extra.exists()
    assert q.total == 800 <= 1200 * CLEAN_TO


def test_the_order_of_use_survives_a_restart(tmp_path: Path) -> None:
    a = _obj(tmp_path, "aa" + "1" * 38, 300, 100)
    b = _obj(tmp_path, "bb" + "2" * 38, 300, 200)
    q = Quota(tmp_path, 10_000)
    q.scan()
    q.used(a)  # a is touched: it is now newer than b on disk
    again = Quota(tmp_path, 400)
    assert again.scan().files == 1
    assert a.exists() and not b.exists()


def test_catalogs_alone_may_exceed_the_limit(tmp_path: Path) -> None:
    cats = [_obj(tmp_path, f"{i:02x}" + "0" * 38 + "C", 500, 100 + i) for i in range(3)]
    q = Quota(tmp_path, 100)
    assert q.scan().files == 0 and all(c.exists() for c in cats)


@pytest.mark.integration
def test_a_mount_stays_under_its_quota_limit(fx: Fixture, server: Server, tmp_path: Path) -> None:
    """Reading every file of the fixture (tens of MB) through a mount limited to 1 MB."""
    cache, mnt = tmp_path / "cache", tmp_path / "mnt"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", server.repo_url()]
    cmd += ["--public-key", str(fx.pub), "--cache", str(cache), "--quota-limit", "1", str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    read = 0
    try:
        for dirpath, _, files in os.walk(mnt):
            for f in files:
                p = Path(dirpath) / f
                if p.is_file() and not p.is_symlink():
                    read += len(p.read_bytes())
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60)
    objects = [p for p in (cache / FQRN / "data").rglob("*") if p.is_file()]
    # the fan-out directories' files (the daemon's marker files beside them come and go as it stops)
    inflated = list((cache / FQRN / "plain").glob("??/*"))
    kept = sum(p.stat().st_size for p in objects + inflated if not p.name.endswith("C"))
    assert read > 4 << 20
    assert kept <= 1 << 20, f"{kept} bytes of objects and inflated files in a cache limited to 1 MB"
    assert any(p.name.endswith("C") for p in objects), "the catalogs stay"


def test_a_quota_without_a_cache_is_a_usage_error(fx: Fixture, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--server", str(fx.root), "--quota-limit", "5"]
    r = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --quota-limit needs --cache")
