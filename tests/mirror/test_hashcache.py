"""The hash cache: reused only for the very same file state; any write (even keeping size and mtime)
forces a re-hash."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from cernvm_build.mirror import hashcache
from cernvm_build.mirror.hashcache import HashCache


def old_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    past = time.time_ns() - 100 * 10**9
    os.utime(path, ns=(past, past))


def test_reused_across_runs_and_invalidated_by_same_size_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file's ctime is "now"; pretend the racy window has passed so that it may be remembered.
    monkeypatch.setattr(hashcache, "RACY_NS", -(10**12))
    f = tmp_path / "pkg.rpm"
    old_file(f, b"A" * 100)
    store = tmp_path / "hashes.json"
    first = HashCache(store)
    assert first.digest(f)[0] == hashlib.sha256(b"A" * 100).hexdigest()
    first.save()

    second = HashCache(store)
    second.digest(f)
    assert (second.hits, second.misses) == (1, 0)

    # Same size, same mtime, different bytes: ctime moved, so the hash is computed again.
    st = f.stat()
    time.sleep(0.05)  # let the clock tick so the write gets a different ctime
    f.write_bytes(b"B" * 100)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = HashCache(store)
    assert third.digest(f)[0] == hashlib.sha256(b"B" * 100).hexdigest()
    assert third.misses == 1


def test_recent_files_are_not_remembered(tmp_path: Path) -> None:
    f = tmp_path / "fresh"
    f.write_bytes(b"x")
    c = HashCache(tmp_path / "h.json")
    c.digest(f)
    c.save()
    assert not (tmp_path / "h.json").exists() or "fresh" not in (tmp_path / "h.json").read_text()


@pytest.mark.parametrize(
    "text",
    # valid JSON that is no mapping (AttributeError) and nesting too deep for json (RecursionError)
    # were tracebacks
    ["{not json", "[]", "7", "[" * 100_000 + "]" * 100_000, "\udcff"],
    ids=["not-json", "a-list", "a-number", "nested-too-deep", "not-utf8"],
)
def test_damaged_store_is_ignored(tmp_path: Path, text: str) -> None:
    store = tmp_path / "h.json"
    store.write_bytes(text.encode("utf-8", "surrogateescape"))
    f = tmp_path / "f"
    old_file(f, b"y")
    assert HashCache(store).digest(f)[0] == hashlib.sha256(b"y").hexdigest()


def test_a_killed_runs_probe_file_is_removed_by_the_next(tmp_path: Path) -> None:
    # pr31a finding 5: the write probe of a run killed in it (hashes.json's size + 64 KiB) stayed for ever
    from tests.support.killed import run_killed

    run_killed(
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from cernvm_build.mirror import hashcache\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        "hashcache.probe_writable(Path(sys.argv[1]))\n",
        tmp_path,
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".probe-")], "the dead run's probe"
    (tmp_path / ".probe-notapid").write_bytes(b"")  # not a probe's name: kept

    hashcache.probe_writable(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == [".probe-notapid"]
