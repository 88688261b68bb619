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


BUDGET = """
import errno, logging, os, sys
from pathlib import Path
from cernvm_build.cvmfs import store as store_mod
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.plaincache import PlainCache

srv, cache, name, other = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[5]
size = int(sys.argv[4])
store_mod.PASS_THROUGH_BUDGET = size + size // 2  # room for one object in memory, not two
store = store_mod.ObjectStore(LocalFetcher(srv, repo="x.test"), None, repo="x.test")
store.plain_cache = PlainCache(cache)
said = []


class Said(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())


logging.getLogger("cernvm_build.cvmfs.store").addHandler(Said())
held = store.inflated_fd(name, "", size=size, compressed=True, what="file")
got = []
for _ in range(2):
    try:
        os.close(store.inflated_fd(other, "", size=size, compressed=True, what="file"))
        got.append("served")
    except OSError as e:
        got.append(errno.errorcode[e.errno])
got.append(sum("memory budget" in line for line in said))  # said once
os.close(held)  # its memory given back: the other is served now
os.close(store.inflated_fd(other, "", size=size, compressed=True, what="file"))
sys.stdout.write(repr(got))
"""


NO_PROC = """
import errno, os, sys
from pathlib import Path
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.plaincache import PlainCache
from cernvm_build.cvmfs.store import ObjectStore

srv, cache, name, size = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
store = ObjectStore(LocalFetcher(srv, repo="x.test"), None, repo="x.test")
store.plain_cache = PlainCache(cache)
listdir = os.listdir
os.listdir = lambda p: os.stat("/proc/gone") if str(p).startswith("/proc") else listdir(p)
try:
    os.close(store.inflated_fd(name, "", size=size, compressed=True, what="file"))
    sys.stdout.write("served")
except OSError as e:
    sys.stdout.write(errno.errorcode[e.errno])
"""


FETCHES = """
import os, sys
from pathlib import Path
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.plaincache import PlainCache
from cernvm_build.cvmfs import store as store_mod

srv, cache, name, size = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
store = store_mod.ObjectStore(LocalFetcher(srv, repo="x.test"), None, repo="x.test")
store.plain_cache = PlainCache(cache)
# a large object's stream, a small one's kept contents, one spilled to a scratch file on its way
for keep, spill in ((None, store_mod.SPILL), ([], store_mod.SPILL), (None, 1024)):
    store_mod.SPILL = spill
    store.stats["fetched"] = 0
    fd = store._make_plain(name, "", size, True, "file", keep)
    ok = os.pread(fd, size + 1, 0) == bytes(range(256)) * (size // 256)
    os.close(fd)
    sys.stdout.write(f"{store.stats['fetched']} {ok}, ")
"""


AHEAD = """
import os, sys
from pathlib import Path
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.plaincache import PlainCache
from cernvm_build.cvmfs.store import ObjectStore

srv, cache, name, other = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[5]
size = int(sys.argv[4])
store = ObjectStore(LocalFetcher(srv, repo="x.test"), None, repo="x.test")
store.plain_cache = PlainCache(cache)
os.close(store.inflated_fd(name, "", size=size, compressed=True, what="file"))  # the disk found full
fetched = store.stats["fetched"]
# fetched alone, in a batch, one by one: nothing made ahead, no fetch, no OSError
ahead = [store.fetch_ahead_many([(other, "", size, True, "file")], whole=w) for w in (0, 1 << 30)]
store.fetch_ahead(other, "", size=size, compressed=True, what="file")
sys.stdout.write(f"{store.stats['fetched'] - fetched} {ahead}")
"""


def _object(tmp_path: Path, first: int = 0, times: int = 2048) -> tuple[str, int]:
    # 512 kB inflated by default: more than the disk holds
    data = bytes((first + i) % 256 for i in range(256)) * times
    stored = zlib.compress(data)
    obj = tmp_path / "srv" / hash_bytes(stored).path()
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(stored)
    return str(hash_bytes(stored)), len(data)


def _on_full_disk(tmp_path: Path, code: str, name: str, size: int, *more: str) -> str:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f"""
        mount -t tmpfs -o size=128k none {mnt} || exit 99
        {sys.executable} -P -c "$0" {tmp_path}/srv {mnt}/cache {name} {size} {" ".join(more)}
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


def test_a_full_disk_serves_from_memory_within_one_budget_for_all_objects_open(tmp_path: Path) -> None:
    name, size = _object(tmp_path)
    other, _ = _object(tmp_path, 1)
    assert _on_full_disk(tmp_path, BUDGET, name, size, other) == "['ENOSPC', 'ENOSPC', 1]"


def test_without_proc_the_memory_budget_is_taken_as_spent(tmp_path: Path) -> None:
    """No /proc to count the memfds alive: the read's ENOSPC of a spent budget, not listdir's ENOENT."""
    name, size = _object(tmp_path)
    assert _on_full_disk(tmp_path, NO_PROC, name, size) == "ENOSPC"


def test_an_object_unkept_on_a_full_disk_is_served_from_memory_without_a_second_fetch(tmp_path: Path) -> None:
    name, size = _object(tmp_path)
    assert _on_full_disk(tmp_path, FETCHES, name, size) == "1 True, 1 True, 1 True, "


def test_the_prefetcher_makes_nothing_ahead_once_the_cache_disk_is_known_full(tmp_path: Path) -> None:
    name, size = _object(tmp_path)
    other, _ = _object(tmp_path, 1)
    assert _on_full_disk(tmp_path, AHEAD, name, size, other) == "0 [(0, 1), (0, 1)]"


AGAIN = """
import os, sys
from pathlib import Path
from cernvm_build.cvmfs import diskfull
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.plaincache import PlainCache
from cernvm_build.cvmfs.quota import Quota
from cernvm_build.cvmfs.store import ObjectStore

srv, cache, size, names = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[4]), sys.argv[5:]
fill = cache.parent / "fill"
store = ObjectStore(LocalFetcher(srv, repo="x.test"), None, repo="x.test")
store.plain_cache = PlainCache(cache)


def full() -> None:
    fd = os.open(fill, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
    finally:
        os.close(fd)


def ahead(name):
    return store.fetch_ahead_many([(name, "", size, True, "file")], whole=1 << 30)


def until_made(name):
    # the prefetcher's calls until it makes the object again (bounded: it never might)
    for calls in range(1, 4 * diskfull.RECHECK_EVERY):
        if ahead(name) == (1, 0):
            return calls
    return None


said = []
full()
said.append(ahead(names[0]))  # found full
fetched = store.stats["fetched"]
said.append([ahead(names[1]) for _ in range(diskfull.RECHECK_EVERY)].count((0, 1)))  # still full
said.append((store.disk.checks, store.stats["fetched"] - fetched))  # one look at its room, no fetch
fill.unlink()  # the user frees space
said.append((until_made(names[1]), store.plain_full))
# a reader's object kept on the disk again clears it at once
full()
os.close(store.inflated_fd(names[2], "", size=size, compressed=True, what="file"))  # from memory
said.append(store.plain_full)
fill.unlink()
os.close(store.inflated_fd(names[3], "", size=size, compressed=True, what="file"))
said.append(store.plain_full)
# the size limit's eviction: the next prefetch looks at once
store.quota = quota = Quota(cache, 1 << 30)
quota.scan()
full()
said.append(ahead(names[4]))
quota.limit = 1
quota.scan()  # evicts the plain copies made above: room for one more
said.append((quota.evicted.files > 0, until_made(names[4])))
sys.stdout.write(repr(said))
"""


def test_the_prefetcher_makes_objects_again_once_the_full_disk_has_room(tmp_path: Path) -> None:
    """A full disk's mark cleared (it was kept for good): by a look at the disk's room after
    RECHECK_EVERY skipped objects, at once after an eviction, or by a reader's write that succeeds."""
    from cernvm_build.cvmfs.diskfull import RECHECK_EVERY

    small = [_object(tmp_path, i, 64) for i in range(5)]  # 16 KiB each: one fits the freed disk
    names = [n for n, _ in small]
    got = _on_full_disk(tmp_path, AGAIN, names[0], small[0][1], *names)
    assert got == repr(
        [(0, 1), RECHECK_EVERY, (1, 0), (RECHECK_EVERY, False), True, False, (0, 1), (True, 1)]
    ), got
