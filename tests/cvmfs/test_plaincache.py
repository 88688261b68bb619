"""The mount daemon's cache of inflated files (``plaincache.py``): what it serves is the repository's
bytes or nothing. A damaged, truncated or half-written file is never served, the size limit covers
it, and both FUSE front ends read the repository byte for byte through it, cold and warm."""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from cernvm_build.cvmfs import plaincache
from cernvm_build.cvmfs import store as store_mod
from cernvm_build.cvmfs.cache import ObjectCache
from cernvm_build.cvmfs.catalog_rows import FLAG_COMPRESSION_NONE, DirEntry
from cernvm_build.cvmfs.objects import object_path, parse_hash
from cernvm_build.cvmfs.plaincache import CLEAN, OPEN, STALE_TMP_S, TRAILER, PlainCache
from cernvm_build.cvmfs.quota import Quota
from cernvm_build.cvmfs.repository import Repository, open_repository
from cernvm_build.cvmfs.serve import Server
from cernvm_build.errors import CvmfsError
from tests.support import run_python
from tests.support.killed import killed_in_atomic_file, run_killed

from .conftest import FQRN, FUSE_LIBS, Fixture, fuse_env

FILE = "/etc/redhat-release"
BIG = "/opt/sw/big-data.txt"  # three chunks: 16 MiB, 16 MiB, 3.5 MiB


def _open(source: str | Path, fx: Fixture, cache: Path) -> Repository:
    """A reader as the mount daemon has it: object cache plus the plain cache."""
    repo = open_repository(source, fqrn=FQRN, public_keys=[fx.pub], cache_dir=cache, retries=0, timeout=5)
    assert repo.store.cache is not None
    repo.store.plain_cache = PlainCache(repo.store.cache.root)
    return repo


def _plain_file(repo: Repository, path: str) -> Path:
    entry = repo.stat(path)
    assert repo.store.plain_cache is not None and entry.content_hash
    return repo.store.plain_cache.path(entry.content_hash, "")


def test_a_read_is_made_once_then_served_from_the_inflated_copy(fx: Fixture, tmp_path: Path) -> None:
    want = (fx.listing(2)[FILE]["sha1"], fx.listing(2)[FILE]["size"])
    with _open(fx.repo, fx, tmp_path / "cache") as repo:
        data = repo.read(FILE)
        fetched = repo.store.stats["fetched"]
        assert repo.read(FILE, 3, 10) == data[3:13]
        assert repo.store.stats["fetched"] == fetched  # the second read fetched nothing
        plain = _plain_file(repo, FILE)
    assert len(data) == want[1]
    assert plain.read_bytes()[:-TRAILER] == data
    # the objects stay a Stratum: the file's compressed object was not kept a second time
    assert not (tmp_path / "cache" / FQRN / "data" / plain.parent.name / plain.name).exists()


def test_readers_of_one_cold_file_at_once_fetch_it_once(fx: Fixture, server: Server, tmp_path: Path) -> None:
    """libfuse's workers and the prefetcher ask for the same object at once: one fetch, and every
    reader gets the file (a waiter looks again only when a make ended meanwhile, store._once)."""
    with _open(fx.repo, fx, tmp_path / "local") as repo:
        want = repo.read(FILE)
    with _open(server.repo_url(), fx, tmp_path / "cache") as repo:
        entry = repo.stat(FILE)
        fetched = repo.store.stats["fetched"]  # the catalogs
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: repo.read(entry), range(16)))
        assert repo.store.stats["fetched"] == fetched + 1
    assert got == [want] * 16


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "piece"])  # read_whole, or by descriptor
@pytest.mark.parametrize(
    "damage", ["flipped byte", "truncated", "trailer missing", "longer", "unknown magic", "old CRC wrong"]
)
def test_a_damaged_inflated_file_is_made_again(fx: Fixture, tmp_path: Path, damage: str, whole: bool) -> None:
    cache = tmp_path / "cache"
    with _open(fx.repo, fx, cache) as repo:
        data = repo.read(FILE)
        plain = _plain_file(repo, FILE)
    raw = bytearray(plain.read_bytes())
    if damage == "flipped byte":
        raw[5] ^= 0x20  # same size: only the checksum tells
    elif damage == "unknown magic":
        raw[-4:] = b"CVP9"
    elif damage == "old CRC wrong":  # an earlier version's trailer whose CRC-32 does not match
        raw[-TRAILER:] = struct.pack(">I4s", zlib.crc32(data) ^ 1, plaincache.MAGIC_CRC)
    elif damage == "truncated":
        del raw[len(raw) // 2 :]
    elif damage == "trailer missing":
        del raw[-TRAILER:]
    else:
        raw[-TRAILER:-TRAILER] = b"appended"
    plain.write_bytes(bytes(raw))
    with _open(fx.repo, fx, cache) as repo:  # a new process: every file is checked on first use
        assert (repo.read(FILE) if whole else repo.read(FILE, 3, 10)) == (data if whole else data[3:13])
        assert repo.store.stats["fetched"] == 1  # fetched again, not served
    assert plain.read_bytes()[:-TRAILER] == data


def test_the_trailer_is_the_zlib_streams_adler32_and_an_old_crc_trailer_still_serves(
    fx: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file made from a compressed object ends with the Adler-32 zlib checked while inflating it
    (the content is not summed a second time on its way to the disk); a file an earlier version
    wrote, with a CRC-32 trailer, is served as it is when its CRC matches."""
    summed = []
    adler32, crc32 = zlib.adler32, zlib.crc32
    monkeypatch.setattr(zlib, "adler32", lambda b, v=1: summed.append(len(b)) or adler32(b, v))
    monkeypatch.setattr(zlib, "crc32", lambda b, v=0: summed.append(len(b)) or crc32(b, v))
    cache = tmp_path / "cache"
    with _open(fx.repo, fx, cache) as repo:
        entry = repo.stat(FILE)
        assert entry.size > 0 and not entry.flags & FLAG_COMPRESSION_NONE
        data = repo.read(entry)
        plain = _plain_file(repo, FILE)
    assert summed == []  # neither the store nor the cache summed the content
    monkeypatch.undo()
    assert plain.read_bytes() == data + struct.pack(">I4s", zlib.adler32(data), b"CVP2")
    plain.write_bytes(data + struct.pack(">I4s", zlib.crc32(data), plaincache.MAGIC_CRC))
    for whole in (True, False):
        with _open(fx.repo, fx, cache) as repo:  # a new process: checked on first use
            assert (repo.read(FILE) if whole else repo.read(FILE, 3, 10)) == (data if whole else data[3:13])
            assert repo.store.stats["fetched"] == 0  # the old file was served, not made again
            assert repo.store.plain_cache is not None and repo.store.plain_cache.checks == 1
    assert plain.read_bytes()[-4:] == plaincache.MAGIC_CRC  # left as it was


def test_a_damaged_inflated_file_with_the_server_gone_is_one_error(
    fx: Fixture, server: Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with _open(server.repo_url(), fx, cache) as repo:
        repo.read(FILE)
        plain = _plain_file(repo, FILE)
    raw = bytearray(plain.read_bytes())
    raw[0] ^= 1
    plain.write_bytes(bytes(raw))
    server.close()
    with _open(server.repo_url(), fx, cache) as repo, pytest.raises(CvmfsError) as err:  # offline
        repo.read(FILE)
    text = str(err.value)
    assert FQRN in text and "\n" not in text and "redhat-release" in text
    assert not plain.exists()  # the bad copy was not kept either


def test_a_writer_killed_mid_write_leaves_nothing_trusted(fx: Fixture, tmp_path: Path) -> None:
    """A process killed while it writes an inflated file (the daemon's crash, a power cut before
    the rename) leaves only a temporary file: never looked up, swept once stale."""
    root = tmp_path / "cache" / FQRN
    name = "ab" + "c" * 38
    code = (
        "import sys, time; from pathlib import Path; from cernvm_build.cvmfs.plaincache import PlainCache\n"
        "def blocks():\n"
        "    yield b'x' * 65536\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        "    yield b'y'\n"
        f"PlainCache(Path(sys.argv[1])).put({name!r}, '', blocks(), 65537)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    cache = PlainCache(root)
    left = [p for p in cache.dir.rglob("*") if p.is_file()]
    assert len(left) == 1 and left[0].name.startswith(".") and left[0].name.endswith(".tmp")
    assert not cache.path(name, "").exists() and cache.open(name, "", 65537) is None
    assert cache.sweep() == 0  # young: it could be a live writer's
    old = time.time() - STALE_TMP_S - 60
    os.utime(left[0], (old, old))
    assert cache.sweep() == 1 and not left[0].exists()


def test_hold_sweeps_old_temporaries_in_the_same_listing(tmp_path: Path) -> None:
    """The mount's start without a size limit lists the plain cache once (``hold(sweep_before=)``):
    a crashed writer's old temporary is removed there, a young one (a live writer's) is left, and
    neither is held."""
    cache = PlainCache(tmp_path / "cache")
    name = "ab" + "c" * 38
    cache.put(name, "", iter((b"data",)), 4)
    stale, young = cache.dir / "ab" / ".x.tmp", cache.dir / "cd" / ".y.tmp"
    for p in (stale, young):
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"torn")
    old = time.time() - STALE_TMP_S - 60
    os.utime(stale, (old, old))
    held = cache.hold(sweep_before=time.time() - STALE_TMP_S)
    assert not stale.exists() and young.exists()
    assert set(held) == {name}


def test_a_symlink_in_the_cache_is_never_followed(tmp_path: Path) -> None:
    """audit13c finding 9: ``XX/rest`` as a symbolic link to a host file with a valid trailer is a
    miss (removed), through ``open`` and ``read_whole``; ``XX`` as a symbolic link to a folder
    elsewhere stops ``hold`` (the mount's start) with one error naming it, before any object is
    read from or written to where it points."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = b"SECRT\n"
    (outside / "hostfile").write_bytes(secret + struct.pack(">I4s", zlib.adler32(secret, 1), b"CVP2"))
    cache = PlainCache(tmp_path / "cache")
    names = ["ab" + "c" * 38, "ab" + "d" * 38]
    for n in names:
        os.close(cache.put(n, "", [b"hello\n"], 6))
        os.unlink(cache.where(n, ""))
        os.symlink(outside / "hostfile", cache.where(n, ""))
    cache = PlainCache(tmp_path / "cache")  # nothing verified yet
    assert cache.open(names[0], "", 6) is None
    assert cache.read_whole(names[1], "", 6) is None
    assert not [n for n in names if os.path.lexists(cache.where(n, ""))]  # the links removed
    assert (outside / "hostfile").read_bytes()[:6] == secret  # and not what they pointed to
    cache.hold()  # no symlinked fan-out directory: fine
    (cache.dir / "ef").rmdir()
    (cache.dir / "ef").symlink_to(outside)
    with pytest.raises(CvmfsError, match=r"ef is a symbolic link"):
        cache.hold()
    with pytest.raises(CvmfsError, match=r"ef is a symbolic link"):  # a new start: before any write
        PlainCache(tmp_path / "cache")
    assert sorted(os.listdir(outside)) == ["hostfile"]


@pytest.mark.parametrize("which", ["plain", "objects"])
def test_a_stock_taken_in_the_background_is_no_miss_until_filled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """The mount's start lists both caches beside its start (``hold(background=True)``): until the
    listing has ended a file not yet held is still found on the disk (never fetched again), a file
    written meanwhile stays held, and once filled a name not held is a miss as before."""
    root = tmp_path / FQRN
    there, made, absent = "ab" + "c" * 38, "cd" + "e" * 38, "ef" + "0" * 38
    cache = PlainCache(root)
    os.close(cache.put(there, "", [b"hello\n"], 6))
    release = threading.Event()
    real = os.listdir

    def held_back(path: str) -> list[str]:
        if len(os.path.basename(path)) == 2:  # a fan-out directory: the stock's listing
            assert release.wait(60)
        return real(path)

    monkeypatch.setattr(os, "listdir", held_back)
    if which == "plain":
        cache = PlainCache(root)
        held = cache.hold(background=True)
        assert not held.filled
        assert cache.has(there, "") and cache.read_whole(there, "", 6) == b"hello\n"  # no miss
        assert not cache.has(absent, "")  # looked up on the disk
        os.close(cache.put(made, "", [b"new\n"], 4))
    else:
        objects = ObjectCache(root, repo=FQRN)
        (root / "data" / there[:2]).mkdir(parents=True, exist_ok=True)
        (root / "data" / there[:2] / there[2:]).write_bytes(b"x")
        held = objects.hold(background=True)
        h = parse_hash(there)
        assert not held.filled and not objects.missing(h, "")  # there, though not held yet
        assert objects.missing(parse_hash(absent), "")  # looked up on the disk: not there
        held.add(made)  # as ``put`` tells it
    release.set()
    for _ in range(600):
        if held.filled:
            break
        time.sleep(0.05)
    assert held.filled and {there, made} <= held and absent not in held
    if which == "plain":
        assert cache.has(made, "") and not cache.has(absent, "")
    else:
        assert objects.missing(parse_hash(absent), "") and not objects.missing(parse_hash(there), "")


def test_a_temporary_the_background_listing_cannot_remove_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rv24: the mount's listing thread sweeps stale temporaries; one it may not remove (a read-only
    or someone else's cache) raised in the thread: a traceback in the daemon's log and a stock never
    filled. The sweep is best effort there: the temporary is left, the listing goes on."""
    cache = PlainCache(tmp_path / "cache")
    name = "ab" + "c" * 38
    os.close(cache.put(name, "", [b"hello\n"], 6))
    stale = cache.dir / "ab" / ".old.tmp"
    stale.write_bytes(b"torn")
    os.utime(stale, (1, 1))
    real = os.unlink

    def refused(path: str, *a: object, **k: object) -> None:
        if str(path).endswith(".tmp"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", refused)
    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda a: raised.append(a.exc_value))
    held = cache.hold(sweep_before=time.time(), background=True)
    for t in [t for t in threading.enumerate() if t.name == "holdings"]:
        t.join(60)
    assert raised == [] and held.filled and name in held and stale.exists()
    held = cache.hold(sweep_before=time.time())  # the same in the caller's thread
    assert held.filled and name in held and stale.exists()


def test_a_symlinked_fan_out_is_refused_before_a_background_listing_starts(tmp_path: Path) -> None:
    """The symbolic-link check of the ``XX`` directories is not left to the listing's thread."""
    outside = tmp_path / "outside"
    outside.mkdir()
    cache = PlainCache(tmp_path / "cache")
    (cache.dir / "ef").rmdir()
    (cache.dir / "ef").symlink_to(outside)
    with pytest.raises(CvmfsError, match="ef"):
        cache.hold(background=True)


def test_a_fifo_in_the_cache_is_a_miss_never_a_hang(tmp_path: Path) -> None:
    """audit13d finding 3: an object that is a FIFO (a seed can ship one) is removed and a miss,
    through ``open`` and ``read_whole``, instead of an open waiting for a writer forever. Run in a
    child with a deadline, so a regression fails instead of hanging the suite."""
    code = f"""
import os
from pathlib import Path
from cernvm_build.cvmfs.plaincache import PlainCache
cache = PlainCache(Path({str(tmp_path / "cache")!r}))
names = ["ab" + "c" * 38, "ab" + "d" * 38]
for n in names:
    os.close(cache.put(n, "", [b"hello\\n"], 6))
    os.unlink(cache.where(n, ""))
    os.mkfifo(cache.where(n, ""))
cache = PlainCache(Path({str(tmp_path / "cache")!r}))
print(cache.open(names[0], "", 6), cache.read_whole(names[1], "", 6))
print([n for n in names if os.path.lexists(cache.where(n, ""))])
"""
    done = run_python(code, blocked="opening a FIFO in the cache blocked")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["None None", "[]"]


@pytest.mark.parametrize("what", ["fifo", "folder"])
def test_a_clean_marker_that_is_no_regular_file_is_no_marker_never_a_hang(tmp_path: Path, what: str) -> None:
    """pr17b finding 6: ``plain/.clean`` as a FIFO blocked the mount daemon's start for ever (a boot
    that never ended). Now it is read without blocking, taken as no marker, and a FIFO removed."""
    code = f"""
import os
from pathlib import Path
from cernvm_build.cvmfs.plaincache import PlainCache, CLEAN
top = Path({str(tmp_path / "cache")!r})
PlainCache(top)
marker = top / "plain" / CLEAN
os.mkfifo(marker) if {what!r} == "fifo" else marker.mkdir()
cache = PlainCache(top)
print(cache.take_clean(), os.path.lexists(marker) and not marker.is_dir())
"""
    done = run_python(code, blocked="a FIFO as the clean marker blocked")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"


@pytest.mark.parametrize("which", ["plain", "repository"])
def test_a_symlinked_cache_folder_is_refused_in_one_line(tmp_path: Path, which: str) -> None:
    """audit13d finding 4: ``plain`` or the repository's folder as a symbolic link to a folder
    elsewhere stops the cache's start with one error naming it, before anything is written there."""
    outside = tmp_path / "outside"
    top = tmp_path / "cache" / FQRN
    PlainCache(top)
    link = top / "plain" if which == "plain" else top
    link.rename(outside)
    link.symlink_to(outside)
    before = sorted(p.name for p in outside.rglob("*"))
    with pytest.raises(CvmfsError, match=r"is a symbolic link, not a directory") as e:
        PlainCache(top)
    assert str(link) in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in outside.rglob("*")) == before


def test_a_symlinked_repository_folder_gets_no_plain_folder_where_it_points(tmp_path: Path) -> None:
    """r15 finding 5: refused before ``plain/`` is made (in an empty folder it points to)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    top = tmp_path / "cache" / FQRN
    top.parent.mkdir()
    top.symlink_to(outside)
    with pytest.raises(CvmfsError, match=r"is a symbolic link, not a directory"):
        PlainCache(top)
    assert os.listdir(outside) == []


def test_a_symlink_in_a_cache_the_reader_cannot_write_is_still_a_miss(tmp_path: Path) -> None:
    """r15 finding 6: the symlink's removal fails (an immutable folder: EPERM, even for root, as
    EACCES or EROFS would for another reader); the read is still the documented miss."""
    from cernvm_build.cvmfs.plaincache import _open_to_read

    folder = tmp_path / "ab"
    folder.mkdir()
    (tmp_path / "target").write_bytes(b"x")
    os.symlink(tmp_path / "target", folder / "link")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(FileNotFoundError, match="a symbolic link in the cache"):
            _open_to_read(str(folder / "link"))
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert (folder / "link").is_symlink()


def test_a_start_makes_only_the_missing_fan_out_directories(tmp_path: Path) -> None:
    """Every start of the mount daemon opens the cache: the fan-out directories an earlier start made
    are left alone (no refused mkdir for each: 0.07 s of the initrd's CPU under TCG), one gone is
    made again, and what the others hold stays."""
    cache = PlainCache(tmp_path)
    name = "ab" + "c" * 38
    cache.put(name, "", [b"data"], 4)
    (cache.dir / "ef").rmdir()
    made: list[str] = []
    real_mkdir = os.mkdir
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "mkdir", lambda p, *a, **k: made.append(os.path.basename(p)) or real_mkdir(p, *a, **k))
        cache = PlainCache(tmp_path)
    assert [m for m in made if len(m) == 2] == ["ef"] and (cache.dir / "ef").is_dir()
    assert {f"{i:02x}" for i in range(256)} <= set(os.listdir(cache.dir))
    assert cache.path(name, "").read_bytes()[:4] == b"data"


def test_reads_leave_the_access_time_alone(tmp_path: Path) -> None:
    """Serving a cached file (a descriptor, a whole read, the first-use check) does not write its
    access time: under relatime each first read since the file was written dirtied its inode (a
    seeded first boot: ~1,400 inode writes on the instance's disk). The control: a plain read of
    the same file does update it on this file system."""
    cache = PlainCache(tmp_path)
    names = ["a1" + "0" * 38, "b2" + "0" * 38]
    for n in names:
        os.close(cache.put(n, "", [b"x" * 1000], 1000))
    past = time.time_ns() - 3 * 86400 * 10**9  # older than relatime's day: any read would renew it

    def age(n: str) -> str:
        p = cache.where(n, "")
        os.utime(p, ns=(past, os.stat(p).st_mtime_ns))
        return p

    cache = PlainCache(tmp_path)  # a new process: nothing verified, the first use checks the content
    p = age(names[0])
    fd = cache.open(names[0], "", 1000)
    assert fd is not None and cache.checks == 1
    try:
        assert os.pread(fd, 1000, 0) == b"x" * 1000
    finally:
        os.close(fd)
    assert os.stat(p).st_atime_ns == past
    q = age(names[1])
    assert cache.read_whole(names[1], "", 1000) == b"x" * 1000 and os.stat(q).st_atime_ns == past
    with open(q, "rb") as f:  # the control
        f.read()
    if os.stat(q).st_atime_ns == past:
        pytest.skip("this file system does not update access times (noatime)")


@pytest.mark.skipif(not hasattr(os, "O_NOATIME"), reason="no O_NOATIME on this system")
def test_a_kernel_that_refuses_o_noatime_still_gets_its_files_written_and_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_NOATIME needs the file's owner or CAP_FOWNER, checked on a file just created too (a cache on
    NFS that squashes the owner): then the cache is written and read without it, as before, and the
    file the refused create made is not left behind."""
    real_open = os.open

    def refusing(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_NOATIME:
            if flags & os.O_CREAT:  # as the kernel does: the file is made, then the open refused
                os.close(real_open(path, flags & ~os.O_NOATIME, mode))
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refusing)
    cache = PlainCache(tmp_path)
    name = "cd" + "1" * 38
    fd = cache.put(name, "", [b"abc", b"def"], 6)
    try:
        assert os.pread(fd, 6, 0) == b"abcdef"
    finally:
        os.close(fd)
    cache = PlainCache(tmp_path)  # a new process: the first use checks the content
    assert cache.read_whole(name, "", 6) == b"abcdef"
    fd = cache.open(name, "", 6)
    assert fd is not None
    os.close(fd)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_the_size_limit_counts_and_evicts_inflated_files(tmp_path: Path) -> None:
    def put(sub: str, name: str, size: int, mtime: int) -> Path:
        p = tmp_path / sub / name[:2] / name[2:]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * size)
        os.utime(p, (mtime, mtime))
        return p

    obj = put("data", "aa" + "1" * 38, 300, 100)
    inflated_old = put("plain", "bb" + "2" * 38, 500, 200)
    cat = put("data", "cc" + "3" * 38 + "C", 400, 50)
    inflated_new = put("plain", "dd" + "4" * 38 + "P", 500, 300)
    q = Quota(tmp_path, 10_000)
    q.scan()
    assert q.total == 1700
    q.limit = 1300  # evict to 975: the object and the older inflated file go, the catalog stays
    q.used(inflated_new)
    assert not obj.exists() and not inflated_old.exists() and cat.exists() and inflated_new.exists()


def _open_inflated(source: str | Path, fx: Fixture, cache: Path) -> Repository:
    """Opened as the mount daemon opens it: catalogs too are kept inflated in the plain cache."""
    return open_repository(
        source, fqrn=FQRN, public_keys=[fx.pub], cache_dir=cache, retries=0, timeout=5, inflated=True
    )


def test_a_restart_opens_the_kept_inflated_catalogs_without_their_objects(
    fx: Fixture, server: Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with _open_inflated(server.repo_url(), fx, cache) as repo:
        names = [e.name for e in repo.listdir("/")]
        databases = [(repo.root_hash, "C")]
        if repo.manifest is not None and repo.manifest.history_hash:
            databases.append((repo.manifest.history_hash, "H"))
    root = cache / FQRN
    plain = PlainCache(root)
    for name, suffix in databases:
        stored = root / object_path(name, suffix)
        assert plain.path(name, suffix).read_bytes()[:-TRAILER] == zlib.decompress(stored.read_bytes())
        stored.unlink()
    # the compressed objects gone, the server down: only the kept copies can open the revision
    server.close()
    with _open_inflated(server.repo_url(), fx, cache) as repo:
        assert repo.offline and [e.name for e in repo.listdir("/")] == names
        assert repo.store.stats["fetched"] == 0


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "trailer missing"])
def test_a_damaged_kept_catalog_is_made_again(fx: Fixture, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    with _open_inflated(fx.repo, fx, cache) as repo:
        names = [e.name for e in repo.listdir("/")]
        kept = PlainCache(cache / FQRN).path(repo.root_hash, "C")
    good = kept.read_bytes()
    raw = bytearray(good)
    if damage == "flipped byte":
        raw[len(raw) // 2] ^= 0x20  # inside a page, same size: only the CRC tells
    elif damage == "truncated":
        del raw[len(raw) // 2 :]
    else:
        del raw[-TRAILER:]
    kept.write_bytes(bytes(raw))
    with _open_inflated(fx.repo, fx, cache) as repo:  # a new process: checked on first use
        assert [e.name for e in repo.listdir("/")] == names
        assert repo.store.stats["fetched"] == 0  # made again from the verified object in data/
    assert kept.read_bytes() == good


def test_kept_catalogs_count_in_the_size_limit_and_are_never_evicted(fx: Fixture, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with _open_inflated(fx.repo, fx, cache) as repo:
        repo.read(FILE)
        kept = PlainCache(cache / FQRN).path(repo.root_hash, "C")
        content = _plain_file(repo, FILE)
    q = Quota(cache / FQRN, 1)
    q.scan()
    assert kept.exists() and not content.exists()
    assert q.total >= kept.stat().st_size


def test_a_database_whose_header_hides_its_size_is_not_kept(
    fx: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite would read the trailer of such a file as part of the database: a scratch file instead."""
    with _open_inflated(fx.repo, fx, tmp_path / "cache") as repo:
        kept = PlainCache(tmp_path / "cache" / FQRN).path(repo.root_hash, "C")
    db = kept.read_bytes()[:-TRAILER]
    assert store_mod.sqlite_states_its_size(db[:100], len(db))
    assert not store_mod.sqlite_states_its_size(db[:100], len(db) + TRAILER)
    stale = db[:24] + bytes(b ^ 1 for b in db[24:28]) + db[28:100]  # change counter != valid-for
    assert not store_mod.sqlite_states_its_size(stale, len(db))
    monkeypatch.setattr(store_mod, "sqlite_states_its_size", lambda header, length: False)
    with _open_inflated(fx.repo, fx, tmp_path / "other") as repo:
        names = [e.name for e in repo.listdir("/")]
        assert not PlainCache(tmp_path / "other" / FQRN).path(repo.root_hash, "C").exists()
    assert names


def _wait_for(path: Path) -> None:
    """The unmounted daemon writes its clean-stop marker as it ends (the unmount returns first)."""
    for _ in range(600):
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def _flip(path: str) -> None:
    raw = bytearray(Path(path).read_bytes())
    raw[0] ^= 0x20  # same size: only the CRC tells
    with open(path, "r+b") as f:
        f.write(raw)


@pytest.fixture
def short_margin(monkeypatch: pytest.MonkeyPatch) -> int:
    """The clean mark's margin for the kernel's coarse ctime clock, cut to 20 ms: a test waits past
    it instead of a second."""
    monkeypatch.setattr(plaincache, "CLEAN_MARGIN_NS", 20_000_000)
    return 20_000_000


def test_taking_a_clean_stop_flushes_beside_the_start_and_before_the_first_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, short_margin: int
) -> None:
    """A restart after a clean stop (every reboot) takes the marker away with one rename (OPEN then
    starts with the chain's SINCE, what the shutdown program reads) and returns without waiting for
    the directory's flush (a host flush under qemu, on the mount's critical path): one flush, in the
    background, and no file is renamed into place before it has ended (a crash of this run must not
    leave a marker that vouches for what it writes)."""
    first = PlainCache(tmp_path / FQRN)
    first.take_clean()
    first.mark_clean(sync=False)  # vouches until the margin from now
    since = first._since
    time.sleep(2 * short_margin / 1e9)
    release = threading.Event()
    synced: list[int] = []
    real = os.fsync

    def held_back(fd: int) -> None:
        assert release.wait(60)
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", held_back)
    again = PlainCache(tmp_path / FQRN)
    assert again.take_clean() and not synced  # returned while the flush is held back
    assert not (again.dir / CLEAN).exists()
    assert (again.dir / OPEN).read_text().split()[0] == str(since)
    name = "a1" + "0" * 38
    wrote: list[int] = []
    writer = threading.Thread(target=lambda: wrote.append(again.put(name, "", [b"x" * 10], 10)))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and not wrote and not os.path.exists(again.where(name, ""))
    release.set()
    writer.join(60)
    assert wrote and os.path.exists(again.where(name, "")) and len(synced) == 1
    os.close(wrote[0])


def test_a_daemon_killed_before_the_flush_ends_leaves_no_marker_and_wrote_nothing(
    tmp_path: Path, short_margin: int
) -> None:
    """The window ``take_clean`` opens: killed after it returned, while the flush of the marker's
    removal still runs and a writer waits for it. The next start finds no marker (every file is
    checked on first use) and the waiting write never reached its name."""
    root = tmp_path / FQRN
    first = PlainCache(root)
    first.take_clean()
    first.mark_clean(sync=False)
    time.sleep(2 * short_margin / 1e9)
    name = "a1" + "0" * 38
    run_killed(
        "import os, signal, sys, threading, time\n"
        "from pathlib import Path\n"
        "from cernvm_build.cvmfs.plaincache import PlainCache\n"
        "os.fsync = lambda fd: time.sleep(30)  # the flush does not end before the kill\n"
        "cache = PlainCache(Path(sys.argv[1]))\n"
        "assert cache.take_clean()\n"
        "threading.Thread(target=cache.put, args=(sys.argv[2], '', [b'x' * 10], 10), daemon=True).start()\n"
        "time.sleep(0.3)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n",
        root,
        name,
    )
    after = PlainCache(root)
    assert not after.take_clean()
    assert not os.path.exists(after.where(name, ""))


def test_a_daemon_killed_while_it_writes_a_marker_leaves_no_temporary_for_ever(tmp_path: Path) -> None:
    """A daemon killed while it writes ``.open`` (``take_clean``) or ``.clean`` (``mark_clean``) left
    its temporary in ``plain/``, where no fan-out walk (``sweep``, the size limit's scan) looks: the
    next daemon's start removes a dead process's, and keeps a live writer's."""
    root = tmp_path / FQRN
    plain = PlainCache(root)
    killed_in_atomic_file(plain.dir / OPEN, b"1")
    killed_in_atomic_file(plain.dir / CLEAN, b"1 2")
    live = plain.dir / f".{CLEAN}.{os.getpid()}.x.tmp"  # this process's: still being written
    live.write_bytes(b"")
    plain.take_clean()
    plain._settle()
    plain.mark_clean(sync=False)
    assert sorted(p.name for p in plain.dir.iterdir() if p.name.endswith(".tmp")) == [live.name]


def test_a_clean_stop_flushes_the_directory_once_after_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's clean stop, which the shutdown waits for: the file system's sync, then the
    marker renamed into place and OPEN removed, kept by one flush of the directory (the marker's
    own bytes need none: torn, it is no interval or an earlier one)."""
    cache = PlainCache(tmp_path / FQRN)
    cache.take_clean()
    cache._settle()
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    cache.mark_clean()
    assert len(synced) == 1
    assert (cache.dir / CLEAN).exists() and not (cache.dir / OPEN).exists()


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "piece"])
def test_after_a_clean_stop_files_left_are_not_crc_checked(
    tmp_path: Path, whole: bool, short_margin: int
) -> None:
    """The marker of a clean stop primes the verified set: what was there is served without a CRC
    check (counted), the marker is gone at once (a crash of this run leaves none), and a file
    changed after the stop is checked as ever."""
    root = tmp_path / FQRN
    names = ["a1" + "0" * 38, "b2" + "0" * 38]
    first = PlainCache(root)
    assert not first.take_clean() and (first.dir / OPEN).exists()  # a fresh cache: the chain starts
    time.sleep(0.05)  # ctime's coarse clock may lag the chain's start by a tick
    for n in names:
        os.close(first.put(n, "", [b"x" * 1000], 1000))
    time.sleep(2 * short_margin / 1e9)  # the stop comes later than the margin after the writes
    first.mark_clean()
    marker = first.dir / CLEAN
    assert marker.exists() and not (first.dir / OPEN).exists()
    time.sleep(0.05)  # past the kernel's timestamp tick
    _flip(first.where(names[1], ""))  # changed after the stop

    def use(cache: PlainCache, n: str) -> bool:
        if whole:
            return cache.read_whole(n, "", 1000) is not None
        fd = cache.open(n, "", 1000)
        if fd is not None:
            os.close(fd)
        return fd is not None

    cache = PlainCache(root)
    assert cache.take_clean() and not marker.exists() and (cache.dir / OPEN).exists()
    assert use(cache, names[0]) and cache.checks == 0  # trusted
    assert not use(cache, names[1]) and cache.checks == 1  # changed after: checked, and bad
    assert not os.path.exists(cache.where(names[1], ""))


def test_without_the_marker_every_file_is_checked(tmp_path: Path) -> None:
    """A crash (or an older cache): no marker, the CRC is checked on first use; a run that took a
    marker and then crashed leaves none either."""
    root = tmp_path / FQRN
    name = "a1" + "0" * 38
    first = PlainCache(root)
    first.take_clean()
    os.close(first.put(name, "", [b"x" * 1000], 1000))
    first.mark_clean()
    second = PlainCache(root)
    assert second.take_clean()
    del second  # crashed: never marked
    third = PlainCache(root)
    assert not third.take_clean()
    assert third.read_whole(name, "", 1000) == b"x" * 1000 and third.checks == 1
    _flip(third.where(name, ""))
    fourth = PlainCache(root)
    assert fourth.read_whole(name, "", 1000) is None and fourth.checks == 1  # detected, removed


@pytest.mark.parametrize(
    "text",
    [b"\xff garbage", b"1700000000000000000\n", b"2 1\n", b"1 99999999999999999999\n"],
    ids=["garbage", "older-form", "backwards", "future"],
)
def test_a_marker_that_is_not_a_past_interval_trusts_nothing(tmp_path: Path, text: bytes) -> None:
    """Garbage, the single time of an older form, an interval that ends before it begins, and one
    that ends in the future (a clock stepped back, a hand-written value) trust nothing."""
    root = tmp_path / FQRN
    name = "a1" + "0" * 38
    os.close(PlainCache(root).put(name, "", [b"x" * 1000], 1000))
    (root / "plain" / CLEAN).write_bytes(text)
    cache = PlainCache(root)
    assert not cache.take_clean() and not (root / "plain" / CLEAN).exists()
    assert cache.read_whole(name, "", 1000) is not None and cache.checks == 1


def test_a_file_left_by_a_crash_is_checked_after_later_clean_stops(tmp_path: Path, short_margin: int) -> None:
    """A crashed run leaves a file no later run happens to read; a run after the crash that stops
    cleanly vouches only for what it wrote itself (its chain starts at its start): the file from
    before it is still checked, and a flipped byte caught, however many clean stops follow."""
    root = tmp_path / FQRN
    torn, fresh = "a1" + "0" * 38, "b2" + "0" * 38
    crashed = PlainCache(root)
    crashed.take_clean()
    os.close(crashed.put(torn, "", [b"x" * 1000], 1000))
    _flip(crashed.where(torn, ""))  # torn by the crash: never marked clean
    del crashed
    time.sleep(0.05)  # past the kernel's timestamp tick
    for _ in range(2):  # two clean runs that never read it
        run = PlainCache(root)
        run.take_clean()
        time.sleep(0.05)  # ctime's coarse clock may lag the chain's start by a tick
        if not os.path.exists(run.where(fresh, "")):
            os.close(run.put(fresh, "", [b"y" * 1000], 1000))
        time.sleep(2 * short_margin / 1e9)
        run.mark_clean()
    last = PlainCache(root)
    assert last.take_clean()
    assert last.read_whole(fresh, "", 1000) == b"y" * 1000 and last.checks == 0  # its chain's: trusted
    assert last.read_whole(torn, "", 1000) is None and last.checks == 1  # from before: checked, caught


def test_a_cache_never_taken_is_not_marked(tmp_path: Path) -> None:
    """mark_clean vouches only for a chain it knows the start of (take_clean's, or a seed's own)."""
    cache = PlainCache(tmp_path / FQRN)
    cache.mark_clean()
    assert not (cache.dir / CLEAN).exists()
    cache.mark_clean(sync=False, since=time.time_ns())
    assert (cache.dir / CLEAN).exists()


def _mount(fx: Fixture, server: Server, mnt: Path, cache: Path, lib: str) -> str:
    """Mount as the initrd does (a daemon); what it said on stderr."""
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", server.repo_url()]
    cmd += ["--public-key", str(fx.pub), "--cache", str(cache), str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=fuse_env(lib))
    assert r.returncode == 0, r.stderr
    return r.stderr


@pytest.mark.parametrize("lib", sorted(FUSE_LIBS))
def test_both_front_ends_read_the_repository_byte_for_byte(
    fx: Fixture, server: Server, mnt: Path, tmp_path: Path, lib: str
) -> None:
    """Cold (made on open/read) and warm (a remount served from the inflated copies, one of them
    damaged meanwhile), including reads across the chunks of a chunked file."""
    cache = tmp_path / "cache"
    files = {p: w for p, w in fx.listing(2).items() if w["type"] == "file" and p != "/etc/redhat-release"}
    offsets = (16_777_216 - 5000, 33_554_432 - 1, 0, 37_200_000 - 7)  # across chunks, at the end
    with open_repository(fx.repo, public_keys=[fx.pub]) as ref:  # the store's own checked path
        pieces = {off: ref.read(BIG, off, 70_000) for off in offsets}
    for round_ in ("cold", "warm"):
        said = _mount(fx, server, mnt, cache, lib)
        # the start says what it found of the last stop (the console line an operator reads)
        assert ("the last stop was clean" in said) == (round_ == "warm"), said
        assert ("no clean stop recorded" in said) == (round_ == "cold"), said
        try:
            assert not (cache / FQRN / "plain" / CLEAN).exists()  # taken before serving
            for path, want in files.items():
                data = (mnt / path.lstrip("/")).read_bytes()
                assert hashlib.sha1(data).hexdigest() == want["sha1"], (round_, path)
            with open(mnt / BIG.lstrip("/"), "rb", buffering=0) as f:
                for off, want_piece in pieces.items():
                    f.seek(off)
                    assert f.read(70_000) == want_piece, (round_, off)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60)
        if round_ == "cold":
            # the daemon stopped cleanly: the damage comes after its marker, so it is checked
            _wait_for(cache / FQRN / "plain" / CLEAN)
            inflated = sorted((cache / FQRN / "plain").glob("??/*"))  # not the markers beside them
            assert len(inflated) >= 3  # the chunks at least
            victim = max(inflated, key=lambda p: p.stat().st_size)
            raw = bytearray(victim.read_bytes())
            raw[1000] ^= 0xFF
            victim.write_bytes(bytes(raw))


def test_a_held_cache_misses_without_opening_and_refetches_what_vanished(
    fx: Fixture, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mount daemon keeps in memory what its cache holds (``hold``): a miss opens no file, a
    file removed behind its back (another process's size limit, a user clearing the cache) is a miss
    that is fetched again, never an error, and what the size limit evicts is forgotten."""
    cache = tmp_path / "cache"
    with _open(server.repo_url(), fx, cache) as repo:
        want = repo.read(FILE)  # now in the plain cache
    with _open(server.repo_url(), fx, cache) as repo:
        store, plain = repo.store, repo.store.plain_cache
        assert store.cache is not None and plain is not None
        store.cache.hold()
        held = plain.hold()
        entry = repo.stat(FILE)
        name = entry.content_hash
        assert name is not None and plain.has(name, "") and len(held) >= 1  # taken stock of
        absent = "ee" + "f" * 38
        opened: list[str] = []
        real_open = os.open
        monkeypatch.setattr(os, "open", lambda p, *a: opened.append(p) or real_open(p, *a))
        assert plain.open(absent, "", 10) is None and not plain.has(absent, "")
        with pytest.raises(FileNotFoundError):
            store.cache.read_small(parse_hash(absent), "", 10)
        assert opened == []  # known misses: no failed opens
        monkeypatch.undo()
        plain.path(name, "").unlink()  # behind the daemon's back
        fetched = store.stats["fetched"]
        assert repo.read(entry) == want
        assert store.stats["fetched"] == fetched + 1 and plain.has(name, "")
        assert plain.path(name, "").exists()  # made again, and known again
        quota = Quota(store.cache.root, 1)  # the size limit evicts it: forgotten too
        quota.on_evict = held.forget_path
        quota.scan()
        assert not plain.path(name, "").exists() and not plain.has(name, "")


@pytest.mark.parametrize("lib", ["libfuse3"])  # the initrd's
def test_a_cache_cleared_under_a_mount_is_fetched_again(
    fx: Fixture, server: Server, mnt: Path, tmp_path: Path, lib: str
) -> None:
    """The daemon took stock of a warm cache at its start; every file and object removed meanwhile
    is fetched again when read, byte for byte."""
    cache = tmp_path / "cache"
    files = {p: w for p, w in fx.listing(2).items() if w["type"] == "file" and p != FILE}
    for round_ in ("fill", "cleared"):
        _mount(fx, server, mnt, cache, lib)
        try:
            if round_ == "cleared":
                tops = [cache / FQRN / "plain", cache / FQRN / "data"]
                # every file but the catalogs (loaded already)
                gone = [p for t in tops for p in t.rglob("*") if p.is_file() and not p.name.endswith("C")]
                assert len(gone) > 3
                for p in gone:
                    p.unlink()
            for path, want in files.items():
                data = (mnt / path.lstrip("/")).read_bytes()
                assert hashlib.sha1(data).hexdigest() == want["sha1"], (round_, path)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60)
    assert any(p.is_file() for p in (cache / FQRN / "plain").rglob("*"))  # made again


def test_a_warm_whole_read_takes_the_checked_copy_or_nothing(fx: Fixture, tmp_path: Path) -> None:
    """``cached_whole`` (a warm READ of a small file): the copy's bytes, checked, with its trailer
    still on; None when there is no copy (cold), when the copy is bad (removed); it never fetches.
    ``Revision.whole`` reads a chunked file the general way."""
    cache = tmp_path / "cache"

    def cached_whole(repo: Repository, e: DirEntry) -> bytes | None:
        assert e.content_hash is not None
        return repo.store.cached_whole(e.content_hash, "", e.size)

    with _open(fx.repo, fx, cache) as repo:
        entry = repo.stat(FILE)
        fetched = repo.store.stats["fetched"]  # the catalogs
        assert cached_whole(repo, entry) is None and repo.store.stats["fetched"] == fetched
        data = repo.read(entry)
        assert repo.whole(repo.stat(BIG)) == repo.read(BIG)  # chunked: read the general way
        plain = _plain_file(repo, FILE)
    with _open(fx.repo, fx, cache) as repo:  # a new process: the copy is checked on first use
        fetched = repo.store.stats["fetched"]
        got = cached_whole(repo, entry)
        assert got is not None and got[: entry.size] == data and len(got) == entry.size + TRAILER
        assert repo.store.stats["fetched"] == fetched
    raw = bytearray(plain.read_bytes())
    raw[5] ^= 0x20
    plain.write_bytes(bytes(raw))
    with _open(fx.repo, fx, cache) as repo:
        fetched = repo.store.stats["fetched"]
        assert cached_whole(repo, entry) is None and repo.store.stats["fetched"] == fetched
        assert not plain.exists()
        assert repo.read(entry) == data  # made again
