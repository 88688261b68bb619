"""Fetching ahead (the FUSE client's prefetcher) over the real HTTP server: opening a file fetches
its small siblings into the cache, checked like any read; readdir/lookup alone fetch nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cernvm_build.cvmfs import http1, prefetch
from cernvm_build.cvmfs import store as store_module
from cernvm_build.cvmfs.objects import SUFFIX_FILE, parse_hash
from cernvm_build.cvmfs.plaincache import PlainCache
from cernvm_build.cvmfs.prefetch import Prefetcher, _small_file
from cernvm_build.cvmfs.repository import Repository, open_repository
from cernvm_build.cvmfs.serve import Server
from cernvm_build.errors import IntegrityError

from .conftest import Fixture


@contextmanager
def _published(tmp_path: Path, fqrn: str, tree: Path, **open_args: Any) -> Iterator[Repository]:
    """``tree`` published as a fresh repository ``fqrn`` under ``tmp_path``, opened with its key
    (and ``open_args``)."""
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.publish import create_repository, publish_tree

    keys = generate_keys(fqrn)
    keys.save(tmp_path / "keys")
    create_repository(tmp_path / "srv" / fqrn, fqrn, keys)
    publish_tree(tmp_path / "srv" / fqrn, fqrn, keys, tree)
    pub = tmp_path / "keys" / f"{fqrn}.pub"
    with open_repository(str(tmp_path / "srv" / fqrn), public_keys=[pub], **open_args) as repo:
        yield repo


def _small_dirs(tmp_path: Path, n: int = 8, names: tuple[str, ...] = (), sub: bool = False) -> Path:
    """A tree of ``n`` directories ``top/d0``… (or ``names``) of two small files each (the bench
    tree's shape), each with an empty directory ``sub`` too if asked."""
    tree = tmp_path / "tree"
    for d in names or [f"d{i}" for i in range(n)]:
        (tree / "top" / d / ("sub" if sub else "")).mkdir(parents=True)
        for k in range(2):
            (tree / "top" / d / f"f{k}").write_bytes(f"{d}-{k}".encode() * 10)
    return tree


def _busiest_dir(repo) -> tuple[str, list]:  # type: ignore[no-untyped-def]
    best: tuple[str, list] = ("/", [])
    for e in repo.walk("/"):
        if e.is_dir:
            small = [c for c in repo.iterdir(e.path) if _small_file(c)]
            if len(small) > len(best[1]):
                best = (e.path, small)
    return best


def test_open_fetches_the_next_small_files(fx: Fixture, server: Server, tmp_path: Path) -> None:
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=tmp_path / "cache") as repo:
        assert repo.store.cache is not None
        cache = repo.store.cache
        path, small = _busiest_dir(repo)
        assert len(small) >= 2, "the fixture needs a directory with two small files"

        def cached() -> list[bool]:
            return [cache.path(parse_hash(e.content_hash), SUFFIX_FILE).exists() for e in small]

        assert not any(cached())
        p = Prefetcher(repo, workers=4)
        p.listed(path, list(repo.iterdir(path)))
        assert not any(cached()), "a listing alone must not fetch"
        p.opened(small[0])
        p.close(finish=True)  # waits for the fetches ahead
        first = small[0].content_hash
        # the opened file itself (and any sibling with the same contents) is the reader's to fetch
        assert cached() == [e.content_hash != first for e in small], [(e.name, e.size) for e in small]
        for e in small[1:]:  # served from what was fetched ahead, and intact
            assert len(repo.read(e)) == e.size


def test_a_damaged_sibling_fails_only_its_own_read(fx: Fixture, server: Server, tmp_path: Path) -> None:
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=tmp_path / "cache") as repo:
        _path, small = _busiest_dir(repo)
        victim = small[1]
        next(fx.root.rglob(victim.content_hash[2:])).write_bytes(b"tampered")
        p = Prefetcher(repo, workers=2)
        p.opened(small[0])  # lists the directory itself
        p.close(finish=True)
        assert repo.store.cache is not None
        assert not repo.store.cache.path(parse_hash(victim.content_hash), SUFFIX_FILE).exists()
        with pytest.raises(IntegrityError, match="hash mismatch"):  # the reader meets the error itself
            repo.read(victim)
        assert len(repo.read(small[2])) == small[2].size


def test_a_warm_cache_quiets_the_prefetcher_until_a_probe_finds_files_missing(
    fx: Fixture, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything already inflated: opens stop looking ahead (a warm read's Python work), but every
    PROBE_EVERY-th open still looks, and files found missing are fetched ahead again."""
    monkeypatch.setattr(prefetch, "QUIET_AFTER", 3)
    monkeypatch.setattr(prefetch, "PROBE_EVERY", 4)
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=tmp_path / "cache") as repo:
        assert repo.store.cache is not None
        plain = repo.store.plain_cache = PlainCache(repo.store.cache.root)
        path, small = _busiest_dir(repo)
        children = list(repo.iterdir(path))
        for e in small:
            repo.read(e)  # all inflated: a warm cache

        def inflated() -> list[bool]:
            return [os.path.exists(plain.where(e.content_hash or "", "")) for e in small[1:]]

        p = Prefetcher(repo, workers=2)
        for _ in range(3):  # each open finds its window cached (a first look each time, as in a
            p._dirs.pop(path, None)  # tree of many directories: a kept listing is looked at once)
            p.listed(path, children)
            p.opened(small[0])
        for e in small[1:]:  # now some go missing
            plain.discard(e.content_hash or "", "")
        p._dirs.pop(path, None)
        p.listed(path, children)
        p.opened(small[0])  # quiet: not looked at
        p.close(finish=True)
        assert not any(inflated()), "a quiet prefetcher fetched ahead"
        for _ in range(3):  # the fourth open of the quiet stretch is a probe
            p.opened(small[0])
        p.close(finish=True)
        assert all(inflated()), "the probe did not fetch the missing files ahead"


def test_files_fetched_ahead_are_handed_to_their_first_whole_read(
    fx: Fixture, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain cache's prefetcher (the mount's): a small file fetched ahead is written to the
    cache and its checked contents go to the whole read that comes next without a read of the copy
    (a cold read's system calls); a later read reads the copy. At most AHEAD_BYTES wait unread:
    beyond, the oldest are dropped (and read from their copies). A damaged object hands nothing over."""
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=tmp_path / "cache") as repo:
        assert repo.store.cache is not None
        plain = repo.store.plain_cache = PlainCache(repo.store.cache.root)
        plain.hold()
        _path, small = _busiest_dir(repo)
        distinct = list({e.content_hash: e for e in small}.values())
        assert len(distinct) >= 4, "the fixture needs a directory with four different small files"
        first, second, victim, last = distinct[:4]
        monkeypatch.setattr(store_module, "AHEAD_BYTES", last.size)  # room for the newest only
        with open_repository(server.repo_url(), public_keys=[fx.pub]) as ref:  # no cache of its own
            want = {e.path: ref.read(e.path) for e in (first, last)}
        next(fx.root.rglob((victim.content_hash or "")[2:])).write_bytes(b"tampered")
        read_copy: list[str] = []
        real = plain.read_whole_raw  # every whole read of a copy goes through it
        monkeypatch.setattr(plain, "read_whole_raw", lambda n, *a: read_copy.append(n) or real(n, *a))
        for e in (first, second, last):
            repo.fetch_ahead(e, 0)
            assert plain.has(e.content_hash or "", "")  # written to the cache too
        with pytest.raises(IntegrityError, match="hash mismatch"):
            repo.fetch_ahead(victim, 0)
        assert not plain.has(victim.content_hash or "", "")
        assert repo.read(last) == want[last.path] and read_copy == []  # handed over
        assert repo.read(last) == want[last.path] and read_copy == [last.content_hash]  # from the copy
        assert repo.read(first) == want[first.path]  # dropped for the newer ones: read from the copy
        assert read_copy[-1] == first.content_hash
        with pytest.raises(IntegrityError, match="hash mismatch"):  # the reader meets the error itself
            repo.read(victim)


def test_a_batch_is_one_pipelined_request_and_every_object_is_checked(
    fx: Fixture, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fetch_ahead_many``: the small files' requests go out at once on one connection; each
    object is hash-checked before it is inflated, and a damaged or missing one fails alone (fetched
    again alone, then left to its reader), the others are cached and handed over."""
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=tmp_path / "cache") as repo:
        assert repo.store.cache is not None
        plain = repo.store.plain_cache = PlainCache(repo.store.cache.root)
        repo.store.cache.hold(), plain.hold()  # as the mount does: what is held is known
        _path, small = _busiest_dir(repo)
        distinct = list({e.content_hash: e for e in small}.values())[:5]
        assert len(distinct) == 5, "the fixture needs a directory with five different small files"
        with open_repository(server.repo_url(), public_keys=[fx.pub]) as ref:
            want = {e.path: ref.read(e.path) for e in distinct}
        victim, gone = distinct[1], distinct[3]
        next(fx.root.rglob((victim.content_hash or "")[2:])).write_bytes(b"tampered")
        next(fx.root.rglob((gone.content_hash or "")[2:])).unlink()
        sent: list[int] = []
        real_send = http1.Connection.send
        monkeypatch.setattr(
            http1.Connection, "send", lambda c, t, *a: sent.append(len(t)) or real_send(c, t, *a)
        )
        # --stats on a clock that ticks once per read: a phase timed from its own start is 1 tick
        clock = iter(range(1_000_000))
        monkeypatch.setattr(
            store_module, "time", SimpleNamespace(perf_counter=lambda: next(clock), thread_time=lambda: 0)
        )
        phases = repo.store.phases = store_module.Phases()
        repo.fetch_ahead_many(distinct)
        assert sent[0] == 5 and sorted(sent[1:]) == [1, 1], sent  # then the two failures, alone
        # the three good ones' wait, inflate and write, each timed from the end of the item before
        for phase in ("ahead-fetch", "ahead-inflate", "ahead-write"):
            assert phases[phase] == [3, 3.0, 0.0], (phase, phases)
        # one read of the clocks per phase's end (also the next one's start) and per item's start,
        # not two per phase (``thread_time`` is a system call): the batch's start, 3 + 1 for each good
        # item, 1 for each failed one
        assert next(clock) == 1 + 3 * 4 + 2
        for e in distinct:
            assert plain.has(e.content_hash or "", "") == (e not in (victim, gone))
        assert all(repo.read(e) == want[e.path] for e in distinct if e not in (victim, gone))
        with pytest.raises(IntegrityError, match="hash mismatch"):
            repo.read(victim)


def test_the_window_moves_on_by_whole_batches(
    fx: Fixture, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files ahead go to the workers in jobs of at most BATCH (one wake-up and one pipelined
    fetch each); an open that leaves less than a batch of the window unscheduled schedules nothing."""
    monkeypatch.setattr(prefetch, "BATCH", 2)
    monkeypatch.setattr(prefetch, "WINDOW_FILES", 4)
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=tmp_path / "cache") as repo:
        path, small = _busiest_dir(repo)
        assert len(small) >= 8, "the fixture needs a directory with eight small files"
        p = Prefetcher(repo, workers=2)
        jobs: list[list[str]] = []
        monkeypatch.setattr(p, "_submit_job", lambda job, keys: jobs.append(keys))
        p.listed(path, list(repo.iterdir(path)))
        p.opened(small[0])  # small[1:5] ahead: two jobs of two
        first = [len(k) for k in jobs]
        p.opened(small[1])  # small[5] alone is left of its window: not yet
        second = len(jobs)
        p.opened(small[2])  # small[5:7]: one job
        assert first == [2, 2] and second == 2 and [len(k) for k in jobs[2:]] == [2], jobs


def test_the_window_goes_on_into_the_next_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the last small file of a directory, the window goes on into the directories after it
    in its parent (name order), once per directory: their small files are fetched ahead too."""
    tree = tmp_path / "tree"
    for d, n in (("a", 2), ("b", 2), ("c", 1)):
        (tree / "top" / d).mkdir(parents=True)
        for k in range(n):
            (tree / "top" / d / f"f{k}").write_bytes(f"{d}{k}".encode() * 10)
    with _published(tmp_path, "beyond.cernvm.test", tree) as repo:
        p = Prefetcher(repo, workers=2)
        jobs: list[list[str]] = []
        monkeypatch.setattr(p, "_submit_job", lambda job, keys: jobs.append(keys))
        last = repo.stat("/top/a/f1")
        p.opened(last)
        following = [repo.stat(f"/top/{f}").content_hash for f in ("b/f0", "b/f1", "c/f0")]
        assert [k for keys in jobs for k in keys] == following
        jobs.clear()
        p.opened(last)  # once per directory
        assert jobs == []


def test_the_window_ahead_in_the_next_directories_is_topped_up_by_half_its_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Directories of two files (the bench tree's): the window goes BEYOND_DIRS directories ahead and
    is topped up only once fewer than half of them are left, so jobs are whole batches and not one
    directory's two files each; readdir of a directory the window went into does not make its files
    looked at again."""
    monkeypatch.setattr(prefetch, "BEYOND_DIRS", 4)
    with _published(tmp_path, "topup.cernvm.test", _small_dirs(tmp_path)) as repo:
        p = Prefetcher(repo, workers=2)
        jobs: list[list[str]] = []
        monkeypatch.setattr(p, "_submit_job", lambda job, keys: jobs.append(keys))

        def files(*dirs: int) -> list[str | None]:
            return [repo.stat(f"/top/d{d}/f{k}").content_hash for d in dirs for k in range(2)]

        def read_dir(d: int) -> list[str | None]:  # as os.walk and a reader go: readdir, then opens
            jobs.clear()
            p.listed(f"/top/d{d}", list(repo.iterdir(f"/top/d{d}")))
            for k in range(2):
                p.opened(repo.stat(f"/top/d{d}/f{k}"))
            return [h for keys in jobs for h in keys]

        assert read_dir(0) == files(0)[1:] + files(1, 2, 3, 4)  # its own next file, then 4 directories
        assert [len(k) for k in jobs] == [8, 1]  # whole batches (BATCH = 8)
        assert read_dir(1) == read_dir(2) == []  # 3, then 2 directories ahead: enough
        assert read_dir(3) == files(5, 6, 7)  # 1 left ahead: topped up (to the parent's last one)
        assert read_dir(4) == read_dir(5) == read_dir(6) == read_dir(7) == []


def test_readdir_takes_the_listing_read_ahead_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory the window went into was listed by the prefetcher: the reader's readdir that
    follows takes that listing (the same entries, its catalog not read again), once."""
    from cernvm_build.cvmfs.fuse import children

    tree = _small_dirs(tmp_path, names=("a", "b"), sub=True)
    with _published(tmp_path, "shared.cernvm.test", tree) as repo:
        expected = [(c.name, c.path) for c in repo.iterdir("/top/b")]
        p = Prefetcher(repo, workers=2)
        monkeypatch.setattr(p, "_submit_job", lambda job, keys: None)
        p.opened(repo.stat("/top/a/f1"))  # the window goes on into /top/b
        read: list[object] = []
        iterdir = repo.iterdir
        monkeypatch.setattr(repo, "iterdir", lambda d: read.append(d) or iterdir(d))
        remembered: list[str] = []

        def listing() -> list[tuple[str, str]]:
            got = list(children(repo, "/top/b", p, lambda e: remembered.append(e.path)))
            return [(name, e.path) for name, e in got if e is not None]

        assert listing() == expected and read == []
        assert remembered == [path for _, path in expected]  # kept for getattr as a read one is
        assert listing() == expected and read == ["/top/b"]  # taken once: the next one reads


def test_a_warm_cache_quiets_the_prefetcher_in_a_tree_of_small_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Directories of two files, all inflated: the files the look beyond (into the next directories)
    finds cached count towards the quiet as the opened directory's own do, file by file. Without
    that, each open's window was already looked at by the look beyond from the directory before, so
    few opens counted and a warm read listed the directories ahead for its first few hundred files
    (issue 14, warm)."""
    monkeypatch.setattr(prefetch, "BEYOND_DIRS", 4)
    monkeypatch.setattr(prefetch, "QUIET_AFTER", 2)
    monkeypatch.setattr(prefetch, "PROBE_EVERY", 100)
    with _published(tmp_path, "quiet.cernvm.test", _small_dirs(tmp_path), cache_dir=tmp_path / "c") as repo:
        assert repo.store.cache is not None
        repo.store.plain_cache = PlainCache(repo.store.cache.root)
        for d in range(8):
            for k in range(2):
                repo.read(f"/top/d{d}/f{k}")  # all inflated: a warm cache
        p = Prefetcher(repo, workers=2)
        jobs: list[list[str]] = []
        monkeypatch.setattr(p, "_submit_job", lambda job, keys: jobs.append(keys))
        beyond: list[int] = []
        real_beyond = p._beyond
        monkeypatch.setattr(p, "_beyond", lambda *a: beyond.append(1) or real_beyond(*a))
        for d in range(8):  # as os.walk and a reader go: readdir, then opens
            p.listed(f"/top/d{d}", list(repo.iterdir(f"/top/d{d}")))
            for k in range(2):
                p.opened(repo.stat(f"/top/d{d}/f{k}"))
            if d == 0:  # the first look beyond found d1-d4's files cached
                assert p._quiet >= prefetch.QUIET_AFTER
                beyond.clear()
        assert beyond == [] and jobs == []  # quiet from there on: no look ahead, nothing fetched


def test_the_inode_client_takes_the_listing_read_ahead_and_a_huge_one_is_not_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The low-level client's readdir lists a directory read ahead from the prefetcher's list (its
    catalog not queried again; the entries remembered for getattr and reads); a directory of more
    than MAX_LISTING entries is neither kept nor handed over (none of its entries looked at)."""
    from cernvm_build.cvmfs.fuse_inodes import InodeFilesystem

    tree = _small_dirs(tmp_path, names=("a", "b"), sub=True)
    with _published(tmp_path, "taken.cernvm.test", tree) as repo:
        fs = InodeFilesystem(repo)
        fs._prefetch.close()
        p = fs._prefetch = Prefetcher(repo, workers=2)
        monkeypatch.setattr(p, "_submit_job", lambda job, keys: None)
        expected = list(repo.iterdir("/top/b"))
        p.opened(repo.stat("/top/a/f1"))  # the window goes on into /top/b
        listing = repo.listing
        monkeypatch.setattr(repo, "listing", lambda *a: pytest.fail("listed again"))
        taken = fs._new_listing(repo.stat("/top/b"))
        assert taken.window == expected and taken.total == 3
        assert all(fs._entries[e.inode] == e for e in expected)
        assert p.take_children("/top/b") is None  # once
        monkeypatch.setattr(repo, "listing", listing)
        monkeypatch.setattr(prefetch, "MAX_LISTING", 2)
        fresh = Prefetcher(repo, workers=2)
        fresh._list("/top/a")
        assert fresh.take_children("/top/a") is None and fresh._dirs["/top/a"].entries == []
        fresh.close()
        p.close()


def test_the_in_order_prefetcher_goes_quiet_on_a_warm_cache_until_a_file_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``InOrderPrefetcher`` (the μCernVM root's): after IN_ORDER_QUIET opens of cached files with
    nothing fetched ahead, an open of a cached file is not followed at all (the run bookkeeping was up
    to 15 % of a warm READ); the first file found missing restarts run detection, and a reader in
    name order then gets the files after it fetched ahead again."""
    from cernvm_build.cvmfs import fuse

    monkeypatch.setattr(fuse, "IN_ORDER_QUIET", 4)
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    for k in range(80):
        (tree / "d" / f"f{k:02}").write_bytes(f"file {k} ".encode() * 10)
    with _published(tmp_path, "inorder.cernvm.test", tree, cache_dir=tmp_path / "c") as repo:
        assert repo.store.cache is not None
        plain = repo.store.plain_cache = PlainCache(repo.store.cache.root)
        plain.hold()  # as the daemon does
        files = [repo.stat(f"/d/f{k:02}") for k in range(80)]
        for e in files:
            repo.read(e)  # all inflated: a warm cache
        p = fuse.InOrderPrefetcher(repo)
        looked: list[str] = []
        real = Prefetcher.opened
        monkeypatch.setattr(Prefetcher, "opened", lambda self, e: looked.append(e.name) or real(self, e))
        p.listed("/d", list(repo.iterdir("/d")))
        for e in files[:20]:
            p.opened(e)
        # runs from the 3rd open on (IN_ORDER_RUN) until the 4th cached one: then nothing more
        assert looked == ["f02", "f03"]
        assert p._runs["/d"][0] == "f03", "a quiet open was still followed"
        for e in files[40:]:  # a part of the directory not cached (past the windows looked at)
            plain.discard(e.content_hash or "", "")
        looked.clear()
        for e in files[40:44]:
            p.opened(e)
        p.close(finish=True)
        # f40 (missing) restarts the runs; f41 is the 2nd in order, f42 the 3rd: looks ahead again
        assert looked == ["f42", "f43"]
        assert all(plain.has(e.content_hash or "", "") for e in files[43:74]), "nothing was fetched ahead"


def test_an_open_tells_the_prefetcher_before_the_copy_is_made(tmp_path: Path) -> None:
    """On a kernel without FUSE's no-open mode an OPEN makes the file's copy: the prefetcher is told
    first, else every file opened looked cached to it and the in-order prefetcher went quiet on a
    cold cache for good."""
    from cernvm_build.cvmfs import fuse_inodes
    from cernvm_build.cvmfs import fuse_lowlevel as ll
    from cernvm_build.cvmfs.fuse import Serving

    with _published(
        tmp_path, "open.cernvm.test", _small_dirs(tmp_path, n=1), cache_dir=tmp_path / "c"
    ) as repo:
        assert repo.store.cache is not None
        plain = repo.store.plain_cache = PlainCache(repo.store.cache.root)
        fs = fuse_inodes.InodeFilesystem(repo, serving=Serving(prefetch_in_order=True))
        fs.init(ll.Conn(ll.DEFAULT_WANT, ll.DEFAULT_WANT, 1 << 20, 31))  # no FUSE_CAP_NO_OPEN_SUPPORT
        entry = repo.stat("/top/d0/f0")
        fs._entries[entry.inode] = entry
        seen: list[bool] = []
        fs._prefetch.opened = lambda e: seen.append(plain.has(e.content_hash or "", ""))  # type: ignore[method-assign]
        fs.open(7, entry.inode, ll.FileInfo(flags=os.O_RDONLY))
        assert seen == [False], "the prefetcher was told of the open after the copy was made"
        assert plain.has(entry.content_hash or "", "")
        fs.destroy()


def test_a_cold_pyc_is_fetched_with_its_source_in_one_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``InOrderPrefetcher._fold``: Python reads a ``.py`` right after its pyc when the pyc checks its
    source's hash (Debian's under SOURCE_DATE_EPOCH), so a cold open of ``__pycache__/m.*.pyc``
    sends its request and its source's in one pipelined send; the read of each takes what was
    fetched (no second request), each object hash-checked (a damaged source fails alone, at its
    own read). After PYC_UNCHECKED pycs that do not check their source, no more are folded; an
    open of a cached file folds nothing."""
    from cernvm_build.cvmfs import fuse
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.publish import create_repository, publish_tree
    from cernvm_build.cvmfs.serve import serve

    checked, stamped = b"\xa7\x0d\x0d\x0a\x03\x00\x00\x00", b"\xa7\x0d\x0d\x0a\x00\x00\x00\x00"
    tree = tmp_path / "tree"
    (tree / "d" / "__pycache__").mkdir(parents=True)
    for m, head in (
        ("a", checked),
        ("b", checked),
        ("c", stamped),
        ("e", checked),
        ("f", checked),
        ("g", checked),
    ):
        (tree / "d" / f"{m}.py").write_bytes(f"# module {m}\n".encode() * 20)
        (tree / "d" / "__pycache__" / f"{m}.cpython-311.pyc").write_bytes(head + m.encode() * 200)
    fqrn = "fold.cernvm.test"
    keys = generate_keys(fqrn)
    keys.save(tmp_path / "keys")
    create_repository(tmp_path / "srv" / fqrn, fqrn, keys)
    publish_tree(tmp_path / "srv" / fqrn, fqrn, keys, tree)
    pub = tmp_path / "keys" / f"{fqrn}.pub"
    monkeypatch.setattr(fuse, "PYC_UNCHECKED", 1)
    monkeypatch.setattr(fuse, "DENSE_FILES", 0)  # the fold alone (a dense __pycache__: see _dense)
    with (
        serve(tmp_path / "srv") as srv,
        open_repository(srv.repo_url(), public_keys=[pub], cache_dir=tmp_path / "c") as repo,
    ):
        assert repo.store.cache is not None
        plain = repo.store.plain_cache = PlainCache(repo.store.cache.root)
        repo.store.cache.hold(), plain.hold()  # as the daemon does

        def entry(path: str):  # type: ignore[no-untyped-def]
            e = repo.lookup(path)
            assert e is not None
            return e

        def cached(path: str) -> bool:
            return plain.has(entry(path).content_hash or "", "")

        sent: list[int] = []
        real_send = http1.Connection.send
        monkeypatch.setattr(
            http1.Connection, "send", lambda c, t, *a: sent.append(len(t)) or real_send(c, t, *a)
        )
        p = fuse.InOrderPrefetcher(repo)
        pyc = entry("/d/__pycache__/a.cpython-311.pyc")
        p.opened(pyc)
        assert sent == [2] and cached("/d/a.py") and p._pending == set()
        assert repo.whole(pyc) == (tree / "d" / "__pycache__" / "a.cpython-311.pyc").read_bytes()
        assert repo.read("/d/a.py") == (tree / "d" / "a.py").read_bytes()
        assert sent == [2], "a folded file was fetched again"
        p.opened(pyc)  # cached now: nothing
        assert sent == [2]
        # a damaged source: the pyc is served, the source fails at its own read
        victim = entry("/d/b.py")
        next((tmp_path / "srv").rglob((victim.content_hash or "")[2:])).write_bytes(b"tampered")
        p.opened(entry("/d/__pycache__/b.cpython-311.pyc"))
        assert sent[1:] == [2] and cached("/d/__pycache__/b.cpython-311.pyc") and not cached("/d/b.py")
        with pytest.raises(IntegrityError, match="hash mismatch"):
            repo.read(victim)
        # a pyc that does not check its source (a timestamp one): after PYC_UNCHECKED, none folded
        del sent[:]
        p.opened(entry("/d/__pycache__/c.cpython-311.pyc"))
        assert sent == [2] and p._pyc_unchecked == 1
        p.opened(entry("/d/__pycache__/e.cpython-311.pyc"))
        assert sent == [2] and not cached("/d/e.py")
        p.close()
        # the daemon's: the source's entry from the FUSE layer's LOOKUPs (by inode), no catalog query
        source = entry("/d/f.py")
        q = fuse.InOrderPrefetcher(repo, {source.inode: source})
        monkeypatch.setattr(repo, "lookup_normal", lambda path: pytest.fail(f"a catalog query for {path}"))
        del sent[:]
        q.opened(entry("/d/__pycache__/f.cpython-311.pyc"))
        assert sent == [2] and cached("/d/f.py")
        q.opened(entry("/d/__pycache__/g.cpython-311.pyc"))  # its source not looked up: not folded
        assert sent == [2] and not cached("/d/g.py")
        q.close()


def test_a_directory_opened_cold_here_and_there_has_its_other_small_files_fetched_once_dense(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``InOrderPrefetcher._dense``: a boot reads some directories almost whole but not in name
    order (systemd's units, a package's modules by import): once a directory's cold opens are
    DENSE_MISSES (3) and DENSE_SHARE/10 of its small files, the rest of them are fetched ahead (each
    hash-checked: a damaged one fails at its own read), once; a directory of more than DENSE_FILES
    small files, or one read only here and there, gets nothing fetched ahead."""
    from cernvm_build.cvmfs import fuse

    monkeypatch.setattr(fuse, "DENSE_FILES", 12)
    monkeypatch.setattr(fuse, "DENSE_SHARE", 3)  # 3 of 10 (the shipped share: 5, see the constant)
    tree = tmp_path / "tree"
    for d, n in (("units", 10), ("bin", 13), ("etc", 10), ("few", 4)):
        (tree / d).mkdir(parents=True)
        for k in range(n):
            (tree / d / f"f{k:02}").write_bytes(f"{d} {k} ".encode() * 20)
    with _published(tmp_path, "dense.cernvm.test", tree, cache_dir=tmp_path / "c") as repo:
        assert repo.store.cache is not None
        plain = repo.store.plain_cache = PlainCache(repo.store.cache.root)
        plain.hold()  # as the daemon does

        def files(d: str, n: int) -> list:  # type: ignore[type-arg]
            return [repo.stat(f"/{d}/f{k:02}") for k in range(n)]

        def cached(entries: list) -> list[int]:  # type: ignore[type-arg]
            return [k for k, e in enumerate(entries) if plain.has(e.content_hash or "", "")]

        units, bins, etc, few = files("units", 10), files("bin", 13), files("etc", 10), files("few", 4)
        victim = units[9]
        next((tmp_path / "srv").rglob((victim.content_hash or "")[2:])).write_bytes(b"tampered")
        p = fuse.InOrderPrefetcher(repo)
        for k in (7, 2):  # not in name order; 2 cold opens of 10 files: not dense yet
            p.opened(units[k])
            repo.whole(units[k])
        assert cached(units) == [2, 7] and p._pending == set()
        p.opened(units[4])  # the 3rd: dense, the rest fetched ahead (but the opened one: its reader's)
        p.close(finish=True)
        assert cached(units) == [0, 1, 2, 3, 5, 6, 7, 8], "the rest of a dense directory was not fetched"
        with pytest.raises(IntegrityError, match="hash mismatch"):
            repo.read(victim)
        assert p._cold["/units"][0] == -1 and p._pending == set()
        assert "/units" not in p._dirs, "a listing read for this was kept: in-order runs would follow it"
        p = fuse.InOrderPrefetcher(repo)
        for k in (9, 3, 6, 0, 11):  # more than DENSE_FILES small files: never
            p.opened(bins[k])
        for k in (5, 1):  # 2 of 10: not dense
            p.opened(etc[k])
        for k in (3, 0):  # half of a small directory, but only 2 cold opens (DENSE_MISSES)
            p.opened(few[k])
        p.close(finish=True)
        assert cached(bins) == [] and cached(etc) == [] and cached(few) == []


def test_a_program_opened_cold_has_the_libraries_it_loads_fetched_ahead(tmp_path: Path) -> None:
    """``InOrderPrefetcher._needed``: the dynamic loader opens a program's DT_NEEDED libraries, theirs
    and so on, right after the program, each a round trip of its own: they are fetched ahead as the
    loader finds them (run path with ``$ORIGIN``, the library directories, symbolic links followed),
    each hash-checked (a damaged one fails at its own read); nothing else of their directory, nothing
    for a script or a damaged ELF file, and a library looked at once is not read again."""
    from cernvm_build.cvmfs import fuse
    from tests.support.elfgen import elf_bytes

    tree = tmp_path / "tree"
    lib, app = tree / "usr/lib/x86_64-linux-gnu", tree / "opt/app"
    for d in (lib, tree / "usr/bin", app / "bin", app / "lib"):
        d.mkdir(parents=True)
    files = {
        "usr/bin/prog": elf_bytes(("liba.so.1", "libb.so.2")),
        "usr/bin/script": b"#!/bin/sh\n" + b"echo x\n" * 300,
        "usr/bin/broken": elf_bytes(("liba.so.1",))[:100] + bytes(2000),
        "usr/lib/x86_64-linux-gnu/liba.so.1.0": elf_bytes(("libc.so.6",), soname="liba.so.1"),
        "usr/lib/x86_64-linux-gnu/libb.so.2": elf_bytes(("libc.so.6",), size=3000),
        "usr/lib/x86_64-linux-gnu/libc.so.6": elf_bytes((), size=4000),
        "usr/lib/x86_64-linux-gnu/libunused.so.9": elf_bytes((), size=5000),
        "opt/app/bin/tool": elf_bytes(("libd.so", "libc.so.6"), runpath="$ORIGIN/../lib"),
        "opt/app/lib/libd.so": elf_bytes(("libbad.so",), size=6000),
        "opt/app/lib/libbad.so": elf_bytes((), size=7000),
    }
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
        (tree / rel).chmod(0o755 if "/bin/" in rel else 0o644)
    (lib / "liba.so.1").symlink_to("liba.so.1.0")
    with _published(tmp_path, "needed.cernvm.test", tree, cache_dir=tmp_path / "c") as repo:
        assert repo.store.cache is not None
        plain = repo.store.plain_cache = PlainCache(repo.store.cache.root)
        plain.hold()  # as the daemon does

        def cached() -> set[str]:
            return {rel for rel in files if plain.has(repo.stat(f"/{rel}").content_hash or "", "")}

        victim = repo.stat("/opt/app/lib/libbad.so")
        next((tmp_path / "srv").rglob((victim.content_hash or "")[2:])).write_bytes(b"tampered")
        p = fuse.InOrderPrefetcher(repo)
        for rel in ("usr/bin/script", "usr/bin/broken"):
            p.opened(repo.stat(f"/{rel}"))
        p.close(finish=True)
        assert cached() == {"usr/bin/script", "usr/bin/broken"}, "a script or damaged ELF file fetched more"
        p = fuse.InOrderPrefetcher(repo)
        p.opened(repo.stat("/usr/bin/prog"))
        p.close(finish=True)
        libs = {f"usr/lib/x86_64-linux-gnu/{n}" for n in ("liba.so.1.0", "libb.so.2", "libc.so.6")}
        assert cached() == {"usr/bin/script", "usr/bin/broken", "usr/bin/prog", *libs}
        assert p._pending == set()
        p = fuse.InOrderPrefetcher(repo)
        p.opened(repo.stat("/opt/app/bin/tool"))
        p.close(finish=True)
        assert "opt/app/lib/libd.so" in cached() and "opt/app/lib/libbad.so" not in cached()
        with pytest.raises(IntegrityError, match="hash mismatch"):
            repo.read(victim)
        assert "usr/lib/x86_64-linux-gnu/libunused.so.9" not in cached()


def test_a_unit_opened_cold_has_the_units_systemd_loads_with_it_fetched_ahead(tmp_path: Path) -> None:
    """``InOrderPrefetcher._follow`` on a systemd unit: systemd loads every unit a unit names in its
    dependency and ordering keys, and those linked in its ``.wants`` folder, one after another,
    each a round trip of its own; they are fetched ahead as systemd finds them (``/etc`` before
    ``/usr/lib``, an instance by its template, a socket's service), theirs in turn; not the
    [Install] section's, nor the folder's other units."""
    from cernvm_build.cvmfs import fuse

    tree = tmp_path / "tree"
    usr, etc = tree / "usr/lib/systemd/system", tree / "etc/systemd/system"
    (etc / "multi-user.target.wants").mkdir(parents=True)
    usr.mkdir(parents=True)
    units = {
        "usr/lib/systemd/system/multi-user.target": "[Unit]\nRequires=basic.target\n"
        "After=basic.target rescue.service\n[Install]\nAlias=default.target\nWantedBy=install-only.target\n",
        "usr/lib/systemd/system/basic.target": "[Unit]\nWants=getty@tty1.service\n",
        "usr/lib/systemd/system/getty@.service": "[Unit]\nDescription=Getty\n",
        "usr/lib/systemd/system/rescue.service": "[Unit]\nDescription=shadowed\n",
        "etc/systemd/system/rescue.service": "[Unit]\nDescription=local\n",
        "usr/lib/systemd/system/ssh.socket": "[Socket]\nListenStream=22\n",
        "usr/lib/systemd/system/ssh.service": "[Unit]\nDescription=sshd\n",
        "usr/lib/systemd/system/install-only.target": "[Unit]\n",
        "usr/lib/systemd/system/unrelated.service": "[Unit]\n",
    }
    for rel, text in units.items():
        (tree / rel).write_text(text + "# padding\n" * 20)
    (etc / "multi-user.target.wants/ssh.socket").symlink_to("/usr/lib/systemd/system/ssh.socket")
    with _published(tmp_path, "units.cernvm.test", tree, cache_dir=tmp_path / "c") as repo:
        assert repo.store.cache is not None
        plain = repo.store.plain_cache = PlainCache(repo.store.cache.root)
        plain.hold()  # as the daemon does

        def cached() -> set[str]:
            return {rel for rel in units if plain.has(repo.stat(f"/{rel}").content_hash or "", "")}

        p = fuse.InOrderPrefetcher(repo)
        p.opened(repo.stat("/usr/lib/systemd/system/multi-user.target"))
        p.close(finish=True)
        assert cached() == {
            f"{d}/{n}"
            for d, names in (
                ("usr/lib/systemd/system", ("multi-user.target", "basic.target", "getty@.service")),
                ("usr/lib/systemd/system", ("ssh.socket", "ssh.service")),
                ("etc/systemd/system", ("rescue.service",)),
            )
            for n in names
        }
        assert p._pending == set()
