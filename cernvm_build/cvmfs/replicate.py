"""Stratum-1 replication: a verified, incremental, resumable copy of a repository into a directory.

What a replica promises its readers, and how:
- *Verified*: the source's signature chain is checked with the master key (``open_on_store``: the
  reader's own chain check), and every object is hashed while it streams into a temporary sibling;
  only a matching one is renamed under its name. Catalogs, the history and the certificate go
  through the reader's object store, whose cache is the replica itself (same layout, same check).
- *Never half*: the signed files are written last, after every object their revisions name is on
  disk (and fsynced): a reader of the replica sees the old revision or the new one, never a manifest
  that names a missing object. While it runs, ``.cvmfs_is_snapshotting`` says so (as on a real
  Stratum-1); ``.cvmfs_last_snapshot`` records when the last one finished.
- *Incremental and resumable*: an object already on disk is complete (it only ever appears by
  rename), so it is skipped; a killed run leaves objects, temporaries and no new manifest, and the
  next run sweeps the temporaries and fetches what is still missing. Every revision the history
  names (each tag) is walked, so every tag stays mountable from the replica.
- *Parallel*: data objects are fetched by a bounded pool (kept-alive connections per thread) while
  the catalogs are read in order; at most ``4 * jobs`` transfers wait at any time.
- One replication per directory at a time: the publisher's lock (``data/txn/publish.lock``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CvmfsError, IntegrityError
from ..fsutil import PendingSync, atomic_file, atomic_write
from ..report import NULL_REPORTER, Reporter
from . import manifest as manifest_mod
from .cache import ObjectCache
from .catalog import Catalog, ObjectRef
from .fetch import Fetcher, NotFound, make_fetcher
from .limits import MAX_CATALOG_BYTES, MAX_METAINFO_BYTES, MAX_NESTING, MAX_REFLOG_BYTES
from .lock import publish_lock
from .objects import (
    SUFFIX_CATALOG,
    SUFFIX_CERTIFICATE,
    SUFFIX_HISTORY,
    SUFFIX_METAINFO,
    new_hasher,
    parse_hash,
)
from .repository import MANIFEST_FILE, WHITELIST_FILE, Repository, _fqrn_from_source, open_on_store
from .store import ObjectStore, stored_limit

REFLOG_FILE = ".cvmfsreflog"
SNAPSHOTTING_FILE = ".cvmfs_is_snapshotting"
LAST_SNAPSHOT_FILE = ".cvmfs_last_snapshot"


@dataclass
class ReplicateResult:
    fqrn: str
    revision: int
    root_hash: str
    tags: list[str] = field(default_factory=list)
    revisions: int = 0  # distinct root catalogs walked (trunk + tags)
    catalogs: int = 0
    objects_fetched: int = 0
    objects_skipped: int = 0
    bytes_fetched: int = 0
    previous_revision: int | None = None  # the replica's before this run (None: there was none)

    def as_json(self) -> dict[str, object]:
        return {
            "fqrn": self.fqrn,
            "revision": self.revision,
            "root_hash": self.root_hash,
            "previous_revision": self.previous_revision,
            "tags": self.tags,
            "revisions": self.revisions,
            "catalogs": self.catalogs,
            "objects_fetched": self.objects_fetched,
            "objects_skipped": self.objects_skipped,
            "bytes_fetched": self.bytes_fetched,
        }


class _ReplicaCache(ObjectCache):
    """The replica as the store's cache; inflated catalogs go to ``data/txn`` (never served as
    objects, swept by the next run if this one is killed)."""

    def scratch(self) -> Path:
        base = self.root / "data" / "txn"
        base.mkdir(parents=True, exist_ok=True)
        path = base / f"replicate-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir()
        return path


def fetch_verified(
    fetcher: Fetcher,
    relpath: str,
    dest: Path,
    *,
    algorithm: str,
    hex_digest: str,
    limit: int | None,
    what: str,
    durable: bool = True,
) -> int:
    """``relpath`` from the source into ``dest`` if its bytes hash to ``hex_digest``: streamed into a
    temporary sibling, renamed only when it matches (fsynced unless ``durable=False``: the caller
    makes it durable later). The stored size."""

    def consume(blocks: Iterator[bytes]) -> int:
        hasher = new_hasher(algorithm)
        got = 0
        with atomic_file(dest, durable=durable) as f:
            for block in blocks:
                hasher.update(block)
                f.write(block)
                got += len(block)
            actual = hasher.hexdigest()
            if actual != hex_digest:
                raise IntegrityError(
                    f"{what}: content hash mismatch (got {actual})",
                    hint="the source or a proxy delivered damaged or tampered data; it was not stored "
                    "and the replica's manifest was not changed",
                )
        return got

    return fetcher.fetch(relpath, consume, what=what, limit=limit)


class _Transfers:
    """A bounded pool of object downloads into the replica; the first failure stops the rest."""

    def __init__(self, fetcher: Fetcher, dest: Path, fqrn: str, jobs: int, pending: PendingSync):
        self.fetcher = fetcher
        self.dest = dest
        self.dest_text = str(dest)
        self.pending = pending
        self.fqrn = fqrn
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="replicate")
        self.slots = threading.Semaphore(4 * max(1, jobs))
        self.lock = threading.Lock()
        self.inflight: set[str] = set()
        self.error: BaseException | None = None
        self.fetched = 0
        self.skipped = 0
        self.bytes = 0

    def add(self, ref: ObjectRef, what: str) -> None:
        if self.error is not None:
            raise self.error
        key = ref.name + ref.suffix
        h = parse_hash(ref.name)
        rel = h.path(ref.suffix)
        # Only this (the walking) thread adds, so the check needs no lock around the stat; plain
        # strings, not pathlib: this runs once per object of every revision, and competes with the
        # transfers for the interpreter.
        with self.lock:
            if key in self.inflight:
                return
        if os.path.exists(f"{self.dest_text}/{rel}"):
            self.skipped += 1
            return
        with self.lock:
            self.inflight.add(key)
        self.slots.acquire()

        def run() -> None:
            try:
                target = self.dest / rel
                n = fetch_verified(
                    self.fetcher,
                    rel,
                    target,
                    algorithm=h.algorithm,
                    hex_digest=h.hex,
                    limit=stored_limit(ref.size, ref.compressed, None),
                    what=f"{self.fqrn}: {what} {key}",
                    durable=False,
                )
                self.pending.add(target)
                with self.lock:
                    self.fetched += 1
                    self.bytes += n
            finally:
                with self.lock:
                    self.inflight.discard(key)
                self.slots.release()

        fut: Future[None] = self.pool.submit(run)
        fut.add_done_callback(self._done)

    def _done(self, fut: Future[None]) -> None:
        e = fut.exception()
        if e is not None and self.error is None:
            self.error = e

    def finish(self) -> None:
        self.pool.shutdown(wait=True)
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self.error = self.error or CvmfsError("replication stopped")
        self.pool.shutdown(wait=True, cancel_futures=True)


def _sweep(dest: Path) -> None:
    """Temporaries a killed run left: half-written objects (``data/XX/.*.tmp``) and scratch."""
    data = dest / "data"
    if not data.is_dir():
        return
    for sub in data.iterdir():
        if len(sub.name) == 2 and sub.is_dir():
            for tmp in sub.glob(".*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    for scratch in (data / "txn").glob("replicate-*"):
        shutil.rmtree(scratch, ignore_errors=True)


def _now() -> bytes:
    """The time as ``date --utc`` writes it (what a real Stratum-1 puts in its snapshot markers)."""
    return time.strftime("%a %b %d %H:%M:%S UTC %Y\n", time.gmtime()).encode()


def _replica_manifest(dest: Path, fqrn: str) -> manifest_mod.Manifest | None:
    try:
        data = (dest / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        return None
    where = f"{dest / MANIFEST_FILE}"
    m = manifest_mod.parse(manifest_mod.split_signed(data, where).body, where)
    if m.fqrn != fqrn:
        raise CvmfsError(
            f"{where}: the directory holds repository {m.fqrn!r}, not {fqrn!r}",
            hint="replicate each repository into its own directory",
        )
    return m


def replicate(
    source: str | Path | Sequence[str],
    dest: Path,
    *,
    public_keys: Sequence[Path | bytes],
    fqrn: str | None = None,
    proxy: str | None = None,
    jobs: int = 8,
    timeout: float = 10,
    retries: int = 2,
    reporter: Reporter = NULL_REPORTER,
) -> ReplicateResult:
    """Bring the Stratum directory ``dest`` up to ``source``'s verified trunk and every tagged
    revision; the signed files are replaced last. Raises (leaving the replica's old revision
    published) on any bad signature, hash or transfer."""
    name = fqrn or _fqrn_from_source(source)
    if not name:
        raise CvmfsError(f"cannot tell the repository name from {source!r}", hint="pass --fqrn NAME")
    dest.mkdir(parents=True, exist_ok=True)
    previous = _replica_manifest(dest, name)
    with publish_lock(dest, "replicate"):
        _sweep(dest)
        for i in range(256):
            (dest / "data" / f"{i:02x}").mkdir(parents=True, exist_ok=True)
        atomic_write(dest / SNAPSHOTTING_FILE, _now(), durable=False)
        try:
            fetcher = make_fetcher(source, repo=name, proxy=proxy, timeout=timeout, retries=retries)
            store = ObjectStore(fetcher, _ReplicaCache(dest, repo=name), repo=name)
            try:
                repo = open_on_store(name, fetcher, store, public_keys)
            except BaseException:
                store.close()
                raise
            try:
                return _replicate(repo, fetcher, store, dest, name, previous, jobs, reporter)
            finally:
                repo.close()
        finally:
            # "in progress" only while it is: a failed run leaves the old revision, not a marker
            (dest / SNAPSHOTTING_FILE).unlink(missing_ok=True)


def _replicate(
    repo: Repository,
    fetcher: Fetcher,
    store: ObjectStore,
    dest: Path,
    name: str,
    previous: manifest_mod.Manifest | None,
    jobs: int,
    reporter: Reporter,
) -> ReplicateResult:
    m = repo.manifest
    assert m is not None
    if previous is not None and previous.revision > m.revision:
        raise IntegrityError(
            f"{name}: the source offers revision {m.revision}, older than the replica's {previous.revision}",
            hint="a stale or rolled-back source; replicate from the Stratum-0 (or a newer Stratum-1)",
        )
    result = ReplicateResult(
        name, m.revision, m.root_hash, previous_revision=previous.revision if previous else None
    )
    roots: dict[str, tuple[int | None, str]] = {m.root_hash: (m.root_size or None, "trunk")}
    for tag in repo.tags():
        result.tags.append(tag.name)
        try:
            root = str(parse_hash(tag.root_hash))
        except ValueError as e:
            raise CvmfsError(
                f"{name}: tag {tag.name!r} in history {m.history_hash}H: "
                f"{tag.root_hash!r} is not a root hash",
                hint="the history database is damaged",
            ) from e
        roots.setdefault(root, (tag.size or None, f"tag {tag.name}"))
    result.revisions = len(roots)
    reporter.step(
        f"{name}: revision {m.revision} from {fetcher.description}: trunk and {len(result.tags)} tag(s), "
        f"{len(roots)} distinct revision(s)"
        + (f"; the replica has revision {previous.revision}" if previous else "; new replica")
    )
    if m.metainfo_hash:
        store.raw(m.metainfo_hash, SUFFIX_METAINFO, what="meta-information", limit=MAX_METAINFO_BYTES)
    # Objects are made durable together before the manifest names them: a few fsynced one by one,
    # a big replication with one syncfs (one fsync per object cost as much as the transfers).
    pending = PendingSync(dest)
    for ref_hash, suffix in (
        (m.certificate_hash, SUFFIX_CERTIFICATE),
        (m.history_hash, SUFFIX_HISTORY),
        (m.metainfo_hash, SUFFIX_METAINFO),
    ):
        if ref_hash:
            pending.add(dest / parse_hash(ref_hash).path(suffix))
    transfers = _Transfers(fetcher, dest, name, jobs, pending)
    seen: set[str] = set()
    try:
        for root, (size, label) in roots.items():
            stack: list[tuple[str, int | None, str, int]] = [(root, size, "", 0)]
            while stack:
                cat_hash, cat_size, prefix, depth = stack.pop()
                if cat_hash in seen:  # shared with a revision walked already, subtree and all
                    continue
                seen.add(cat_hash)
                if depth > MAX_NESTING:
                    raise CvmfsError(f"{name}: {label}: catalogs nest deeper than {MAX_NESTING}")
                what = f"{label}: catalog {prefix or '/'}"
                path = store.plain_file(
                    cat_hash, SUFFIX_CATALOG, size=cat_size, what=what, cap=MAX_CATALOG_BYTES
                )
                cat = Catalog(path, name=cat_hash, where=name, depth=depth)
                try:
                    if cat.root_prefix != prefix:
                        raise IntegrityError(
                            f"{name}: {what} {cat_hash}C: its root prefix is {cat.root_prefix or '/'!r}, "
                            f"expected {prefix or '/'!r}",
                            hint="the catalog hierarchy is inconsistent; the repository is damaged",
                        )
                    stack.extend((r.hash, r.size or None, r.path, depth + 1) for r in cat.nested())
                    for ref in cat.objects():
                        transfers.add(ref, f"object of {label} ({prefix or '/'})")
                finally:
                    cat.close()
                path.unlink(missing_ok=True)  # seen: never read again by this run
                pending.add(dest / parse_hash(cat_hash).path(SUFFIX_CATALOG))
                result.catalogs += 1
                reporter.progress("objects", transfers.fetched + transfers.skipped, None)
        transfers.finish()
    except BaseException:
        transfers.abort()
        raise
    # catalogs, history, certificate and meta-information came through the store
    result.objects_fetched = transfers.fetched + store.stats["fetched"]
    result.objects_skipped = transfers.skipped
    result.bytes_fetched = transfers.bytes + store.stats["fetched_bytes"]
    reporter.progress("objects", result.objects_fetched + result.objects_skipped, None)

    pending.sync()
    # Everything the new manifest names is on disk: publish.
    if m.reflog_hash:
        reflog = parse_hash(m.reflog_hash)
        try:
            fetch_verified(
                fetcher,
                REFLOG_FILE,
                dest / REFLOG_FILE,
                algorithm=reflog.algorithm,
                hex_digest=reflog.hex,
                limit=MAX_REFLOG_BYTES,
                what=f"{name}: {REFLOG_FILE}",
            )
        except NotFound:
            reporter.warn(f"{name}: the source has no {REFLOG_FILE} (the manifest names one); left out")
    signed = repo.signed_files
    atomic_write(dest / WHITELIST_FILE, signed[WHITELIST_FILE])
    atomic_write(dest / MANIFEST_FILE, signed[MANIFEST_FILE])
    atomic_write(dest / LAST_SNAPSHOT_FILE, _now())
    reporter.step(
        f"{name}: revision {m.revision} published: {result.objects_fetched} object(s) fetched "
        f"({result.bytes_fetched} bytes), {result.objects_skipped} already there, "
        f"{result.catalogs} catalog(s)"
    )
    return result
