"""A reader (the mount) whose plain cache is on a full disk keeps serving: an object is then made in
memory, not refused with ENOSPC (pr28a finding 10)."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

from cernvm_build.cvmfs.objects import hash_bytes
from tests.support.tmpfsns import in_namespace, needs_unshare

pytestmark = needs_unshare

READ = """
import os, sys
from pathlib import Path
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.plaincache import PlainCache
from cernvm_build.cvmfs.store import ObjectStore

srv, cache, name, size = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
store = ObjectStore(LocalFetcher(srv, repo="x.test"), None, repo="x.test")
store.plain_cache = PlainCache(cache)
# the prefetcher's batch first: a full disk is that batch's failure, not an OSError out of it
assert store.fetch_ahead_many([(name, "", size, True, "file")], whole=1 << 30) == (0, 1)
fd = store.inflated_fd(name, "", size=size, compressed=True, what="file")
data = os.pread(fd, size + 1, 0)
sys.stdout.write(f"{len(data)} {data == bytes(range(256)) * (size // 256)}")
"""


BIG = """
import sys
from pathlib import Path
from cernvm_build.cvmfs import store as store_mod
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.plaincache import PlainCache

srv, cache, name, size = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
store_mod.PASS_THROUGH_MAX = size - 1  # (as a 100 MiB object is, without writing one)
store = store_mod.ObjectStore(LocalFetcher(srv, repo="x.test"), None, repo="x.test")
store.plain_cache = PlainCache(cache)
# fetched alone (larger than ``whole``), with and without its contents kept: a failure, not an OSError
got = [store.fetch_ahead_many([(name, "", size, True, "file")], whole=0, keep=k) for k in (True, False)]
sys.stdout.write(repr(got))
"""


def _object(tmp_path: Path) -> tuple[str, int]:
    data = bytes(range(256)) * 2048  # 512 kB inflated: more than the disk holds
    stored = zlib.compress(data)
    obj = tmp_path / "srv" / hash_bytes(stored).path()
    obj.parent.mkdir(parents=True)
    obj.write_bytes(stored)
    return str(hash_bytes(stored)), len(data)


def _on_full_disk(tmp_path: Path, code: str, name: str, size: int) -> str:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f"""
        mount -t tmpfs -o size=128k none {mnt} || exit 99
        {sys.executable} -P -c "$0" {tmp_path}/srv {mnt}/cache {name} {size}
    """
    done = in_namespace(script, code, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_object_too_large_to_serve_from_memory_fails_the_prefetch_alone(tmp_path: Path) -> None:
    name, size = _object(tmp_path)
    assert _on_full_disk(tmp_path, BIG, name, size) == "[(0, 1), (0, 1)]"


def test_a_full_plain_cache_disk_serves_the_object_from_memory(tmp_path: Path) -> None:
    name, size = _object(tmp_path)
    assert _on_full_disk(tmp_path, READ, name, size) == f"{size} True"
