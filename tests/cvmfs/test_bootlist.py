"""The boot list (``cvmfs/bootlist.py``): the real mount daemon over the fixture served by HTTP,
the server's own log says what was fetched and when."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.cvmfs import bootlist
from cernvm_build.cvmfs.quota import Quota
from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.cvmfs.revision import Repository
from cernvm_build.cvmfs.serve import Server
from cernvm_build.cvmfs.store import Phases

from .conftest import FQRN, Fixture

pytestmark = pytest.mark.integration


class _Requests(logging.Handler):
    """The paths the server was asked for (its request log), in order."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.paths: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if '"GET ' in line:
            self.paths.append(line.split('"GET ', 1)[1].split(" ", 1)[0])

    def objects(self) -> set[str]:
        """Object names (hash + suffix) asked for."""
        return {p.split("/data/", 1)[1].replace("/", "") for p in list(self.paths) if "/data/" in p}


@pytest.fixture
def requests() -> Iterator[_Requests]:
    logger = logging.getLogger("cernvm_build.cvmfs.serve")
    handler, level = _Requests(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _catalogs(fx: Fixture) -> list[str]:
    """Object names of revision 2's catalogs (a boot's trace names those it opened)."""
    with open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub]) as repo:
        return [cat.name + "C" for cat in repo.catalogs()]


def _file_objects(fx: Fixture) -> dict[str, str]:
    """Object name -> one path of revision 2 whose contents it is (small whole files)."""
    with open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub]) as repo:
        names = {r.name + r.suffix for cat in repo.catalogs() for r in cat.objects() if r.suffix == ""}
    found: dict[str, str] = {}
    with open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub]) as repo:
        for path, want in fx.listing(2).items():
            if want["type"] == "file" and 0 < want["size"] < 1 << 20:
                e = repo.lookup(path)
                if e is not None and e.content_hash in names and not e.chunks:
                    found.setdefault(e.content_hash, path)
    return found


def _mount(server: Server, fx: Fixture, mnt: Path, cache: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", server.repo_url()]
    cmd += ["--public-key", str(fx.pub), "--cache", str(cache), *extra, str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _wait_for(requests: _Requests, names: set[str], seconds: float = 20) -> set[str]:
    """The names not asked for within ``seconds`` (polled: the list runs in the background)."""
    end = time.monotonic() + seconds
    while (left := names - requests.objects()) and time.monotonic() < end:
        time.sleep(0.05)
    return left


def test_listed_objects_arrive_without_an_open_and_an_open_then_fetches_nothing(
    fx: Fixture, server: Server, mnt: Path, tmp_path: Path, requests: _Requests
) -> None:
    files = _file_objects(fx)
    assert len(files) >= 5
    listed = tmp_path / "boot.list"
    names = [*_catalogs(fx), *files]
    listed.write_text("".join(f"{n}\n" for n in names))
    _mount(server, fx, mnt, tmp_path / "cache", "--boot-list", str(listed), "--no-magic-xattrs")
    assert _wait_for(requests, set(names)) == set()
    time.sleep(0.2)  # the last batch's files renamed into place
    before = len(requests.paths)
    for path in files.values():
        (mnt / path.lstrip("/")).read_bytes()
    assert [p for p in requests.paths[before:] if "/data/" in p] == []
    # the files' inflated copies were made directly, with no compressed copy beside them
    root = tmp_path / "cache" / FQRN
    for name in files:
        assert (root / "plain" / name[:2] / name[2:]).is_file(), name
        assert not (root / "data" / name[:2] / name[2:]).exists(), name


def test_garbage_unknown_names_and_a_damaged_object_still_mount_and_serve(
    fx: Fixture, server: Server, mnt: Path, tmp_path: Path, requests: _Requests
) -> None:
    files = _file_objects(fx)
    names = list(files)
    damaged, good = names[0], names[1:]
    fx.object(damaged).write_bytes(b"not the object")
    absent = "0" * 40
    listed = tmp_path / "boot.list"
    lines = [
        "garbage line",
        absent,
        "\xff\xfe",
        f"{absent}T",
        damaged,
        "",
        *_catalogs(fx),
        *good,
        "data/zz/nothing",
    ]
    listed.write_text("\n".join(lines) + "\n", errors="surrogateescape")
    _mount(server, fx, mnt, tmp_path / "cache", "--boot-list", str(listed))
    assert _wait_for(requests, set(good)) == set()
    time.sleep(0.3)  # the list's last batch done
    # a name no catalog of the revision knows (an older revision's) is skipped, not asked for
    assert absent not in requests.objects()
    assert damaged in requests.objects()  # asked for, its hash fails, not kept
    # once, in its batch: not again alone (a reader of a later object of the batch would wait)
    assert sum(1 for p in requests.paths if p.endswith(f"/data/{damaged[:2]}/{damaged[2:]}")) == 1
    assert not (tmp_path / "cache" / FQRN / "plain" / damaged[:2] / damaged[2:]).exists()
    path = files[good[0]]
    assert (mnt / path.lstrip("/")).stat().st_size == fx.listing(2)[path]["size"]
    assert len((mnt / path.lstrip("/")).read_bytes()) == fx.listing(2)[path]["size"]


def test_a_missing_list_file_still_mounts(fx: Fixture, server: Server, mnt: Path, tmp_path: Path) -> None:
    _mount(server, fx, mnt, tmp_path / "cache", "--boot-list", str(tmp_path / "nope.list"))
    assert (mnt / "etc").is_dir()


def test_parse_skips_and_counts_bad_lines_and_is_bounded() -> None:
    a, b = "a" * 40, "b" * 40 + "-rmd160"
    got = bootlist.parse([a, f"{a}C", "x", f"{b}P", a, f"{a}T", f"{a}Q", "  ", "# a comment", None])
    assert [(str(h), s) for h, s in got.names] == [(a, ""), (a, "C"), (b, "P")]
    assert (got.bad, got.fqrn) == (4, None)
    many = [f"{i:040x}" for i in range(bootlist.MAX_NAMES + 5)]
    assert len(bootlist.parse(many).names) == bootlist.MAX_NAMES
    head = bootlist.parse([bootlist.header(FQRN, 7, "c" * 40), a])
    assert (head.fqrn, head.revision, head.root_hash, len(head.names), head.bad) == (FQRN, 7, "c" * 40, 1, 0)
    assert bootlist.parse(["# other.repo", a]).fqrn == "other.repo"
    # a header only of the header's shape: a comment on line 1 is no repository
    assert [bootlist.parse([c, a]).fqrn for c in ("# my boot list", "# my", "# x.y z")] == [None] * 3
    long_fqrn = "atlas-nightlies-testing.cern.ch"  # with a shake128 root, line 1 is over MAX_LINE
    head = bootlist.parse(
        bootlist._lines(io.BytesIO(f"{bootlist.header(long_fqrn, 12345, a + '-shake128')}{a}\n".encode()))
    )
    assert (head.fqrn, head.root_hash, head.bad, len(head.names)) == (long_fqrn, a + "-shake128", 0, 1)
    # a header giving only a revision still counts as moved when the revision differs
    only_rev = bootlist.parse([bootlist.header(FQRN, 7)])
    assert bootlist.moved(only_rev, 8, "d" * 40) and not bootlist.moved(only_rev, 7, "d" * 40)
    assert not bootlist.moved(bootlist.parse([a]), 8, "d" * 40)


def test_a_hostile_list_file_is_read_within_bounds(tmp_path: Path) -> None:
    """Only the first MAX_BAD bad lines are read (then it is no list); a line over MAX_LINE is
    skipped without being held; a FIFO (no writer: an open would block) and a device are refused
    at once."""
    a = "a" * 40
    junk = tmp_path / "junk.list"
    junk.write_text("x\n" * bootlist.MAX_BAD + f"{a}\n")
    got = bootlist.read(junk)
    assert (got.names, got.bad) == ([], bootlist.MAX_BAD)
    long = tmp_path / "long.list"
    long.write_text(a * 1000 + f"\n{a}\n" + "b" * (bootlist.MAX_LINE + 1) + "\n" + "c" * 40)
    got = bootlist.read(long)
    assert ([str(h) for h, _ in got.names], got.bad) == ([a, "c" * 40], 2)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    errors: list[str] = []

    def read(path: Path) -> None:
        try:
            bootlist.read(path)
        except OSError as e:
            errors.append(f"{path}: {e.strerror}")

    for path in (fifo, Path("/dev/zero")):
        t = threading.Thread(target=read, args=(path,), daemon=True)
        t.start()
        t.join(10)
        if t.is_alive():  # the test's own bound, not a timing: an open of a FIFO blocks forever
            with open(fifo, "wb"):  # let the reader go
                pass
        assert errors[-1:] == [f"{path}: not a regular file"]


def _log_has(log: Path, text: str, seconds: float = 20) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if log.exists() and text in log.read_text():
            return True
        time.sleep(0.05)
    return False


def test_a_list_made_for_another_repository_is_skipped_and_another_revision_is_fetched(
    fx: Fixture, server: Server, mnt: Path, tmp_path: Path, requests: _Requests
) -> None:
    """User data switched the repository: the list's header names another one, so none of its
    names is asked for (one log line). A list of another revision of this repository is fetched,
    but for its catalogs: the mounted revision's are loaded as readers load them."""
    names = list(_file_objects(fx))[:3]
    other = tmp_path / "other.list"
    other.write_text(bootlist.header("other.example.org", 5, "c" * 40) + "".join(f"{n}\n" for n in names))
    log = tmp_path / "log"
    _mount(server, fx, mnt, tmp_path / "cache", "--boot-list", str(other), "--log", str(log))
    assert _log_has(log, "boot list"), log.read_text()
    assert "for other.example.org, not the mounted" in log.read_text()
    assert not requests.objects() & set(names)
    subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    older = tmp_path / "older.list"
    blob = b"an older revision's catalog"
    stale = hashlib.sha1(blob).hexdigest()
    fx.object(stale, "C").parent.mkdir(exist_ok=True)
    fx.object(stale, "C").write_bytes(blob)
    listed = [f"{stale}C", *_catalogs(fx), *names]
    older.write_text(bootlist.header(FQRN, 1, "c" * 40) + "".join(f"{n}\n" for n in listed))
    _mount(server, fx, mnt, tmp_path / "cache", "--boot-list", str(older))
    assert _wait_for(requests, set(names)) == set()
    assert f"{stale}C" not in requests.objects()  # it would stay pinned in the cache for ever


def test_stop_does_not_wait_for_a_batch_in_flight(fx: Fixture, server: Server, tmp_path: Path) -> None:
    """Unmount (``stop``) waits at most STOP_WAIT for the list's batch on the way (held 2 s by a
    relay), not until it lands: the daemon exits right after."""
    from bench.bootlist import _relay

    listed = tmp_path / "boot.list"
    listed.write_text("".join(f"{n}\n" for n in list(_file_objects(fx))[:3]))
    hold = 0.0
    with (
        _relay(server.url.split("//", 1)[1], lambda: hold) as url,
        _daemon_repo(url, fx, tmp_path / "cache") as repo,
    ):
        boot = bootlist.BootList(repo, listed)
        hold = 2.0
        boot.start()
        time.sleep(0.2)  # its batch is held by the relay
        boot.stop()
        alive = boot._thread.is_alive()
        boot._thread.join(30)  # before the repository closes under it
    assert alive


def test_a_reader_waits_for_a_listed_object_in_flight_instead_of_fetching_it_again(
    fx: Fixture, server: Server, tmp_path: Path, requests: _Requests
) -> None:
    """The list claims each object of its batch under the key the reader's fetch takes: a reader
    that comes for one while its request is on the way (held 0.3 s by a relay) gets it from the
    cache once it lands; the server is asked for it once."""
    from bench.bootlist import _relay

    name, path = next(iter(_file_objects(fx).items()))
    with _relay(server.url.split("//", 1)[1], 0.3) as url, _daemon_repo(url, fx, tmp_path / "cache") as repo:
        entry = repo.lookup(path)
        assert entry is not None
        listed = tmp_path / "boot.list"
        listed.write_text(f"{name}\n")
        ahead = threading.Thread(target=bootlist.BootList(repo, listed)._fetch_all)
        ahead.start()
        time.sleep(0.1)  # its request is held by the relay
        data = repo.read(entry, 0, entry.size)
        ahead.join()
    assert hashlib.sha1(data).hexdigest() == fx.listing(2)[path]["sha1"]
    assert sum(1 for p in requests.paths if p.endswith(f"/data/{name[:2]}/{name[2:]}")) == 1


def test_objects_among_are_the_catalog_rows_of_those_hashes_in_batches(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boot list's sizes come from SQL-filtered rows: the same refs ``objects`` gives for those
    hashes (files and chunks), whatever the ``IN`` batches."""
    from cernvm_build.cvmfs import catalog

    monkeypatch.setattr(catalog, "IN_BATCH", 3)
    with open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub]) as repo:
        for cat in repo.catalogs():
            every = set(cat.objects())
            picked = sorted(every, key=lambda r: (r.name, r.suffix))[::2]
            digests = sorted({bytes.fromhex(r.name[:40]) for r in picked})
            got = set(cat.objects_among([*digests, b"\0" * 20]))
            assert got == {r for r in every if bytes.fromhex(r.name[:40]) in set(digests)}
            assert picked and {r.suffix for r in every} <= {"", "P"}


@contextlib.contextmanager
def _daemon_repo(url: str, fx: Fixture, cache: Path) -> Iterator[Repository]:
    """The repository as the mount daemon opens it (inflated copies, both caches held)."""
    repo = open_repository(
        f"{url}/cvmfs/{FQRN}", fqrn=FQRN, public_keys=[fx.pub], cache_dir=cache, inflated=True
    )
    try:
        assert repo.store.cache is not None and repo.store.plain_cache is not None
        repo.store.cache.hold()
        repo.store.plain_cache.hold()
        yield repo
    finally:
        repo.close()


def test_absent_names_are_asked_for_once_and_the_list_gives_up(
    fx: Fixture, server: Server, tmp_path: Path, requests: _Requests, caplog: pytest.LogCaptureFixture
) -> None:
    """Names the server lacks (a list of a repository's former catalogs): each is asked for once
    in its batch, never again alone, and after GIVE_UP batches that fetched nothing the list stops
    with one log line, whatever is left."""
    absent = [f"{i:040x}C" for i in range(1, 3 * bootlist.BATCH + 1)]
    listed = tmp_path / "boot.list"
    listed.write_text("".join(f"{n}\n" for n in absent))
    with _daemon_repo(server.url, fx, tmp_path / "cache") as repo, caplog.at_level(logging.WARNING):
        before = len(requests.paths)
        boot = bootlist.BootList(repo, listed)
        boot._run()
    asked = [p.split("/data/", 1)[1].replace("/", "") for p in requests.paths[before:] if "/data/" in p]
    assert sorted(asked) == absent[: bootlist.GIVE_UP * bootlist.BATCH]
    assert boot.counts["failed"] == bootlist.GIVE_UP * bootlist.BATCH
    assert "batches in a row fetched nothing: stopped" in caplog.text


def test_a_full_disk_is_raised_without_asking_again(
    fx: Fixture, server: Server, tmp_path: Path, requests: _Requests, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache's own OSError (ENOSPC while a listed object is stored) is no transport error: no
    object of the batch is asked for again (each once at most, in the pipeline), the claims are given back
    and the error reaches the list, which stops (``BootList._fetch_all``)."""
    names = list(_file_objects(fx))[: bootlist.BATCH]
    with _daemon_repo(server.url, fx, tmp_path / "cache") as repo:
        assert repo.store.cache is not None

        def full(*_: object, **__: object) -> Path:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(repo.store.cache, "store", full)
        before = len(requests.paths)
        with pytest.raises(OSError, match="No space left"):
            repo.store.fetch_stored_many([bootlist.parse_name(n) for n in names], limit=1 << 20)
        assert not repo.store._key_locks
    asked = [p for p in requests.paths[before:] if "/data/" in p]
    assert 0 < len(asked) == len(set(asked)) <= len(names), asked  # the server may answer fewer: cut off


def test_a_full_disk_while_writing_inflated_copies_gives_every_claim_back(
    fx: Fixture, server: Server, tmp_path: Path, requests: _Requests, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain cache's full disk while a batch's first object is written (``fetch_ahead_many``, the
    list's files) fails the batch's objects (pr28a: no OSError out of the prefetcher; rv27b), and
    every claim of the batch, the written one's and those not reached yet, is given back: a reader
    of any of them makes it itself, not waits for ever."""
    with _daemon_repo(server.url, fx, tmp_path / "cache") as repo:
        plain = repo.store.plain_cache
        assert plain is not None
        items = []
        for name, path in list(_file_objects(fx).items())[: bootlist.BATCH]:
            e = repo.lookup(path)
            assert e is not None
            items.append((name, "", e.size, e.compressed, "listed object"))

        def full(*_: object, **__: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(plain, "put", full)
        assert repo.store.fetch_ahead_many(items, keep=False, retry=False) == (0, len(items))
        assert not repo.store._key_locks
        assert len(requests.objects()) > 1  # a pipelined batch was in flight
        assert repo.store.plain_full  # the prefetcher makes nothing ahead from now on


def test_the_list_stops_once_the_cache_size_limit_evicts(fx: Fixture, server: Server, tmp_path: Path) -> None:
    """With a size limit the list's own objects would push out, the list stops at the first
    eviction instead of evicting what the boot read (or its own first objects) to fetch more."""
    files = list(_file_objects(fx))
    assert len(files) > 2 * bootlist.BATCH
    listed = tmp_path / "boot.list"
    listed.write_text("".join(f"{n}\n" for n in [*_catalogs(fx), *files]))
    with _daemon_repo(server.url, fx, tmp_path / "cache") as repo:
        cache, plain = repo.store.cache, repo.store.plain_cache
        assert cache is not None and plain is not None
        quota = Quota(cache.root, 1)  # any file stored is over it
        quota.scan()
        cache.on_use = plain.on_use = quota.used
        repo.store.quota = quota
        boot = bootlist.BootList(repo, listed)
        boot._run()
    assert quota.evicted.files > 0
    assert 0 < boot.counts["fetched"] <= bootlist.BATCH + len(_catalogs(fx))  # one batch of files


def test_objects_over_the_item_limit_are_left_to_their_readers_counted_and_logged(
    fx: Fixture,
    server: Server,
    tmp_path: Path,
    requests: _Requests,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listed file over ITEM_LIMIT is not asked for (its reader streams it): it counts as failed,
    in the stats' ``~list-failed`` too, and is logged."""
    files = list(_file_objects(fx))
    listed = tmp_path / "boot.list"
    listed.write_text("".join(f"{n}\n" for n in [*_catalogs(fx), *files]))
    monkeypatch.setattr(bootlist, "ITEM_LIMIT", 0)  # every file object is over it
    with _daemon_repo(server.url, fx, tmp_path / "cache") as repo, caplog.at_level(logging.INFO):
        repo.store.phases = Phases()
        before = len(requests.paths)
        boot = bootlist.BootList(repo, listed)
        boot._run()
    assert not {p.split("/data/", 1)[1].replace("/", "") for p in requests.paths[before:]} & set(files)
    # (the nested catalogs, fetched whole, are over a limit of 0 too)
    assert boot.counts["failed"] >= len(files)
    assert repo.store.phases["list-failed"][0] == boot.counts["failed"]
    assert caplog.text.count(": left to its reader") == len(files)
