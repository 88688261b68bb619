"""The two FUSE front ends show the same tree: libfuse3's low-level one (inodes, ``fuse_inodes``; the
initrd's and the default) and mfusepy's high-level one on libfuse2; plus what only the low-level one
does itself: directory offsets over several READDIR buffers, seeking back, negative entries, FORGET."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import FUSE_LIBS, fuse_env

pytestmark = pytest.mark.integration

FQRN = "inodes.cernvm.test"
WIDE = 700  # entries in one directory: several 4 KiB READDIRPLUS buffers


def _publish(tmp: Path, src: Path) -> tuple[Path, Path]:
    """``src`` published as a new repository under ``tmp``: (its stratum folder, its public key)."""
    from cernvm_build.cvmfs import keys as keymod
    from cernvm_build.cvmfs.publish import create_repository, publish_tree

    keys = keymod.generate_keys(FQRN)
    keys.save(tmp / "keys")
    stratum = tmp / "stratum"
    create_repository(stratum, FQRN, keys, timestamp=int(time.time()))
    publish_tree(stratum, FQRN, keys, src)
    return stratum, tmp / "keys" / f"{FQRN}.pub"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("inodes")
    src = tmp / "src"
    (src / "wide").mkdir(parents=True)
    for i in range(WIDE):
        (src / "wide" / f"entry-{i:04d}-{'x' * (i % 40)}").write_bytes(b"%d" % i)
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "sub" / "deeper" / "file").write_bytes(b"deep\n")
    os.link(src / "sub" / "deeper" / "file", src / "sub" / "deeper" / "hard")  # same directory: cvmfs
    os.symlink("deeper/file", src / "sub" / "link")
    os.setxattr(src / "sub" / "deeper" / "hard", "user.origin", b"test")
    (src / "old").mkdir()
    (src / "old" / "1969").write_bytes(b"old\n")
    os.utime(src / "old" / "1969", ns=(-(10**9), -(10**9)))  # a broken tarball's 1969-12-31 23:59:59
    return _publish(tmp, src)


def _mount(published: tuple[Path, Path], mnt: Path, lib: str, *extra: str) -> Iterator[Path]:
    stratum, pub = published
    mnt.mkdir()
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", str(stratum)]
    cmd += ["--public-key", str(pub), *extra, str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=fuse_env(lib))
    assert r.returncode == 0, r.stderr
    try:
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60)


@pytest.fixture(params=sorted(FUSE_LIBS))
def mounted(request: pytest.FixtureRequest, published: tuple[Path, Path], tmp_path: Path) -> Iterator[Path]:
    yield from _mount(published, tmp_path / "mnt", request.param)


def _snapshot(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirs, names in os.walk(root):
        for name in sorted(dirs + names):
            p = Path(dirpath) / name
            st = p.lstat()
            row: dict[str, Any] = {"mode": st.st_mode, "size": st.st_size, "nlink": st.st_nlink}
            if stat.S_ISREG(st.st_mode):
                row["data"] = p.read_bytes()
                row["xattrs"] = {k: os.getxattr(p, k) for k in os.listxattr(p)}
            elif stat.S_ISLNK(st.st_mode):
                row["target"] = os.readlink(p)
            out[str(p.relative_to(root))] = row
    return out


def test_both_front_ends_show_the_same_tree(published: tuple[Path, Path], tmp_path: Path) -> None:
    snaps = {}
    for lib in sorted(FUSE_LIBS):
        for m in _mount(published, tmp_path / f"mnt-{lib}", lib):
            snaps[lib] = _snapshot(m)
            a, b = (m / "sub/deeper/hard").stat(), (m / "sub/deeper/file").stat()
            assert a.st_ino == b.st_ino and a.st_nlink == 2, lib  # hard links: one inode
            assert (m / "sub/link").stat().st_ino == b.st_ino, lib
            assert os.stat(m).st_ino == 1, lib
            dots = _inodes(m / "sub")
            assert dots["."] == (m / "sub").stat().st_ino and dots[".."] == 1, lib
    assert snaps["libfuse3"] == snaps["libfuse2"]
    assert len([k for k in snaps["libfuse3"] if k.startswith("wide/")]) == WIDE
    assert snaps["libfuse3"]["sub/deeper/hard"]["xattrs"]["user.origin"] == b"test"
    assert snaps["libfuse3"]["sub/deeper/hard"]["xattrs"]["user.fqrn"] == FQRN.encode()


def _inodes(d: Path) -> dict[str, int]:
    """Name -> d_ino of every entry libc's readdir returns, ``.`` and ``..`` too (os.scandir leaves
    them out; libc leaves out entries of inode 0)."""
    libc = _libc()
    handle = libc.opendir(str(d).encode())
    assert handle
    try:
        out = {}
        while ent := libc.readdir(handle):
            out[ctypes.string_at(ent + 19).decode()] = ctypes.c_uint64.from_address(ent).value
        return out
    finally:
        libc.closedir(handle)


def _libc() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.opendir.argtypes = [ctypes.c_char_p]
    libc.readdir.restype = ctypes.c_void_p
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.telldir.restype = ctypes.c_long
    libc.telldir.argtypes = [ctypes.c_void_p]
    libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    libc.rewinddir.argtypes = [ctypes.c_void_p]
    libc.closedir.argtypes = [ctypes.c_void_p]
    return libc


def _names(libc: Any, d: int, limit: int = 1 << 30) -> list[str]:
    # struct dirent on Linux x86_64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name
    out: list[str] = []
    while len(out) < limit and (ent := libc.readdir(d)):
        out.append(ctypes.string_at(ent + 19).decode())
    return out


def test_directory_offsets_seek_and_rewind(mounted: Path) -> None:
    libc = _libc()
    d = libc.opendir(str(mounted / "wide").encode())
    assert d
    try:
        first = _names(libc, d, 300)
        here = libc.telldir(d)
        rest = _names(libc, d)
        names = first + rest
        assert len(names) == len(set(names)) == WIDE + 2 and {".", ".."} <= set(names)
        libc.seekdir(d, here)
        assert _names(libc, d) == rest  # a seek within the listing continues at that entry
        libc.rewinddir(d)
        assert _names(libc, d) == first + rest  # back to the start: the listing streamed again
    finally:
        libc.closedir(d)


def test_missing_names_are_not_found(mounted: Path) -> None:
    for _ in range(2):  # the second answer may come from the kernel's negative entry
        with pytest.raises(FileNotFoundError):
            (mounted / "sub" / "nothing-here").lstat()
    assert (mounted / "sub/deeper/file").read_bytes() == b"deep\n"


def test_a_lookup_gives_each_entry_the_inode_its_class_computes(published: tuple[Path, Path]) -> None:
    """``Catalog.lookup`` sets the inode from the md5 it hashed for the query: the same number
    ``DirEntry.inode`` computes itself (the path's md5; a hard link's group number; the root 1)."""

    from cernvm_build.cvmfs.catalog import DirEntry
    from cernvm_build.cvmfs.repository import open_repository

    stratum, pub = published
    fields = DirEntry.FIELDS
    with open_repository(str(stratum), public_keys=[pub]) as repo:
        paths = ["/", *(e.path for e in repo.walk("/"))]
        kinds = set()
        for path in paths:
            got = repo.lookup(path)
            assert got is not None
            fresh = DirEntry(**{n: getattr(got, n) for n in fields})  # computes its inode itself
            assert got.inode == fresh.inode, path
            kinds.add((got.kind, bool(got.hardlink_group)))
        assert {(stat.S_IFDIR, False), (stat.S_IFREG, True), (stat.S_IFLNK, False)} <= kinds


def test_each_lookup_is_a_reference_until_forgotten(
    published: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LOOKUP handler (its bookkeeping inline): it answers with the entry, and every answer is
    one more reference the kernel holds (two lookups need two forgets)."""
    from cernvm_build.cvmfs import fuse_inodes
    from cernvm_build.cvmfs.fuse_inodes import InodeFilesystem, packed_entry
    from cernvm_build.cvmfs.repository import open_repository

    replies: list[bytes] = []
    monkeypatch.setattr(fuse_inodes.ll, "reply_entry", lambda _req, entry: replies.append(entry))
    stratum, pub = published
    with open_repository(str(stratum), public_keys=[pub]) as repo:
        fs = InodeFilesystem(repo)
        sub = repo.lookup("/sub")
        entry = repo.lookup("/sub/link")
        assert sub is not None and entry is not None
        fs.lookup(0, 1, b"sub")
        fs.lookup(0, sub.inode, b"link")
        fs.lookup(0, sub.inode, b"link")
        assert replies == [packed_entry(sub), packed_entry(entry), packed_entry(entry)]
        fs._entries.clear()
        fs.forget(entry.inode, 1)
        assert fs._entry(entry.inode).path == "/sub/link"
        fs.forget(entry.inode, 1)
        with pytest.raises(OSError) as e:
            fs._entry(entry.inode)
        assert e.value.errno == errno.ESTALE
        fs._prefetch.close()


def test_an_inode_is_kept_until_the_kernel_forgets_it(published: tuple[Path, Path]) -> None:
    """The inode table's rule (no kernel needed): a path is kept per reference the kernel holds, the
    entry cache may drop entries at any time, FORGET of the last reference drops the path."""
    from cernvm_build.cvmfs.fuse_inodes import InodeFilesystem
    from cernvm_build.cvmfs.repository import open_repository

    stratum, pub = published
    with open_repository(str(stratum), public_keys=[pub]) as repo:
        fs = InodeFilesystem(repo)
        entry = repo.lookup("/sub/deeper/file")
        assert entry is not None
        fs._referenced([entry])
        fs._referenced([entry])
        fs._entries.clear()
        assert fs._entry(entry.inode).path == "/sub/deeper/file"  # found again by its path
        fs.forget(entry.inode, 1)
        assert fs._entry(entry.inode).inode == entry.inode
        fs.forget(entry.inode, 1)
        with pytest.raises(OSError) as e:
            fs._entry(entry.inode)
        assert e.value.errno == errno.ESTALE
        fs.forget(1, 1 << 40)
        assert fs._entry(1).is_dir  # the root is never forgotten
        fs._prefetch.close()


def test_request_counts_are_written_for_a_diagnosis(published: tuple[Path, Path], tmp_path: Path) -> None:
    """``mount --stats FILE`` (the initrd's ``cvmfs_stats``): per request kind the count and the
    handler seconds, complete once the daemon ends; with a cache, where making objects went."""
    stats = tmp_path / "stats"
    mounts = _mount(
        published, tmp_path / "mnt", "libfuse3", "--stats", str(stats), "--cache", str(tmp_path / "cache")
    )
    mnt = next(mounts)
    try:
        assert len(os.listdir(mnt / "wide")) == WIDE
        assert (mnt / "sub/deeper/file").read_bytes() == b"deep\n"
        with pytest.raises(FileNotFoundError):
            (mnt / "sub" / "nothing-here").lstat()
    finally:
        mounts.close()  # unmounts

    def counts() -> dict[str, tuple[int, float, float]]:
        lines = stats.read_text().splitlines() if stats.exists() else []
        return {name: (int(n), float(s), float(c)) for name, n, s, c in (ln.split() for ln in lines)}

    deadline = time.monotonic() + 60  # the daemon's last write follows the unmount
    while "read" not in counts() and time.monotonic() < deadline:
        time.sleep(0.2)
    got = counts()
    assert got["lookup"][0] >= 3  # sub, deeper, file, nothing-here (wide may come by READDIRPLUS)
    assert got["readdirplus"][0] + got.get("readdir", (0, 0.0, 0.0))[0] >= 2
    assert got["read"][0] >= 1
    assert all(s >= 0 and c >= 0 for _n, s, c in got.values())
    # the process's CPU when the mount was ready (its start: open, imports) and at the end, which
    # holds the handlers' CPU too
    ready, process = got.pop("@ready"), got.pop("@process")
    assert 0 < ready[2] <= process[2] and 0 < ready[1] <= process[1]
    # where making the fetched objects went (the store's phases: fetch, inflate, write), apart
    # from the requests (their CPU is inside the READ handlers')
    phases = {k: got.pop(k) for k in list(got) if k.startswith("~")}
    assert phases and all(n >= 1 and s >= 0 and c >= 0 for n, s, c in phases.values()), phases
    assert sum(c for _n, _s, c in got.values()) <= process[2] - ready[2] + 0.05


def _final_counts(stats: Path, unmounted: float) -> dict[str, tuple[int, float, float]]:
    """The ``--stats`` file as the daemon writes it at its end: the first write after ``unmounted``
    (``time.time()``; it also writes every 10 s while serving)."""
    deadline = time.monotonic() + 60
    while not (stats.exists() and stats.stat().st_mtime >= unmounted) and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = stats.read_text().splitlines()
    return {name: (int(n), float(s), float(c)) for name, n, s, c in (ln.split() for ln in lines)}


def test_every_listing_is_readdirplus_so_ls_l_asks_no_lookups(
    published: tuple[Path, Path], tmp_path: Path
) -> None:
    """The daemon asks for READDIRPLUS on every listing request, not only the first (libfuse's
    default, ``FUSE_CAP_READDIRPLUS_AUTO``): a directory larger than one buffer (4 KiB before
    kernel 6.14, the reader's getdents buffer after) comes whole with its attributes, so listing it
    and then looking at its entries (``ls -l``, Python's imports after a FileFinder listing) needs no
    LOOKUP per entry. Default would be one READDIRPLUS, then READDIRs and ~350 LOOKUPs here (checked)."""
    stats = tmp_path / "stats"
    mounts = _mount(published, tmp_path / "mnt", "libfuse3", "--stats", str(stats))
    mnt = next(mounts)
    try:
        names = os.listdir(mnt / "wide")
        assert len(names) == WIDE
        for name in names:
            (mnt / "wide" / name).lstat()
    finally:
        before = time.time()  # the daemon writes its final counts before the unmount has returned
        mounts.close()  # unmounts
    got = _final_counts(stats, before - 0.01)
    assert "readdir" not in got
    assert got["readdirplus"][0] >= 2  # several buffers (and the empty one at the end)
    assert got["lookup"][0] <= 2  # /wide itself, not its entries


def test_request_counts_tell_cpu_from_waiting(tmp_path: Path) -> None:
    """A handler's CPU is its thread's, apart from its wall time: one that waits shows wall
    seconds and almost no CPU, one that computes shows CPU (in a guest with one CPU the wall time
    of every handler holds the others' work too)."""
    from cernvm_build.cvmfs.fuse_lowlevel import RequestCounts

    counts = RequestCounts(str(tmp_path / "stats"), every=3600)

    def burn(*request: object) -> None:
        t = time.thread_time()
        while time.thread_time() - t < 0.05:
            pass

    request = (7, 1, bytearray(), 0)  # (req, ino, buf, n) as the session calls a handler
    counts.wrap("wait", lambda *r: time.sleep(0.1))(*request)
    counts.wrap("burn", burn)(*request)
    counts.mark_ready()
    counts.write()
    lines = (tmp_path / "stats").read_text().splitlines()
    got = {ln.split()[0]: [float(x) for x in ln.split()[1:]] for ln in lines}
    assert got["wait"][0] == 1 and got["wait"][1] >= 0.1 and got["wait"][2] < 0.05
    assert got["burn"][0] == 1 and got["burn"][2] >= 0.05
    assert got["@ready"][2] >= 0.05 and got["@process"][2] >= got["@ready"][2]


def test_request_counts_count_every_request_but_time_only_a_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--stats`` (on in every bench boot) reads the thread's CPU clock, a system call, for one
    request in SAMPLE_EVERY of a kind only, and scales the times it took up to all of them."""
    from cernvm_build.cvmfs import fuse_lowlevel as ll

    reads: list[int] = []

    def thread_time() -> float:  # each request "costs" 1 ms of CPU
        reads.append(1)
        return len(reads) // 2 * 0.001

    monkeypatch.setattr(time, "thread_time", thread_time)
    counts = ll.RequestCounts(str(tmp_path / "stats"), every=3600)
    handler = counts.wrap("read", lambda *request: None)
    for _ in range(64):
        handler(7, 1, bytearray(), 0)
    counts.write()
    name, n, _wall, cpu = (tmp_path / "stats").read_text().splitlines()[0].split()
    assert (name, n) == ("read", "64")
    assert len(reads) == 2 * 64 // ll.SAMPLE_EVERY, "the CPU clock was read for every request"
    assert float(cpu) == pytest.approx(0.064, abs=0.002)


def test_an_os_root_mount_shows_only_the_entries_own_attributes(
    published: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--no-magic-xattrs`` (the μCernVM root): no ``user.fqrn``..., but the tree's own attributes
    stay readable, on both front ends."""
    for lib in sorted(FUSE_LIBS):
        for m in _mount(published, tmp_path / f"mnt-{lib}", lib, "--no-magic-xattrs"):
            hard = m / "sub/deeper/hard"
            assert os.listxattr(hard) == ["user.origin"], lib
            assert os.getxattr(hard, "user.origin") == b"test", lib
            with pytest.raises(OSError) as e:
                os.getxattr(m, "user.fqrn")
            assert e.value.errno == errno.ENODATA, lib


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A repository whose entries have no extended attributes (like the Debian OS tree)."""
    tmp = tmp_path_factory.mktemp("bare")
    src = tmp / "src"
    (src / "etc").mkdir(parents=True)
    for i in range(40):
        (src / "etc" / f"conf-{i:02d}").write_bytes(b"setting %d\n" % i)
    (src / "bin").mkdir()
    shutil.copy2("/bin/true", src / "bin" / "true")
    return _publish(tmp, src)


def test_without_any_attributes_the_kernel_stops_asking_and_overlayfs_works(
    bare: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--no-magic-xattrs`` over a tree without attributes: GETXATTR/LISTXATTR are answered ENOSYS
    (by libfuse, no Python), so the kernel says EOPNOTSUPP from then on and never asks the daemon
    again; overlayfs over it (the μCernVM root) still looks up, executes and copies files up."""
    stats = tmp_path / "stats"
    mounts = _mount(bare, tmp_path / "mnt", "libfuse3", "--no-magic-xattrs", "--stats", str(stats))
    m = next(mounts)
    ov = tmp_path / "ov"
    try:
        for _ in range(2):
            for call in (lambda: os.getxattr(m / "etc/conf-01", "security.capability"),
                         lambda: os.listxattr(m / "etc")):  # fmt: skip
                with pytest.raises(OSError) as e:
                    call()
                assert e.value.errno == errno.EOPNOTSUPP
        for d in ("upper", "work", "root"):
            (ov / d).mkdir(parents=True)
        opts = f"lowerdir={m},upperdir={ov / 'upper'},workdir={ov / 'work'}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(ov / "root")], check=True)
        try:
            root = ov / "root"
            assert subprocess.run([str(root / "bin/true")], timeout=60).returncode == 0
            with (root / "etc/conf-07").open("a") as f:  # a copy-up: reads the lower file's attributes
                f.write("changed\n")
            assert (ov / "upper/etc/conf-07").read_bytes() == b"setting 7\nchanged\n"
            assert (m / "etc/conf-07").read_bytes() == b"setting 7\n"
        finally:
            subprocess.run(["umount", str(ov / "root")], check=False, timeout=60)
    finally:
        mounts.close()
    deadline = time.monotonic() + 60  # the daemon's last write follows the unmount
    while "read" not in (text := stats.read_text() if stats.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "read" in text and "lookup" in text
    assert "xattr" not in text  # no attribute request reached Python


def test_prefetch_in_order_fetches_ahead_only_for_a_reader_in_name_order(
    bare: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--prefetch-in-order`` (the μCernVM root): opening one file of a directory fetches that file
    only (by default its next 32 small siblings come too: 33 objects); a reader going through the
    listed directory in name order gets the files after it fetched ahead."""
    cache = tmp_path / "cache"

    def copies() -> int:
        # file contents: not the catalog and history the daemon keeps inflated beside them
        return sum(1 for p in (cache / FQRN / "plain").glob("??/*") if p.name[-1] not in "CH")

    for m in _mount(bare, tmp_path / "mnt", "libfuse3", "--prefetch-in-order", "--cache", str(cache)):
        names = sorted(os.listdir(m / "etc"))
        assert (m / "etc" / names[5]).read_bytes() == b"setting 5\n"
        assert (m / "etc" / names[0]).read_bytes() == b"setting 0\n"  # backwards: no run either
        time.sleep(1)  # what a prefetcher would have started by now
        assert copies() == 2
        for i in (1, 2, 3):
            assert (m / "etc" / names[i]).read_bytes() == b"setting %d\n" % i
        deadline = time.monotonic() + 60
        while copies() < 10 and time.monotonic() < deadline:  # fetched ahead, in the background
            time.sleep(0.1)
        assert copies() >= 10


def test_readdir_reuses_its_threads_buffer_and_keeps_a_reply_to_the_size_asked() -> None:
    """READDIR fills a buffer of the thread's own, reused (``reply_buffer``): larger than this
    request asked when an earlier one asked more, so an entry that does not fit the size asked is
    not added even where the buffer has room (``add_direntry``'s ``end``)."""
    import threading

    from cernvm_build.cvmfs import fuse_lowlevel as ll
    from cernvm_build.cvmfs.fuse_inodes import _bare_entry

    def in_thread() -> None:
        buf = ll.reply_buffer(8192)
        assert ll.reply_buffer(4096) is buf and len(buf) == 8192
        other: list[bytearray] = []
        t = threading.Thread(target=lambda: other.append(ll.reply_buffer(4096)))
        t.start()
        t.join()
        assert other[0] is not buf
        assert len(ll.reply_buffer(16384)) == 16384
        buf = ll.reply_buffer(100)
        entry = _bare_entry(5, stat.S_IFDIR)
        for plus in (False, True):
            buf[:] = b"\xff" * len(buf)
            n = ll.add_direntry(0, buf, 0, b"name", entry, 1, plus, 20)
            assert n > 20 and buf == b"\xff" * len(buf), n
            assert ll.add_direntry(0, buf, 0, b"name", entry, 1, plus, n) == n
            assert b"name" in buf[:n]

    errors: list[BaseException] = []

    def run() -> None:
        try:
            in_thread()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)  # a fresh thread: no buffer of an earlier test
    t.start()
    t.join()
    assert not errors, errors


class _Replies:
    """READDIR replies without the kernel (``fuse_lowlevel``'s calls replaced): each entry counts
    ``ENTRY`` bytes; a reply is the list of (name, offset, inode) its buffer got."""

    ENTRY = 100

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        from cernvm_build.cvmfs import fuse_inodes
        from cernvm_build.cvmfs import fuse_lowlevel as ll

        self.ll = ll
        self.pending: list[tuple[str, int, int]] = []
        self.replies: list[list[tuple[str, int, int]]] = []
        monkeypatch.setattr(ll, "reply_buffer", lambda size: bytearray(size))
        monkeypatch.setattr(ll, "add_direntry", self.add)
        monkeypatch.setattr(fuse_inodes, "add_entryplus", self.add_plus)
        monkeypatch.setattr(ll, "reply_buf", self.reply)
        monkeypatch.setattr(ll, "reply_entry", lambda req, entry: None)

    def add(
        self, req: int, buf: Any, pos: int, name: bytes, entry: bytes, off: int, plus: bool, end: int
    ) -> int:
        if end - pos >= self.ENTRY:
            self.pending.append((name.decode(), off, self.ll.ENTRY.unpack(entry)[6]))  # attr.ino
        return self.ENTRY

    def add_plus(self, buf: Any, pos: int, end: int, e: Any, off: int, name: bytes) -> int:
        if end - pos >= self.ENTRY:
            self.pending.append((name.decode(), off, e.inode))
        return self.ENTRY

    def reply(self, req: int, buf: Any, size: int | None = None) -> None:
        self.replies.append(self.pending)
        self.pending = []


@pytest.mark.parametrize("whole", [True, False])
def test_readdir_lists_in_buffers_from_any_offset_and_references_what_it_gave(
    published: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    """A directory larger than one reply buffer, listed whole (one query) or streamed (a small
    batch size): consecutive offsets across buffers, a reply at any offset (a seek forwards and
    back), the empty reply at the end; each entry given with attributes is referenced once per
    time the kernel got it, and FORGET of those references drops its path (no kernel needed)."""
    from cernvm_build.cvmfs import fuse_inodes
    from cernvm_build.cvmfs.fuse_inodes import InodeFilesystem
    from cernvm_build.cvmfs.repository import open_repository

    if whole:
        monkeypatch.setattr(fuse_inodes, "LISTED_WHOLE", WIDE)
    else:
        monkeypatch.setattr(fuse_inodes, "LISTED_WHOLE", 10)
        monkeypatch.setattr(fuse_inodes, "FETCH", 64)
    out = _Replies(monkeypatch)
    stratum, pub = published
    with open_repository(str(stratum), public_keys=[pub]) as repo:
        fs = InodeFilesystem(repo)
        try:
            wide = repo.stat("/wide")
            kids = list(repo.iterdir(wide))
            want = [(".", 1, wide.inode), ("..", 2, 1)]
            want += [(c.name, i + 3, c.inode) for i, c in enumerate(kids)]
            fs.lookup(0, 1, b"wide")

            class Fi:
                fh = 0

            def read(off: int, plus: bool = True, per: int = 50) -> list[tuple[str, int, int]]:
                fs.readdir(0, wide.inode, per * _Replies.ENTRY, off, Fi(), plus)
                return out.replies[-1]

            got: list[tuple[str, int, int]] = []
            while part := read(got[-1][1] if got else 0):
                assert len(part) <= 50
                got += part
            assert got == want and len(out.replies) == WIDE // 50 + 2  # the last one empty
            assert wide.inode not in fs._listings  # read to its end: dropped
            assert read(300) == want[300:350]  # a new listing, from an offset
            assert read(650) == want[650:700]  # forwards in the same listing
            assert read(60) == want[60:110]  # and back (streamed: across a batch again)
            assert read(0, plus=False, per=3) == want[:3]  # a plain READDIR references nothing
            counts = {
                c.inode: 1 + (300 <= i + 2 < 350) + (650 <= i + 2 < 700) + (60 <= i + 2 < 110)
                for i, c in enumerate(kids)
            }
            assert {c.inode: fs._paths[c.inode][1] for c in kids} == counts
            for c in kids:
                fs.forget(c.inode, counts[c.inode] - 1)
                assert fs._entry(c.inode) == c
                fs.forget(c.inode, 1)
                assert c.inode not in fs._paths
        finally:
            fs._prefetch.close()


def test_a_huge_listing_gives_attributes_only_to_its_first_entries(
    published: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """READDIRPLUS is asked for every listing request (see ``init``), so a directory of a million
    entries would leave a million inodes referenced: past ``GIVEN_PER_LISTING`` children the entries
    go bare (inode and type, no reference; the kernel looks them up when used)."""
    from cernvm_build.cvmfs import fuse_inodes
    from cernvm_build.cvmfs.fuse_inodes import InodeFilesystem
    from cernvm_build.cvmfs.repository import open_repository

    monkeypatch.setattr(fuse_inodes, "GIVEN_PER_LISTING", 100)
    out = _Replies(monkeypatch)
    stratum, pub = published
    with open_repository(str(stratum), public_keys=[pub]) as repo:
        fs = InodeFilesystem(repo)
        try:
            wide = repo.stat("/wide")
            kids = list(repo.iterdir(wide))
            fs.lookup(0, 1, b"wide")

            class Fi:
                fh = 0

            got: list[tuple[str, int, int]] = []
            while True:
                fs.readdir(0, wide.inode, 50 * _Replies.ENTRY, got[-1][1] if got else 0, Fi(), True)
                if not out.replies[-1]:
                    break
                got += out.replies[-1]
            assert got[2:] == [(c.name, i + 3, c.inode) for i, c in enumerate(kids)]  # all listed
            assert [c.inode in fs._paths for c in kids] == [True] * 100 + [False] * (WIDE - 100)
        finally:
            fs._prefetch.close()


def test_a_file_from_before_1970_is_listed_and_stated(published: tuple[Path, Path], tmp_path: Path) -> None:
    """A negative mtime packs (it was EIO for its LOOKUP and for every READDIRPLUS of its folder)."""
    for m in _mount(published, tmp_path / "mnt", "libfuse3"):
        assert [(e.name, e.stat(follow_symlinks=False).st_mtime) for e in os.scandir(m / "old")] == [
            ("1969", -1)
        ]
        assert (m / "old" / "1969").stat().st_mtime == -1 and (m / "old" / "1969").read_bytes() == b"old\n"


def test_an_error_while_serving_leaves_no_dead_mount(published: tuple[Path, Path], tmp_path: Path) -> None:
    """``on_ready`` (in INIT) fails, e.g. writing ``--snapshot-file`` on a full disk: the daemon
    unmounts on its way out, or the mount point stays dead (ENOTCONN) until someone unmounts it."""
    if os.geteuid() != 0:
        pytest.skip("mounts by mount(2) in this process: needs root")
    from cernvm_build.cvmfs import fuse_lowlevel as ll
    from cernvm_build.cvmfs.fuse_inodes import InodeFilesystem
    from cernvm_build.cvmfs.repository import open_repository

    def on_ready() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    stratum, pub = published
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with open_repository(str(stratum), public_keys=[pub]) as repo:
            fs = InodeFilesystem(repo, on_ready=on_ready)
            try:
                with pytest.raises(OSError, match="No space left"):
                    ll.serve(fs, str(mnt), ["ro", "fsname=cvmfs2:test", "subtype=cvmfs"])
            finally:
                fs._prefetch.close()
        assert not os.path.ismount(mnt)
        assert os.listdir(mnt) == []  # not ENOTCONN
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_sigterm_unmounts_and_ends_the_daemon(published: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGTERM (SIGINT, SIGHUP) to the daemon ends its loop even while its readers wait in the
    kernel: it unmounts, writes its counts and exits 0 (as libfuse's signal handlers did)."""
    stratum, pub = published
    mnt, stats = tmp_path / "mnt", tmp_path / "stats"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", str(stratum)]
    cmd += ["--public-key", str(pub), "--foreground", "--stats", str(stats), str(mnt)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("mounted")
        assert (mnt / "sub/deeper/file").read_bytes() == b"deep\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        assert not os.path.ismount(mnt)
        assert "read 1 " in stats.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_an_unprivileged_user_mounts_through_fusermount3(
    published: tuple[Path, Path], tmp_path: Path
) -> None:
    """Not root: the daemon has ``fusermount3`` mount and hand it the /dev/fuse descriptor (over
    the ``_FUSE_COMMFD`` socket, as libfuse does); the user unmounts with ``fusermount3 -u``."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to run the daemon as another user (setpriv)")
    if os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
        pytest.skip("/dev/fuse is not open to other users here (fusermount3 opens it as the user)")
    stratum, pub = published
    shared = Path(tempfile.mkdtemp(prefix="fusewire-"))  # readable by the user, unlike tmp_path
    try:
        shutil.copytree(stratum, shared / "stratum")
        shutil.copy2(pub, shared / "key.pub")
        (shared / "mnt").mkdir()
        for p in [shared, *shared.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o644)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        cmd = [*as_nobody, sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN]
        cmd += [
            "--server",
            str(shared / "stratum"),
            "--public-key",
            str(shared / "key.pub"),
            str(shared / "mnt"),
        ]
        env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=shared)
        assert r.returncode == 0, r.stderr
        try:
            read = [*as_nobody, "cat", str(shared / "mnt/sub/deeper/file")]
            assert subprocess.run(read, capture_output=True, timeout=60).stdout == b"deep\n"
            line = next(ln for ln in Path("/proc/self/mounts").read_text().splitlines() if str(shared) in ln)
            assert "fuse.cvmfs" in line and "user_id=65534" in line, line
        finally:
            u = subprocess.run([*as_nobody, "fusermount3", "-u", str(shared / "mnt")], capture_output=True)
            assert u.returncode == 0, u.stderr
    finally:
        subprocess.run(["umount", "-l", str(shared / "mnt")], check=False, capture_output=True)
        shutil.rmtree(shared, ignore_errors=True)


def _no_open_filesystem(repo: Any) -> Any:
    """``repo`` served by ``InodeFilesystem`` with a plain cache, as after the kernel's first OPEN was
    answered ENOSYS (reads come without an OPEN)."""
    from cernvm_build.cvmfs.fuse_inodes import InodeFilesystem
    from cernvm_build.cvmfs.plaincache import PlainCache

    assert repo.store.cache is not None
    repo.store.plain_cache = PlainCache(repo.store.cache.root)
    fs = InodeFilesystem(repo)
    fs._no_open = True
    return fs


def test_a_large_file_read_whole_is_answered_from_a_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without OPEN, a file read whole in one READ: a small one by one checked read of its copy
    (``reply_buf``), one above ``FRESH_MAX`` by a kept descriptor and ``reply_fd`` (a kept buffer,
    not fresh pages per reply); both byte for byte, cold."""
    from cernvm_build.cvmfs import fuse_lowlevel as ll
    from cernvm_build.cvmfs.repository import open_repository

    src = tmp_path / "src"
    src.mkdir()
    small, big = b"small\n", os.urandom(ll.FRESH_MAX + 1000)
    (src / "small").write_bytes(small)
    (src / "big").write_bytes(big)
    stratum, pub = _publish(tmp_path, src)
    got: list[tuple[str, bytes]] = []

    def buf(req: int, data: Any, size: int | None = None) -> None:
        got.append(("buf", bytes(data[: len(data) if size is None else size])))

    monkeypatch.setattr(ll, "reply_buf", buf)
    monkeypatch.setattr(
        ll, "reply_fd", lambda req, fd, pos, size: got.append(("fd", os.pread(fd, size, pos)))
    )
    monkeypatch.setattr(ll, "reply_entry", lambda req, entry: None)

    class Fi:
        fh = 0

    with open_repository(str(stratum), public_keys=[pub], cache_dir=tmp_path / "cache") as repo:
        fs = _no_open_filesystem(repo)
        for name, data in (("small", small), ("big", big)):
            fs.lookup(0, 1, name.encode())
            fs.read(0, repo.stat("/" + name).inode, len(data), 0, Fi())
    assert got == [("buf", small), ("fd", big)]


def test_a_cold_small_file_read_whole_looks_for_its_copy_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file's READ of all of it on a cold cache: one look for the copy that finds nothing,
    then one fetch (``Revision.whole``); the look was made a second time inside the store's
    ``_once`` (issue 13: ~7k instructions a cold object). Warm, one look that finds it."""
    from cernvm_build.cvmfs import fuse_lowlevel as ll
    from cernvm_build.cvmfs.plaincache import PlainCache
    from cernvm_build.cvmfs.repository import open_repository

    src = tmp_path / "src"
    src.mkdir()
    small = b"small\n" * 100
    (src / "small").write_bytes(small)
    stratum, pub = _publish(tmp_path, src)
    got: list[bytes] = []
    monkeypatch.setattr(ll, "reply_buf", lambda req, data, size=None: got.append(bytes(data[:size])))
    monkeypatch.setattr(ll, "reply_entry", lambda req, entry: None)
    looks: list[str] = []
    real = PlainCache.read_whole_raw
    monkeypatch.setattr(
        PlainCache, "read_whole_raw", lambda self, name, *a: looks.append(name) or real(self, name, *a)
    )

    class Fi:
        fh = 0

    with open_repository(str(stratum), public_keys=[pub], cache_dir=tmp_path / "cache") as repo:
        fs = _no_open_filesystem(repo)
        fs.lookup(0, 1, b"small")
        entry = repo.stat("/small")
        fetched = repo.store.stats["fetched"]
        fs.read(0, entry.inode, len(small), 0, Fi())
        assert got == [small] and repo.store.stats["fetched"] == fetched + 1
        assert looks == [entry.content_hash]
        fs.read(0, entry.inode, len(small), 0, Fi())  # warm: found by its one look
        assert got == [small, small] and repo.store.stats["fetched"] == fetched + 1
        assert looks == [entry.content_hash] * 2
