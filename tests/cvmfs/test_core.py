"""Properties the initrd and big files rely on: stdlib-only imports, spilled large objects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cernvm_build.cvmfs import store as store_mod
from cernvm_build.cvmfs.cache import ObjectCache
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.objects import compress, hash_bytes
from cernvm_build.cvmfs.store import ObjectStore
from tests.support import run_python
from tests.support.killed import run_killed

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


#: Standard-library modules the initrd's mount must not load before it serves: the start
#: (``bootloader.parse_and_mount`` importing the mount) and the FUSE daemon's modules (imported after
#: the mount request). Under emulation these imports are a reboot's critical path (issue 13), and each
#: of these costs millions of instructions for a path the mount does not take or never reaches before
#: it serves (a dated Retry-After, a log message, a reader's private scratch, fusermount3 as a user),
#: or for a convenience (dataclasses, typing, argparse) the code does without.
NOT_BEFORE_THE_MOUNT_SERVES = (
    "argparse",
    "gettext",
    "typing",
    "dataclasses",
    "inspect",
    "email",
    "calendar",
    "locale",
    "logging",
    "traceback",
    "tempfile",
    "shutil",
    "bz2",
    "lzma",
    "subprocess",
)
MOUNT_MODULES = "parse_and_mount cvmfs.mount cvmfs.fuse cvmfs.fuse_lowlevel cvmfs.fuse_inodes"


def test_the_initrd_mount_imports_none_of_the_heavy_modules_before_it_serves() -> None:
    names = ", ".join(
        f"cernvm_build.{'bootloader.' if m == 'parse_and_mount' else ''}{m}" for m in MOUNT_MODULES.split()
    )
    code = f"import sys, {names}; print(*sys.modules)"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = {m.split(".")[0] for m in out.stdout.split()}
    assert sorted(loaded & set(NOT_BEFORE_THE_MOUNT_SERVES)) == []


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


def test_an_object_that_is_a_fifo_or_a_folder_is_a_miss_never_a_hang(tmp_path: Path) -> None:
    """A seed can ship a FIFO where an object belongs: ``lookup`` and ``read_small`` of the object
    cache take it as a bad copy (the FIFO removed) instead of an open that waits for a writer
    forever. A symbolic link there (to ``/dev/zero``: hashed for ever before) is removed too, and a
    character device (``/dev/zero``'s numbers) is never read to its end. Run in a child with a
    deadline, so a regression fails instead of hanging the suite."""
    kinds = ["fifo", "folder", "link"] + (["device"] if os.geteuid() == 0 else [])
    code = f"""
import os, stat
from pathlib import Path
from cernvm_build.cvmfs.cache import ObjectCache
from cernvm_build.cvmfs.objects import compress, hash_bytes
cache = ObjectCache(Path({str(tmp_path / "c")!r}), repo="x.test")
got = []
for what in {kinds!r}:
    data = compress(what.encode())
    h = hash_bytes(data, "sha1")
    cache.store(h, "", iter([data]), what=what)
    p = cache.path(h, "")
    p.unlink()
    for read in ("read_small", "lookup"):
        if not os.path.lexists(p):
            if what == "fifo":
                os.mkfifo(p)
            elif what == "folder":
                p.mkdir()
            elif what == "link":
                p.symlink_to("/dev/zero")
            else:
                os.mknod(p, 0o644 | stat.S_IFCHR, os.makedev(1, 5))
        fresh = ObjectCache(Path({str(tmp_path / "c")!r}), repo="x.test")  # as after a boot from a seed
        got += [fresh.read_small(h, "", 1 << 20) if read == "read_small" else fresh.lookup(h, "")]
    got.append(os.path.lexists(p) and not p.is_dir())
print(got)
"""
    done = run_python(code, blocked="reading a FIFO, link or device in the object cache blocked")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([None, None, False] * len(kinds))


@pytest.mark.parametrize("what", ["fifo", "link", "folder"])
def test_a_saved_signed_file_that_is_no_regular_file_is_absent_never_a_hang(
    tmp_path: Path, what: str
) -> None:
    """pr17b finding 4: a FIFO as the cache's saved ``.cvmfspublished`` hung every later open of the
    repository (and the initrd's mount daemon: a boot that never ended). ``load_meta`` takes a FIFO,
    a link (not followed) or a folder there as no saved copy."""
    code = f"""
import os
from pathlib import Path
from cernvm_build.cvmfs.cache import ObjectCache
cache = ObjectCache(Path({str(tmp_path / "c")!r}), repo="x.test")
meta = cache.root / ".cvmfspublished"
what = {what!r}
if what == "fifo":
    os.mkfifo(meta)
elif what == "link":
    (cache.root / "real").write_bytes(b"C123")
    meta.symlink_to("real")
else:
    meta.mkdir()
print(cache.load_meta(".cvmfspublished"))
"""
    done = run_python(code, blocked="reading a FIFO as the saved manifest blocked")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"


def test_a_fetch_killed_mid_object_leaves_nothing_after_the_next_open(tmp_path: Path) -> None:
    # a real writer killed with SIGKILL halfway through an object: its temporary is in its own
    # pid-named folder, removed by the next open of the cache (a live writer's is kept)
    root = tmp_path / "c" / "x.test"
    run_killed(
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from cernvm_build.cvmfs.cache import ObjectCache\n"
        "from cernvm_build.cvmfs.objects import hash_bytes\n"
        "cache = ObjectCache(Path(sys.argv[1]), repo='x.test')\n"
        "def blocks():\n"
        "    yield b'half of an object'\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "    yield b'never'\n"
        "cache.store(hash_bytes(b'whole'), '', blocks(), what='file')\n",
        root,
    )
    left = [p for p in root.rglob("*") if p.is_file()]
    assert len(left) == 1 and left[0].name.endswith(".tmp")  # what the kill left
    live = ObjectCache(root, repo="x.test")
    assert not [p for p in root.rglob("*") if p.is_file()]
    data = b"an object"
    live.store(hash_bytes(data), "", iter([data]), what="file")
    ObjectCache(root, repo="x.test")  # another open while this process runs keeps its folder
    assert live.lookup(hash_bytes(data), "") is not None
    assert [p.name for p in (root / "tmp").iterdir()] == [Path(live._temp_dir()).name]


#: opens a cache, makes its scratch and forks a "daemon" that keeps serving from it while the
#: process that made the folder exits (as ``cvmfs mount`` without --foreground); prints the
#: daemon's pid and the folder
FORKED_DAEMON = """\
import os, sys, time
from pathlib import Path
from cernvm_build.cvmfs.cache import ObjectCache
cache = ObjectCache(Path(sys.argv[1]), repo="x.test")
scratch = cache.scratch()
(scratch / "catalog").write_bytes(b"inflated")
pid = os.fork()
if pid == 0:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    time.sleep(600)
    os._exit(0)
print(pid, scratch, flush=True)
os._exit(0)
"""


def test_a_killed_daemons_scratch_is_swept_and_a_running_ones_kept(tmp_path: Path) -> None:
    """lf20 leftover: a process's scratch folder (``tmp/proc-…``: inflated catalogs, large objects)
    was never swept, so each killed mount daemon left its own for good; a pid in its name could
    not tell, as the daemon forked from the process that made it. Locked instead: kept while the
    daemon runs, removed by the next open once it was killed; older versions' pid-named ones go
    when their pid no longer runs."""
    import signal
    import time

    from cernvm_build.fsutil import process_alive

    root = tmp_path / "c"
    old_dead = root / "tmp" / "proc-4194305-abcd1234"  # past PID_MAX: no process has it
    old_alive = root / "tmp" / f"proc-{os.getpid()}-abcd1234"
    for folder in (old_dead, old_alive):
        folder.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    argv = [sys.executable, "-c", FORKED_DAEMON, str(root)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    pid_text, scratch_text = out.stdout.split()
    daemon, scratch = int(pid_text), Path(scratch_text)
    try:
        ObjectCache(root, repo="x.test")  # its maker has exited: the running daemon's is kept
        assert (scratch / "catalog").read_bytes() == b"inflated"
        assert not old_dead.exists() and old_alive.exists()
    finally:
        os.kill(daemon, signal.SIGKILL)
    for _ in range(200):  # reaped by whoever adopted it
        if not process_alive(daemon):
            break
        time.sleep(0.05)
    ObjectCache(root, repo="x.test")
    assert not scratch.exists()
    assert old_alive.exists()


def test_a_folder_of_temporaries_on_another_file_system_is_one_line(tmp_path: Path) -> None:
    """lf20 leftover: objects are renamed from ``tmp/`` into ``data/``; a ``tmp`` on another file
    system (here a link to /dev/shm) failed every store with EXDEV, naming neither folder."""
    from cernvm_build.cvmfs.objects import compress, hash_bytes
    from cernvm_build.errors import CvmfsError

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm on another file system than the test's folder")
    elsewhere = Path(tempfile.mkdtemp(dir=shm))
    try:
        root = tmp_path / "c"
        root.mkdir()
        (root / "tmp").symlink_to(elsewhere)
        cache = ObjectCache(root, repo="x.test")
        data = compress(b"x")
        with pytest.raises(CvmfsError, match=r"x.test: cache folder .*/c/tmp is on another file system than"):
            cache.store(hash_bytes(data), "", iter([data]), what="file")
        assert list(elsewhere.iterdir()) == []
    finally:
        shutil.rmtree(elsewhere)
