"""Seeds (``bootloader/seed.py``, ``cernvm-build image seed``): a pre-warmed scratch disk made from
a real server log of a read, checked with the real e2fsprogs and opened by the mount daemon's own
cache code with no server to fetch from."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import random
import re
import shutil
import subprocess
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cernvm_build.bootloader import disk
from cernvm_build.bootloader import seed as seedmod
from cernvm_build.bootloader.seed import make_seed, objects_from_trace, read_trace, trace_objects
from cernvm_build.cli.main import main
from cernvm_build.cvmfs import mount
from cernvm_build.cvmfs.chunking import ChunkingSettings
from cernvm_build.cvmfs.fetch import Unreachable
from cernvm_build.cvmfs.keys import load_keys
from cernvm_build.cvmfs.plaincache import CLEAN, CLEAN_MARGIN_NS, TRAILER
from cernvm_build.cvmfs.publish import create_repository, publish_tree
from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.cvmfs.serve import serve
from cernvm_build.errors import UsageError

from .conftest import DEMO_KEYS, FQRN

PUB = DEMO_KEYS.parent / f"{FQRN}.pub"  # the demo profile's key
#: the files the traced "boot" reads; UNREAD is published too but never read
READ = ("etc/os-release", "nested/lib/libc.so", "big.bin")
UNREAD = "etc/unread"
OFFSET = disk.START * disk.SECTOR
CHUNKING = ChunkingSettings(min_size=16 << 10, avg_size=32 << 10, max_size=64 << 10)


@dataclass
class Traced:
    stratum: Path  # <work>/stratum/<fqrn>
    url: str
    trace: Path  # the server's log of the read, as `cvmfs serve -vv` writes it
    files: dict[str, bytes]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    """A small repository (nested catalog, a chunked file) published with the demo keys and served;
    READ read through the project's reader while the server's log goes to a file."""
    work = tmp_path_factory.mktemp("seedrepo")
    rnd = random.Random(13)
    files = {
        "etc/os-release": b"NAME=seed test\n",
        "nested/.cvmfscatalog": b"",
        "nested/lib/libc.so": rnd.randbytes(40_000),
        "big.bin": rnd.randbytes(200_000),  # chunked below
        UNREAD: b"never read\n",
    }
    src = work / "src"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    keys = load_keys(DEMO_KEYS, FQRN)
    stratum = work / "stratum" / FQRN
    create_repository(stratum, FQRN, keys)
    publish_tree(stratum, FQRN, keys, src, chunking=CHUNKING)
    trace = work / "access.log"
    handler = logging.FileHandler(trace)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))  # the CLI's format
    log = logging.getLogger("cernvm_build.cvmfs.serve")
    old_level = log.level
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    srv = serve(work / "stratum")
    try:
        try:
            with open_repository(srv.repo_url(FQRN), public_keys=[PUB], cache_dir=work / "cache") as repo:
                for rel in READ:
                    assert repo.read_bytes(rel) == files[rel]
        finally:  # the log of that read only
            log.removeHandler(handler)
            log.setLevel(old_level)
            handler.close()
        yield Traced(stratum, srv.repo_url(FQRN), trace, files)
    finally:
        srv.close()


def _debugfs(raw: Path, request: str) -> str:
    r = subprocess.run(["debugfs", "-R", request, f"{raw}?offset={OFFSET}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _mtime(raw: Path, path: str) -> int:
    out = _debugfs(raw, f"stat {path}")
    return int(re.search(r"mtime: (0x[0-9a-f]+)", out).group(1), 16)  # type: ignore[union-attr]


def _raw(seed: Path, dest: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", seed, dest], check=True)
    return dest


def test_a_seed_is_the_scratch_disk_a_boot_would_have_filled(traced: Traced, tmp_path: Path) -> None:
    """The seed of a real server log: a qcow2 with the initrd's MBR and an ext4 UROOT that e2fsck
    finds clean, holding the inflated copies of exactly the files read (mode 0644), the catalogs,
    the empty folders of 04-devices.sh and no pin; the mount daemon's own start (``mount._open``,
    quota on) on that cache, with no server listening, serves the files read and nothing else."""
    objects = read_trace(traced.trace)
    dest = tmp_path / "out" / "seed.qcow2"
    dest.parent.mkdir()
    seed = make_seed(traced.url, FQRN, [PUB], objects, dest, size_mb=64)
    assert seed.path == dest and dest.exists() and seed.objects == len(objects)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["seed.qcow2"]  # no work files left
    info = subprocess.run(["qemu-img", "info", "--output=json", dest], capture_output=True, text=True)
    assert '"format": "qcow2"' in info.stdout and f'"virtual-size": {64 << 20}' in info.stdout
    raw = _raw(dest, tmp_path / "seed.raw")
    assert raw.read_bytes()[: disk.SECTOR] == disk.mbr(64 << 11)
    fsck = subprocess.run(["e2fsck", "-fn", f"{raw}?offset={OFFSET}"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert (
        "volume name:   UROOT"
        in subprocess.run(["dumpe2fs", "-h", f"{raw}?offset={OFFSET}"], capture_output=True, text=True).stdout
    )
    top = _debugfs(raw, "ls -p /").split()
    for folder in ("aux", "persistent", "cache", "context", "work"):
        assert any(f"/{folder}/" in line for line in top), folder
    assert "cvmfs_snapshot" not in _debugfs(raw, "ls -p /aux")

    # the files read are there as the daemon serves them: inflated, plus the trailer, mode 0644
    with open_repository(traced.stratum, public_keys=[PUB]) as repo:
        entries = {rel: repo.stat(rel) for rel in (*READ, UNREAD)}
    small = entries["etc/os-release"]
    assert small.content_hash is not None
    h = small.content_hash
    listing = _debugfs(raw, f"ls -l /cache/{FQRN}/plain/{h[:2]}")
    line = next(x for x in listing.splitlines() if h[2:] in x)
    assert "100644" in line and f" {small.size + TRAILER} " in line
    assert entries["big.bin"].is_chunked  # its chunks are seeded, each in its own plain file
    assert seed.catalogs == 2 and seed.foreign == 0  # the root and nested/'s
    # owned by root as the initrd makes them (persistent/ is the overlay's upper folder: the OS's /)
    for path in (f"/cache/{FQRN}/plain/{h[:2]}/{h[2:]}", "/persistent", f"/cache/{FQRN}/data"):
        assert "User:     0   Group:     0" in _debugfs(raw, f"stat {path}"), path
    # marked as after a clean stop, later than every seeded file changed (mke2fs keeps ctimes):
    # the first boot does not CRC-check them (plaincache.take_clean)
    since, began = (int(w) for w in _debugfs(raw, f"cat /cache/{FQRN}/plain/{CLEAN}").split())
    checked = 0
    for n in objects:
        stat = _debugfs(raw, f"stat /cache/{FQRN}/plain/{n[:2]}/{n[2:]}")
        if "ctime" in stat:
            ctime = int(re.search(r"ctime: (0x[0-9a-f]+)", stat).group(1), 16)  # type: ignore[union-attr]
            assert since // 10**9 <= ctime and ctime * 10**9 < began - CLEAN_MARGIN_NS, n
            checked += 1
    assert checked >= 3

    cache = tmp_path / "extracted"
    cache.mkdir()
    _debugfs(raw, f"rdump /cache {cache}")
    mp = tmp_path / "mnt"
    mp.mkdir()
    dead = "http://127.0.0.1:9/cvmfs/" + FQRN  # nothing listens: every fetch would fail
    args = mount.parse_args(
        ["--fqrn", FQRN, "--server", dead, "--public-key", str(PUB), "--cache", str(cache / "cache"),
         "--quota-limit", "100", "--timeout", "1", "--retries", "0", str(mp)]
    )  # fmt: skip
    assert args is not None
    repo = mount._open(args)
    try:
        assert not (cache / "cache" / FQRN / "plain" / CLEAN).exists()  # taken before serving
        assert repo.offline and repo.revision == seed.revision
        for rel in READ:
            assert repo.read_bytes(rel) == traced.files[rel], rel
        assert repo.store.stats["fetched"] == 0
        with pytest.raises(Unreachable):
            repo.read_bytes(UNREAD)
    finally:
        repo.close()
    # the quota's LRU (``Quota.scan``: oldest mtime first): in the order the trace named the objects
    plain = cache / "cache" / FQRN / "plain"
    # the root catalog inflated as the daemon keeps it, so a seeded boot opens it without its object
    assert (plain / seed.root_hash[:2] / f"{seed.root_hash[2:]}C").exists()
    order = [n for n in objects if not n.endswith(("C", "H")) and (plain / n[:2] / n[2:]).exists()]
    assert len(order) == sum(len(entries[rel].chunks) or 1 for rel in READ)  # each file or chunk
    times = [_mtime(raw, f"/cache/{FQRN}/plain/{n[:2]}/{n[2:]}") for n in order]
    assert times == sorted(times) and len(set(times)) == len(times)
    catalog = _mtime(raw, f"/cache/{FQRN}/data/{seed.root_hash[:2]}/{seed.root_hash[2:]}C")
    assert catalog < times[0]


class _StopAfter:
    """A reporter that interrupts the run (as Ctrl-C would) after ``n`` objects."""

    def __init__(self, n: int) -> None:
        self.n = n

    def step(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def progress(self, what: str, done: int, total: int | None) -> None:
        if what == "objects" and done == self.n:
            raise KeyboardInterrupt


def test_an_interrupted_run_is_finished_by_the_next(traced: Traced, tmp_path: Path) -> None:
    """Ctrl-C keeps the work beside the output (and writes no output); the re-run fetches only what
    was not fetched yet. Only the catalogs the trace names are read: a trace without nested/'s
    catalog seeds the root catalog alone."""
    every = read_trace(traced.trace)
    nested = [n for n in every if n.endswith("C")]
    with open_repository(traced.stratum, public_keys=[PUB]) as repo:
        root = repo.root_hash + "C"
        wanted = {repo.stat(rel).content_hash for rel in ("etc/os-release", UNREAD)}
    objects = {n: w for n, w in every.items() if n == root or n in wanted}
    assert len(objects) == 2 and nested  # the root catalog, os-release (UNREAD was never read)
    dest = tmp_path / "seed.qcow2"
    full = make_seed(traced.url, FQRN, [PUB], objects, tmp_path / "full.qcow2", size_mb=64)
    with pytest.raises(KeyboardInterrupt):
        make_seed(traced.url, FQRN, [PUB], objects, dest, size_mb=64, reporter=_StopAfter(1))
    assert not dest.exists() and (tmp_path / ".seed.qcow2.seed-work").is_dir()
    again = make_seed(traced.url, FQRN, [PUB], objects, dest, size_mb=64)
    assert dest.exists() and not (tmp_path / ".seed.qcow2.seed-work").exists()
    assert again.objects == full.objects == 2 and again.bytes < full.bytes
    assert full.catalogs == again.catalogs == 1


class _PauseAtDisk(_StopAfter):
    """A reporter that holds the run just before it writes the disk until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__(-1)
        self.there, self.go = threading.Event(), threading.Event()

    def step(self, message: str) -> None:
        if message.startswith("seed: writing"):
            self.there.set()
            assert self.go.wait(60)


def test_a_second_run_for_one_seed_is_refused_while_the_first_works(traced: Traced, tmp_path: Path) -> None:
    """Two runs of one ``-o`` at once shared the work folder: the second's end removed the first's
    files (and each truncated the other's ``disk.raw`` under its mke2fs and qemu-img). The second is
    one error naming the first's pid; the first ends with its seed, leaving no lock or work folder."""
    objects = read_trace(traced.trace)
    dest = tmp_path / "seed.qcow2"
    paused = _PauseAtDisk()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(make_seed, traced.url, FQRN, [PUB], objects, dest, size_mb=64, reporter=paused)
        try:
            assert paused.there.wait(60)
            with pytest.raises(UsageError, match=f"another run is making this seed [(]pid {os.getpid()} "):
                make_seed(traced.url, FQRN, [PUB], objects, dest, size_mb=64)
        finally:
            paused.go.set()
        assert first.result().objects == len(objects)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.qcow2"]


def test_objects_another_revision_no_longer_names_are_kept_as_stored(traced: Traced, tmp_path: Path) -> None:
    """A trace of revision N seeding for N+1: what N+1 changed is kept compressed in data/ (the
    daemon inflates it without a fetch if it is ever asked for), the rest inflated as usual."""
    stratum = tmp_path / "stratum" / FQRN
    shutil.copytree(traced.stratum, stratum)
    with open_repository(stratum, public_keys=[PUB]) as repo:
        old = repo.stat("etc/os-release").content_hash
    src = tmp_path / "src"
    for rel, data in traced.files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"NAME=changed\n" if rel == "etc/os-release" else data)
    publish_tree(stratum, FQRN, load_keys(DEMO_KEYS, FQRN), src, chunking=CHUNKING)
    seed = make_seed(stratum, FQRN, [PUB], read_trace(traced.trace), tmp_path / "s.qcow2", size_mb=64)
    assert seed.foreign == 1 and seed.objects == len(read_trace(traced.trace))
    assert seed.catalogs == 2  # nested/ of the new revision: by the subtree its traced old one roots
    raw = _raw(seed.path, tmp_path / "s.raw")
    assert old is not None
    assert old[2:] in _debugfs(raw, f"ls /cache/{FQRN}/data/{old[:2]}")
    assert old[2:] not in _debugfs(raw, f"ls /cache/{FQRN}/plain/{old[:2]}")


def test_the_disk_is_root_owned_whoever_made_the_files(tmp_path: Path) -> None:
    """``mke2fs -d`` copies owners and modes: files of user 1000 (the builder, or here chowned to
    it), a group-writable folder and a private file all arrive root-owned, 0755/0644, as the
    initrd (root, umask 022) makes them."""
    root = tmp_path / "work" / "root"
    (root / "persistent").mkdir(parents=True)
    (root / "cache" / "x").mkdir(parents=True)
    (root / "cache" / "x" / "f").write_bytes(b"data")
    os.chmod(root / "persistent", 0o775)
    os.chmod(root / "cache" / "x" / "f", 0o600)
    if os.geteuid() == 0:
        for p in (
            root,
            root / "persistent",
            root / "cache",
            root / "cache" / "x",
            root / "cache" / "x" / "f",
        ):
            os.chown(p, 1000, 1000)
    tools = (shutil.which("mke2fs") or "", shutil.which("debugfs") or "", shutil.which("qemu-img") or "")
    seedmod._write_disk(root, tmp_path / "s.qcow2", 64, tools)
    raw = _raw(tmp_path / "s.qcow2", tmp_path / "s.raw")
    for path, mode in (("/", "0755"), ("/persistent", "0755"), ("/cache/x", "0755"), ("/cache/x/f", "0644")):
        out = _debugfs(raw, f"stat {path}")
        assert "User:     0   Group:     0" in out and f"Mode:  {mode}" in out, (path, out[:200])


def _cli(*argv: str | Path) -> int:
    return main(["image", "seed", "demo", *map(str, argv)])


def test_cli_seeds_and_an_object_the_repository_lacks_is_one_line_naming_its_trace_line(
    traced: Traced, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "boot.log"
    missing = "ab" + "c" * 38
    lines = traced.trace.read_text().splitlines()
    trace.write_text(
        "\n".join([*lines[:3], f'127.0.0.1 - - [x] "GET /cvmfs/{FQRN}/data/ab/{"c" * 38} HTTP/1.1" 200 9'])
        + "\n"
    )
    out = tmp_path / "seed.qcow2"
    assert _cli("--server", traced.url, "--trace", trace, "-o", out, "--disk", "100M") == 5
    err = capsys.readouterr().err
    assert f"{trace}:4: file {missing}: not in the repository" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [trace]
    nested = tmp_path / "a" / "b" / "seed.qcow2"  # folders -o names that were not there: none left
    assert _cli("--server", traced.url, "--trace", trace, "-o", nested, "--disk", "100M") == 5
    assert list(tmp_path.iterdir()) == [trace], capsys.readouterr().err
    # the whole trace: the seed, and its description for scripts
    assert _cli("--server", traced.url, "--trace", traced.trace, "-o", out, "--disk", "100M", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["objects"] == len(read_trace(traced.trace)) and doc["size_mb"] == 100 and out.exists()
    # a name limit across all the traces (each within it), before anything is fetched
    many = tmp_path / "many.list"
    many.write_text("".join(f"{i:040x}\n" for i in range(3)))
    monkeypatch.setattr(seedmod, "MAX_SEED_NAMES", 4)
    assert _cli("--server", traced.url, "--trace", many, "--trace", traced.trace, "-o", nested) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {traced.trace}:") and "more than 4 object names in the seed" in err
    assert not nested.parent.parent.exists()


def test_an_object_with_wrong_bytes_is_refused_and_nothing_is_written(
    traced: Traced, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stratum = tmp_path / "stratum" / FQRN
    shutil.copytree(traced.stratum, stratum)
    with open_repository(stratum, public_keys=[PUB]) as repo:
        h = repo.stat("etc/os-release").content_hash
    assert h is not None
    (stratum / "data" / h[:2] / h[2:]).write_bytes(zlib.compress(b"NAME=evil\n"))
    where = trace_objects(traced.trace.read_text().splitlines(), str(traced.trace))[h]
    out = tmp_path / "seed.qcow2"
    code = _cli("--source", stratum, "--trace", traced.trace, "-o", out, "--disk", "100M", "--json")
    err = capsys.readouterr().err
    assert code == 6
    assert f"{where}: file {h}: " in err and "content hash mismatch" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["stratum"]


def test_object_names_from_server_logs_and_lists() -> None:
    a, b, c = "0a" + "1" * 38, "0b" + "2" * 38 + "-rmd160", "0c" + "3" * 38
    lines = [
        # `cernvm-build cvmfs serve -vv`
        f'DEBUG cernvm_build.cvmfs.serve: 10.0.2.15 "GET /cvmfs/x.test/data/0a/{a[2:]}C HTTP/1.1" 200 -',
        # nginx combined
        f'10.0.2.15 - - [03/Dec/2026:08:00:00 +0000] "GET /cvmfs/x.test/data/0b/{b[2:]} HTTP/1.1" 200 512 '
        '"-" "cvmfs"',
        # squid native, and a repeat
        f"1764748800.123    12 10.0.2.15 TCP_MISS/200 700 GET http://s1/cvmfs/x.test/data/0c/{c[2:]}P - "
        "HIER_DIRECT/s1 -",
        f'10.0.2.15 - - [x] "GET /cvmfs/x.test/data/0a/{a[2:]}C HTTP/1.1" 200 12 "-" "-"',
        # failed requests name nothing
        f'10.0.2.15 - - [x] "GET /cvmfs/x.test/data/0d/{"4" * 38} HTTP/1.1" 404 0 "-" "-"',
        f"1764748800.5 1 10.0.2.15 TCP_MISS/502 0 GET http://s1/cvmfs/x.test/data/0e/{'5' * 38} - -",
        # another repository's object, in a log of a server that serves several
        f'10.0.2.15 - - [x] "GET /cvmfs/y.test/data/0a/{"8" * 38} HTTP/1.1" 200 9 "-" "-"',
        # bare names (a list)
        "0f" + "6" * 38 + "H",
        f"data/10/{'7' * 38}",
        # junk
        "GET /cvmfs/x.test/.cvmfspublished",
        f"/data/0a/{'1' * 37}",  # too short
        f"/data/0a/{'1' * 39}",  # too long
        f"/data/0A/{'1' * 38}",  # not lower case hex
        "\x00\xff binary \u2603",
        "",
    ]
    names = objects_from_trace(lines, "x.test")
    assert names == [a + "C", b, c + "P", "0f" + "6" * 38 + "H", "10" + "7" * 38]
    assert "0a" + "8" * 38 in objects_from_trace(lines)  # no repository named: every one's
    assert trace_objects(lines, "boot.log")[c + "P"] == "boot.log:3"
    assert objects_from_trace(["nothing", "here"]) == []


@pytest.mark.parametrize("fqrn", ["../x", "no-dot", "a..b", "sft.cern.ch/.."])
def test_a_repository_name_that_is_no_name_is_refused_before_anything_is_fetched(
    tmp_path: Path, fqrn: str
) -> None:
    """The seed takes the publisher's and the reader's name rule (``manifest.check_fqrn``); its own
    pattern let ``a..b`` through to the reader."""
    from cernvm_build.errors import UsageError

    with pytest.raises(UsageError, match="invalid repository name"):
        make_seed("http://127.0.0.1:9/cvmfs/x", fqrn, [], [], tmp_path / "s.qcow2")
    assert not list(tmp_path.iterdir())


def test_a_destination_folder_holding_a_question_mark_makes_its_seed(traced: Traced, tmp_path: Path) -> None:
    """pr26c finding 6: debugfs named the partition ``<disk.raw>?offset=N`` by its absolute path, and
    e2fsprogs cuts a name at its first '?': in a folder 'a?b' it tried to open 'a' and the seed failed
    ("debugfs could not set the seed's owners: ... No such file or directory")."""
    stratum = tmp_path / "stratum"
    shutil.copytree(traced.stratum, stratum)
    (tmp_path / "a?b").mkdir()
    dest = tmp_path / "a?b" / "s.qcow2"
    seed = make_seed(stratum, FQRN, [PUB], read_trace(traced.trace), dest, size_mb=64)
    assert seed.path == dest and dest.is_file()
    raw = _raw(dest, tmp_path / "s.raw")
    assert "User:     0   Group:     0" in _debugfs(raw, f"stat /cache/{FQRN}")  # debugfs ran on it
