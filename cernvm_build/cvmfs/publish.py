"""Creating repositories and publishing revisions (the Stratum-0 side of CernVM-FS).

A publish runs in three steps, under the repository's lock (``lock.py``):

1. *stage*: the source tree (a directory or a tar stream) is scanned into an on-disk staging
   database (``stage.py``); unchanged files (same size, mtime and mode as in the previous
   revision) keep their old content hashes, the others are compressed and hashed in parallel and
   written as objects (``objwrite.py``). With ``base_path`` the rest of the previous revision is
   copied in unchanged, and nested catalogs outside the path are reused by hash without reading.
2. *build*: catalogs are written bottom-up from the stage (``catalog_write.py``); a nested catalog
   whose entries did not change keeps its old object.
3. *commit*: certificate, history (``history_write.py``), reflog, a file-system sync, and the
   signed manifest LAST, by rename. Until that rename, readers see the previous revision; a
   killed publish leaves only scratch files in ``data/txn`` and the next run completes the job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import queue
import re
import shutil
import signal
import sqlite3
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import CvmfsError, IntegrityError
from ..fsutil import atomic_write
from ..paths import source_date_epoch
from . import manifest as mf
from . import rsa as rsa_raw
from . import whitelist as wl
from .catalog_write import (
    DEFAULT_TTL,
    CatalogWriter,
    ChunkRow,
    Counters,
    Entry,
    content_digest,
    serialize_xattrs,
)
from .chunking import ChunkingSettings
from .history_write import RESERVED, HistoryWriter, Tag, auto_tag_name
from .keys import KeySet, check_fqrn
from .lock import publish_lock
from .objwrite import SMALL, ObjectWriter, StoredFile, _SizeChanged
from .previous import OldCatalog, OldRow, PreviousTree, read_object
from .stage import NestedRef, Stage, Staged

#: Set to a step name to kill the publishing process right after that step (tests of atomicity):
#: ``scanned``, ``objects`` (the first file content stored), ``staged``, ``catalogs``, ``history``,
#: ``reflog``.
FAULT_ENV = "CERNVM_CVMFS_PUBLISH_FAULT"
ZERO_HASH = "0" * 40
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
#: Extended attributes worth publishing: user data and the overlayfs markers DUCC layouts rely on.
XATTR_PREFIXES = ("user.", "trusted.overlay.")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PublishResult:
    revision: int
    root_hash: str
    tag: str | None
    objects_written: int
    bytes_written: int
    files: int
    catalogs: int
    timestamp: int = 0
    catalogs_reused: int = 0
    warnings: tuple[str, ...] = ()


@dataclass
class _Options:
    timestamp: int
    chunking: ChunkingSettings
    normalize_owner: bool
    progress: Progress | None
    warnings: list[str] = field(default_factory=list)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


# -- the repository as it is now ------------------------------------------------------------------


def _read_current(stratum: Path, fqrn: str) -> mf.Manifest:
    """The repository's manifest, after checking its name, hash and signature."""
    path = stratum / ".cvmfspublished"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CvmfsError(
            f"{stratum}: not a repository (no .cvmfspublished)",
            hint=f"create it first with 'cernvm-build cvmfs create {stratum} --fqrn {fqrn} --keys DIR'",
        ) from None
    signed = mf.split_signed(data, str(path))
    m = mf.parse(signed.body, str(path))
    if m.fqrn != fqrn:
        raise CvmfsError(
            f"{path}: repository is {m.fqrn!r}, not {fqrn!r}", hint="pass the repository's own name"
        )
    if mf.body_hash(signed.body, m.algorithm) != signed.hash_text:
        raise IntegrityError(f"{path}: manifest body does not match its hash (damaged file)")
    if m.certificate_hash:
        cert_pem = read_object(stratum, m.certificate_hash, "X", str(path))
        cert = rsa_raw.load_certificate(cert_pem, f"certificate {m.certificate_hash}")
        rsa_raw.require(
            rsa_raw.verify_pkcs1_sha1(cert.public_key, signed.hash_text.encode(), signed.signature),
            f"{path}: manifest signature does not verify against certificate {m.certificate_hash}",
        )
    return m


def _check_whitelist(stratum: Path, keys: KeySet, opts: _Options) -> None:
    path = stratum / ".cvmfswhitelist"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        opts.warnings.append(f"{path} is missing: clients cannot mount until it is re-signed")
        return
    w = wl.parse(mf.split_signed(data, str(path)).body, str(path))
    if not w.lists(keys.fingerprint()):
        raise CvmfsError(
            f"{path}: certificate {keys.fingerprint()} is not in the whitelist",
            hint="these are not the keys the repository was created with; "
            "or re-sign the whitelist with 'cernvm-build cvmfs resign'",
        )
    if w.expired():
        opts.warnings.append(
            f"{path} expired on {w.expires:%Y-%m-%d}: re-sign it ('cernvm-build cvmfs resign')"
        )


# -- staging ------------------------------------------------------------------------------------


def _norm_base(base_path: str) -> str:
    parts = [p for p in base_path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise CvmfsError(
            f"base path {base_path!r} must not contain '..'", hint="give an absolute path like /a/b"
        )
    return "".join("/" + p for p in parts)


def _check_name(name: str, where: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise CvmfsError(
            f"{where}: file name is not valid UTF-8",
            hint="rename it: CernVM-FS catalogs store names as UTF-8 text",
        ) from None


def _dir_entry(path: str, ts: int) -> Entry:
    return Entry(path=path, mode=stat.S_IFDIR | 0o755, mtime=ts, linkcount=2)


def _entry_from_old(row: OldRow, cat: OldCatalog) -> Entry:
    regular = stat.S_ISREG(row.mode)
    group = row.hardlinks >> 32
    return Entry(
        path=row.path,
        mode=row.mode,
        mtime=row.mtime,
        mtimens=row.mtimens,
        size=row.size,
        uid=row.uid,
        gid=row.gid,
        symlink=row.symlink or "",
        digest=row.digest,
        algorithm=row.algorithm,
        chunks=cat.chunks(row.md5) if regular and row.flags & 64 else (),
        xattrs=row.xattr,
        linkcount=row.hardlinks & 0xFFFFFFFF,
        hardlink_key=f"old:{cat.name}:{group}" if regular and group else None,
        hidden=bool(row.flags & 0x8000),
    )


def _stage_outside(stage: Stage, prev: PreviousTree, base: str) -> None:
    """Copy everything of the previous revision that is not at or below ``base`` into the stage."""
    ancestors = {base[:i] for i in range(len(base)) if base[i] == "/"}  # "", "/a", "/a/b" for /a/b/c

    def walk(cat: OldCatalog, path: str) -> None:
        for row in cat.children(path):
            if row.path == base or row.path.startswith(base + "/"):
                continue
            if row.flags & 2 and row.path in cat.nested:  # nested catalog mountpoint
                if row.path in ancestors:
                    stage.put(_entry_from_old(row, cat))
                    walk(prev.nested_catalog(cat, row.path), row.path)
                else:
                    name, size = cat.nested[row.path]
                    counters = prev.nested_counters(cat, row.path)
                    stage.put(_entry_from_old(row, cat), NestedRef(name, size, counters))
            else:
                stage.put(_entry_from_old(row, cat))
                if stat.S_ISDIR(row.mode):
                    walk(cat, row.path)

    root = prev.root.lookup("")
    if root is not None:
        stage.put(_entry_from_old(root, prev.root))
    walk(prev.root, "")


def _ensure_dirs(stage: Stage, path: str, ts: int) -> None:
    """Create missing directories from the root down to ``path`` (inclusive)."""
    parts = path.split("/")
    for i in range(len(parts)):
        p = "/".join(parts[: i + 1])
        have = stage.get(p)
        if have is None:
            stage.put(_dir_entry(p, ts))
        elif not stat.S_ISDIR(have.entry.mode):
            raise CvmfsError(
                f"{p or '/'} is not a directory in the repository, so nothing can be published below it",
                hint="choose another base path, or replace that entry first",
            )


def _xattrs_of(path: str) -> bytes | None:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return None
    found: dict[str, bytes] = {}
    for n in names:
        if n.startswith(XATTR_PREFIXES):
            with contextlib.suppress(OSError):
                found[n] = os.getxattr(path, n, follow_symlinks=False)
    try:
        return serialize_xattrs(found)
    except ValueError as e:
        raise CvmfsError(
            f"{path}: {e}", hint="CernVM-FS stores at most 255 short attributes per entry"
        ) from e


class _Content:
    """Compresses and stores file contents on a thread pool, then records them in the stage."""

    def __init__(self, store: ObjectWriter, stage: Stage, opts: _Options):
        self.store = store
        self.stage = stage
        self.opts = opts
        self.workers = max(1, min(4, len(os.sched_getaffinity(0))))
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="publish")
        self.pending: dict[Future[StoredFile], str] = {}
        self.done: queue.SimpleQueue[Future[StoredFile]] = queue.SimpleQueue()
        self.results: list[tuple[str, StoredFile]] = []  # recorded in the stage in batches
        self.done_bytes = 0
        self.total_bytes = 0
        self.objects_fault = 0

    def _apply(self, fut: Future[StoredFile]) -> None:
        path = self.pending.pop(fut)
        stored = fut.result()
        self.results.append((path, stored))
        if len(self.results) >= 256:
            self._flush()
        self.done_bytes += stored.size
        if self.opts.progress:
            self.opts.progress(self.done_bytes, self.total_bytes)
        self.objects_fault += 1
        if self.objects_fault == 1:
            _fault("objects")

    def _flush(self) -> None:
        self.stage.set_contents(self.results)
        self.results = []

    def _submit(self, job: Callable[[], StoredFile], repo_path: str) -> None:
        self._wait(4 * self.workers)
        fut = self.pool.submit(job)
        self.pending[fut] = repo_path
        fut.add_done_callback(self.done.put)

    def _wait(self, limit: int) -> None:
        while len(self.pending) > limit:
            self._apply(self.done.get())

    def submit_file(self, repo_path: str, fs_path: str, size: int) -> None:
        def job() -> StoredFile:
            try:
                with open(fs_path, "rb") as f:
                    return self.store.put_stream(f, size, self.opts.chunking)
            except _SizeChanged as e:
                raise CvmfsError(
                    f"{fs_path}: file changed while publishing ({e})", hint="publish again when it is quiet"
                ) from None
            except OSError as e:
                raise CvmfsError(f"{fs_path}: cannot read: {e.strerror}", hint="check permissions") from e

        self._submit(job, repo_path)

    def submit_bytes(self, repo_path: str, data: bytes) -> None:
        def job() -> StoredFile:
            name = self.store.put_bytes(data)
            return StoredFile(bytes.fromhex(name[:40]), (), len(data))

        self._submit(job, repo_path)

    def record(self, repo_path: str, stored: StoredFile) -> None:
        self.stage.set_content(repo_path, stored.digest, stored.chunks)
        self.done_bytes += stored.size
        if self.opts.progress:
            self.opts.progress(self.done_bytes, self.total_bytes)

    def finish(self) -> None:
        try:
            self._wait(0)
            self._flush()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _previous_children(prev: PreviousTree | None, path: str) -> dict[str, tuple[OldRow, OldCatalog]]:
    """The previous revision's entries of directory ``path`` by name (one query per directory)."""
    if prev is None:
        return {}
    cat = prev.catalog_for(path)
    return {row.name: (row, cat) for row in cat.children(path)}


def _unchanged(found: tuple[OldRow, OldCatalog] | None, st: os.stat_result) -> Entry | None:
    """The previous revision's content of a file if its size, mtime and mode are the same."""
    if found is None:
        return None
    row, cat = found
    if (
        row.mode != st.st_mode
        or not stat.S_ISREG(row.mode)
        or row.flags & 128  # external file: no object to reuse
        or row.size != st.st_size
        or row.mtime != st.st_mtime_ns // 1_000_000_000
        or (row.mtimens or 0) != st.st_mtime_ns % 1_000_000_000
    ):
        return None
    if row.digest is None and not row.flags & 64:
        return None
    return _entry_from_old(row, cat)


def _scan_dir(
    stage: Stage, prev: PreviousTree | None, content: _Content, source: Path, base: str, opts: _Options
) -> int:
    """Stage ``source`` as ``base``; returns the number of regular files whose content must be read."""
    try:
        st = os.lstat(source)
    except OSError as e:
        raise CvmfsError(f"{source}: cannot read source: {e.strerror}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise CvmfsError(
            f"{source}: not a directory", hint="publish a directory, a tar file or '-' for stdin"
        )
    # files whose content must be read wait in the stage database, not in a Python list
    stage.db.execute("CREATE TEMP TABLE todo (path TEXT, fs TEXT, size INTEGER)")

    def entry(path: str, fs: str, st: os.stat_result) -> Entry:
        return Entry(
            path=path,
            mode=st.st_mode,
            mtime=st.st_mtime_ns // 1_000_000_000,
            mtimens=st.st_mtime_ns % 1_000_000_000,
            size=st.st_size,
            uid=0 if opts.normalize_owner else st.st_uid,
            gid=0 if opts.normalize_owner else st.st_gid,
            xattrs=_xattrs_of(fs),
        )

    root = entry(base, str(source), st)
    stage.put(root)
    stack = [(str(source), base)]
    while stack:
        fs_dir, repo_dir = stack.pop()
        try:
            it = list(os.scandir(fs_dir))
        except OSError as e:
            raise CvmfsError(
                f"{fs_dir}: cannot list directory: {e.strerror}", hint="check permissions"
            ) from e
        old_children = _previous_children(prev, repo_dir)
        batch: list[Entry] = []
        todo: list[tuple[str, str, int]] = []
        for d in it:
            _check_name(d.name, d.path)
            path = f"{repo_dir}/{d.name}"
            try:
                st = d.stat(follow_symlinks=False)
            except OSError as e:
                raise CvmfsError(f"{d.path}: cannot stat: {e.strerror}") from e
            mode = st.st_mode
            ent = entry(path, d.path, st)
            batch.append(ent)
            if stat.S_ISDIR(mode):
                ent.size = 0
                stack.append((d.path, path))
            elif stat.S_ISLNK(mode):
                target = os.readlink(d.path)
                _check_name(target, d.path)
                ent.symlink = target
            elif stat.S_ISREG(mode):
                if st.st_nlink > 1:
                    ent.hardlink_key = f"{st.st_dev}:{st.st_ino}"
                old = _unchanged(old_children.get(d.name), st)
                if old is not None:
                    ent.digest, ent.chunks, ent.algorithm = old.digest, old.chunks, old.algorithm
                else:
                    todo.append((path, d.path, st.st_size))
            else:  # fifo, socket, char/block device: stored as the server stores them
                ent.size = st.st_rdev if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 0
        stage.put_many(batch)
        stage.db.executemany("INSERT INTO todo VALUES (?, ?, ?)", todo)
    _fault("scanned")
    count, total = stage.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM todo").fetchone()
    content.total_bytes = int(total)
    if opts.progress:
        opts.progress(0, content.total_bytes)
    pending = stage.db.cursor()  # a second cursor: the loop below writes to the stage meanwhile
    for path, fs, size in pending.execute("SELECT path, fs, size FROM todo ORDER BY rowid"):
        content.submit_file(path, fs, size)
    content.finish()
    stage.db.execute("DROP TABLE todo")
    return int(count)


def _tar_path(name: str, base: str) -> str:
    """Repository path of a tar member; refuses names that climb out of the archive."""
    parts: list[str] = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not parts:
                raise CvmfsError(f"tar member {name!r}: path leaves the archive", hint="fix the archive")
            parts.pop()
        else:
            parts.append(p)
    return base + "".join("/" + p for p in parts)


def _scan_tar(stage: Stage, content: _Content, stream: BinaryIO, base: str, opts: _Options) -> None:
    links: list[tuple[str, str]] = []
    where = str(getattr(stream, "name", "tar stream"))
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115 (closed below)
    except tarfile.TarError as e:
        raise CvmfsError(
            f"{where}: not a tar archive ({e})", hint="give a (compressed) tar file or stream"
        ) from e
    try:
        for m in tar:
            path = _tar_path(m.name, base)
            _check_name(path, f"tar member {m.name!r}")
            xattrs: dict[str, bytes] = {}
            for k, v in m.pax_headers.items():
                if k.startswith("SCHILY.xattr.") and k[13:].startswith(XATTR_PREFIXES):
                    xattrs[k[13:]] = v.encode("utf-8", "surrogateescape")
            mt = float(m.mtime)
            ent = Entry(
                path=path,
                mode=m.mode & 0o7777,
                mtime=int(mt),
                mtimens=round((mt - int(mt)) * 1e9) if mt != int(mt) else 0,
                uid=0 if opts.normalize_owner else m.uid,
                gid=0 if opts.normalize_owner else m.gid,
                xattrs=serialize_xattrs(xattrs),
            )
            existing = stage.get(path)
            if existing is not None and stat.S_ISDIR(existing.entry.mode) and not m.isdir():
                stage.remove_tree(path)
            if m.isdir():
                ent.mode |= stat.S_IFDIR
                stage.put(ent)
            elif m.issym():
                ent.mode = stat.S_IFLNK | 0o777
                ent.symlink = m.linkname
                stage.put(ent)
            elif m.islnk():
                target = _tar_path(m.linkname, base)
                ent.mode |= stat.S_IFREG
                ent.hardlink_key = f"tar:{target}"
                stage.put(ent)
                links.append((path, target))
            elif m.isreg():
                ent.mode |= stat.S_IFREG
                ent.size = m.size
                stage.put(ent)
                f = tar.extractfile(m)
                assert f is not None
                content.total_bytes += m.size
                if m.size <= SMALL and not opts.chunking.should_chunk(m.size):
                    content.submit_bytes(path, f.read())
                else:
                    content.record(path, content.store.put_stream(f, m.size, opts.chunking))  # type: ignore[arg-type]
            elif m.ischr() or m.isblk() or m.isfifo():
                ent.mode |= {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK}.get(
                    m.type, stat.S_IFIFO
                )
                ent.size = os.makedev(m.devmajor, m.devminor) if not m.isfifo() else 0
                stage.put(ent)
            else:
                opts.warnings.append(f"tar member {m.name!r}: unsupported type {m.type!r}, skipped")
    except tarfile.TarError as e:
        raise CvmfsError(f"{where}: tar stream is damaged ({e})", hint="check the archive") from e
    finally:
        tar.close()
    content.finish()
    for path, target in links:
        t = stage.get(target)
        if t is None or not stat.S_ISREG(t.entry.mode):
            raise CvmfsError(
                f"tar member {path!r}: hard link to {target!r}, which is not a file in the archive"
            )
        cur = stage.get(path)
        assert cur is not None
        stage.put(replace(cur.entry, digest=t.entry.digest, chunks=t.entry.chunks, size=t.entry.size))
        if t.entry.hardlink_key is None:
            stage.put(replace(t.entry, hardlink_key=f"tar:{target}"))
    # tar streams may leave out directories: create them
    if not stage.has(base):
        _ensure_dirs(stage, base, opts.timestamp)
    while True:
        missing = list(stage.orphans())
        if not missing:
            break
        for p in missing:
            _ensure_dirs(stage, p, opts.timestamp)


# -- building catalogs ----------------------------------------------------------------------------


class _Builder:
    def __init__(
        self,
        stage: Stage,
        store: ObjectWriter,
        prev: PreviousTree | None,
        scratch: Path,
        revision: int,
        timestamp: int,
    ):
        self.stage = stage
        self.store = store
        self.prev = prev
        self.scratch = scratch
        self.revision = revision
        self.timestamp = timestamp
        self.new_catalogs: list[str] = []
        self.reused = 0
        self._n = 0

    def _old_catalog(self, prefix: str) -> OldCatalog | None:
        if self.prev is None:
            return None
        if prefix == "":
            return self.prev.root
        cat = self.prev.catalog_for(prefix)
        return cat if cat.prefix == prefix else None

    def build(self) -> tuple[str, int, Counters]:
        root = self.stage.get("")
        if root is None:
            raise AssertionError("stage has no root entry")
        children = self.stage.children("")
        root.entry.linkcount = 2 + sum(1 for c in children if stat.S_ISDIR(c.entry.mode))
        return self._catalog("", root.entry, children)

    def _catalog(self, prefix: str, root: Entry, children: list[Staged]) -> tuple[str, int, Counters]:
        self._n += 1
        db = self.scratch / f"cat.{self._n}.db"
        old = self._old_catalog(prefix)
        w = CatalogWriter(
            db,
            root_prefix=prefix,
            revision=self.revision,
            last_modified=self.timestamp,
            previous_revision=old.name if old else (None if prefix == "" else ZERO_HASH),
            ttl=DEFAULT_TTL if prefix == "" else None,
        )
        w.add(root, nested_root=prefix != "")
        self._fill(w, children)
        counters = w.finish()
        if old is not None and prefix and content_digest(db) == content_digest(old.db_path):
            self.reused += 1
            db.unlink()
            return old.name, old.size, counters
        size = db.stat().st_size
        name = self.store.put_path(db, "C")
        db.unlink()
        self.new_catalogs.append(name)
        if self.prev is not None:
            self.prev.cache.put(name, counters)
        return name, size, counters

    def _fill(self, w: CatalogWriter, children: list[Staged]) -> None:
        """Rows for one directory's children: its files in one batch, then each subdirectory."""
        files = [s.entry for s in children if not stat.S_ISDIR(s.entry.mode)]
        for e in files:
            if stat.S_ISREG(e.mode) and e.digest is None and not e.chunks:
                raise AssertionError(f"no content recorded for {e.path}")
        w.add_many(files)
        for s in children:
            e = s.entry
            if not stat.S_ISDIR(e.mode):
                continue
            if s.nested is not None:
                w.add(e, mountpoint=True)
                w.add_nested(e.path, s.nested.catalog_hash, s.nested.size, s.nested.counters)
                continue
            grandchildren = self.stage.children(e.path)
            e.linkcount = 2 + sum(1 for c in grandchildren if stat.S_ISDIR(c.entry.mode))
            if any(c.entry.name == ".cvmfscatalog" and stat.S_ISREG(c.entry.mode) for c in grandchildren):
                w.add(e, mountpoint=True)
                name, size, counters = self._catalog(e.path, e, grandchildren)
                w.add_nested(e.path, name, size, counters)
            else:
                w.add(e)
                self._fill(w, grandchildren)


# -- commit: certificate, history, reflog, manifest -----------------------------------------------


def _write_reflog(stratum: Path, scratch: Path, fqrn: str, refs: list[tuple[str, int]], ts: int) -> str:
    """Add ``refs`` (hash, type: 0 catalog, 1 certificate, 2 history) to ``.cvmfsreflog``."""
    path = stratum / ".cvmfsreflog"
    tmp = scratch / "reflog.db"
    if path.exists():
        shutil.copyfile(path, tmp)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("BEGIN")
        if not path.exists():
            db.execute(
                "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));"
            )
            db.execute(
                "CREATE TABLE refs (hash TEXT, type INTEGER, timestamp INTEGER, "
                "CONSTRAINT pk_refs PRIMARY KEY (hash));"
            )
            db.executemany(
                "INSERT INTO properties VALUES (?, ?)",
                [("schema", "1.0"), ("schema_revision", "0"), ("fqrn", fqrn)],
            )
        db.executemany("INSERT OR IGNORE INTO refs VALUES (?, ?, ?)", [(h, t, ts) for h, t in refs])
        db.execute("COMMIT")
    finally:
        db.close()
    blob = tmp.read_bytes()
    atomic_write(path, blob)
    return hashlib.sha1(blob).hexdigest()


def _sign_manifest(m: mf.Manifest, keys: KeySet) -> bytes:
    body = mf.serialize(m)
    hash_text = mf.body_hash(body, m.algorithm)
    return mf.join_signed(body, hash_text, keys.sign_manifest(hash_text))


def _whitelist_bytes(fqrn: str, keys: KeySet, created: int, days: int) -> bytes:
    start = dt.datetime.fromtimestamp(created, dt.UTC).replace(microsecond=0)
    w = wl.Whitelist(start, start + dt.timedelta(days=days), fqrn, (keys.fingerprint(),))
    body = wl.serialize(w)
    hash_text = hashlib.sha1(body).hexdigest()
    return mf.join_signed(body, hash_text, keys.sign_whitelist(hash_text))


def _history_db(stratum: Path, scratch: Path, m: mf.Manifest | None, fqrn: str) -> HistoryWriter:
    prev_db = None
    if m is not None and m.history_hash:
        prev_db = scratch / "hist.old.db"
        prev_db.write_bytes(read_object(stratum, m.history_hash, "H", "history"))
    return HistoryWriter(
        scratch / "hist.new.db", fqrn, previous_db=prev_db, previous_hash=m.history_hash if m else None
    )


def _check_tag_name(name: str) -> None:
    if not TAG_RE.match(name) or name in RESERVED or name.startswith("generic-"):
        raise CvmfsError(
            f"invalid tag name {name!r}",
            hint="use letters, digits and . _ : + - ; 'trunk', 'trunk-previous' and 'generic-*' are reserved",
        )


def _default_timestamp(timestamp: int | None) -> int:
    return timestamp if timestamp is not None else source_date_epoch(int(time.time()))


@contextlib.contextmanager
def _session(stratum: Path, what: str) -> Iterator[tuple[ObjectWriter, Path]]:
    with publish_lock(stratum, what):
        store = ObjectWriter(stratum)
        store.clean_txn()
        scratch = Path(tempfile.mkdtemp(prefix="stage.", dir=store.txn))
        try:
            yield store, scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _commit(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    store: ObjectWriter,
    scratch: Path,
    stage: Stage,
    prev: PreviousTree | None,
    current: mf.Manifest | None,
    opts: _Options,
    tag: str | None,
    description: str,
    auto_tag: bool,
    whitelist: bytes | None = None,
) -> PublishResult:
    revision = current.revision + 1 if current else 1
    ts = max(opts.timestamp, current.timestamp + 1) if current else opts.timestamp
    builder = _Builder(stage, store, prev, scratch, revision, ts)
    root_name, root_size, counters = builder.build()
    _fault("catalogs")
    cert_name = store.put_bytes(keys.cert_pem, "X")
    hist = _history_db(stratum, scratch, current, fqrn)
    head = Tag("trunk", root_name, revision, ts, root_size)
    hist.advance_trunk(head)
    if tag:
        hist.put(replace(head, name=tag, description=description))
    if auto_tag:
        hist.put(replace(head, name=auto_tag_name(ts), description="automatically generated tag"))
    hist.close()
    hist_name = store.put_path(scratch / "hist.new.db", "H")
    _fault("history")
    refs = [(c, 0) for c in builder.new_catalogs] + [(cert_name, 1), (hist_name, 2)]
    reflog = _write_reflog(stratum, scratch, fqrn, refs, ts)
    _fault("reflog")
    if whitelist is not None:
        atomic_write(stratum / ".cvmfswhitelist", whitelist)
    store.sync()
    m = mf.Manifest(
        root_hash=root_name,
        root_size=root_size,
        revision=revision,
        fqrn=fqrn,
        ttl=DEFAULT_TTL,
        timestamp=ts,
        certificate_hash=cert_name,
        history_hash=hist_name,
        reflog_hash=reflog,
    )
    atomic_write(stratum / ".cvmfspublished", _sign_manifest(m, keys))
    total = counters.total()
    return PublishResult(
        revision=revision,
        root_hash=root_name,
        tag=tag,
        objects_written=store.objects_written,
        bytes_written=store.bytes_written,
        files=total["regular"],
        catalogs=total["nested"] + 1,
        timestamp=ts,
        catalogs_reused=builder.reused,
        warnings=tuple(opts.warnings),
    )


# -- the public API -------------------------------------------------------------------------------


def create_repository(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    *,
    whitelist_days: int = 30,
    timestamp: int | None = None,
) -> PublishResult:
    """A new, empty repository (revision 1: an empty root directory, tagged ``trunk``).

    The whitelist is dated ``timestamp`` when given, else now (not SOURCE_DATE_EPOCH: a whitelist
    from the past would already be expired).
    """
    check_fqrn(fqrn)
    if keys.fqrn != fqrn:
        raise CvmfsError(
            f"keys are for {keys.fqrn!r}, not {fqrn!r}", hint="generate keys for this repository"
        )
    if (stratum / ".cvmfspublished").exists():
        raise CvmfsError(
            f"{stratum}: a repository already exists here", hint="publish into it, or pick a new directory"
        )
    stratum.mkdir(parents=True, exist_ok=True)
    ts = _default_timestamp(timestamp)
    wl_time = timestamp if timestamp is not None else int(time.time())
    opts = _Options(ts, ChunkingSettings(), True, None)
    with _session(stratum, "create") as (store, scratch):
        stage = Stage(scratch / "stage.db")
        try:
            stage.put(_dir_entry("", ts))
            return _commit(
                stratum,
                fqrn,
                keys,
                store,
                scratch,
                stage,
                None,
                None,
                opts,
                None,
                "",
                False,
                whitelist=_whitelist_bytes(fqrn, keys, wl_time, whitelist_days),
            )
        finally:
            stage.close()


def _publish(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    fill: Callable[[Stage, PreviousTree, _Content, str, _Options], None],
    *,
    tag: str | None,
    description: str,
    auto_tag: bool,
    timestamp: int | None,
    chunking: ChunkingSettings | None,
    base_path: str,
    progress: Progress | None,
    normalize_owner: bool,
) -> PublishResult:
    if tag is not None:
        _check_tag_name(tag)
    base = _norm_base(base_path)
    opts = _Options(_default_timestamp(timestamp), chunking or ChunkingSettings(), normalize_owner, progress)
    with _session(stratum, "publish") as (store, scratch):
        current = _read_current(stratum, fqrn)
        _check_whitelist(stratum, keys, opts)
        prev = PreviousTree(stratum, current.root_hash, scratch)
        stage = Stage(scratch / "stage.db")
        content = _Content(store, stage, opts)
        try:
            if base:
                _stage_outside(stage, prev, base)
            if base:
                _ensure_dirs(stage, base.rsplit("/", 1)[0], opts.timestamp)
            fill(stage, prev, content, base, opts)
            _fault("staged")
            return _commit(
                stratum, fqrn, keys, store, scratch, stage, prev, current, opts, tag, description, auto_tag
            )
        finally:
            content.pool.shutdown(wait=True, cancel_futures=True)
            stage.close()
            prev.close()


def publish_tree(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    source: Path,
    *,
    tag: str | None = None,
    description: str = "",
    auto_tag: bool = False,
    timestamp: int | None = None,
    chunking: ChunkingSettings | None = None,
    base_path: str = "/",
    progress: Progress | None = None,
    normalize_owner: bool = False,
) -> PublishResult:
    """Publish the directory ``source`` as the new revision (or as the subtree at ``base_path``).

    ``progress(done_bytes, total_bytes)`` is called as file contents are stored.
    """

    def fill(stage: Stage, prev: PreviousTree, content: _Content, base: str, opts: _Options) -> None:
        _scan_dir(stage, prev, content, source, base, opts)

    return _publish(
        stratum,
        fqrn,
        keys,
        fill,
        tag=tag,
        description=description,
        auto_tag=auto_tag,
        timestamp=timestamp,
        chunking=chunking,
        base_path=base_path,
        progress=progress,
        normalize_owner=normalize_owner,
    )


def publish_tar(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    tar_stream: BinaryIO,
    *,
    tag: str | None = None,
    description: str = "",
    auto_tag: bool = False,
    timestamp: int | None = None,
    chunking: ChunkingSettings | None = None,
    base_path: str = "/",
    progress: Progress | None = None,
    normalize_owner: bool = False,
) -> PublishResult:
    """Publish a tar stream (plain or compressed, read once, front to back) as the new revision.

    ``progress(done_bytes, 0)``: the total is unknown for a stream.
    """

    def fill(stage: Stage, prev: PreviousTree, content: _Content, base: str, opts: _Options) -> None:
        _scan_tar(stage, content, tar_stream, base, opts)

    return _publish(
        stratum,
        fqrn,
        keys,
        fill,
        tag=tag,
        description=description,
        auto_tag=auto_tag,
        timestamp=timestamp,
        chunking=chunking,
        base_path=base_path,
        progress=progress,
        normalize_owner=normalize_owner,
    )


def _retag(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    edit: Callable[[HistoryWriter, mf.Manifest, Path], None],
    timestamp: int | None,
) -> mf.Manifest:
    with _session(stratum, "tag") as (store, scratch):
        current = _read_current(stratum, fqrn)
        hist = _history_db(stratum, scratch, current, fqrn)
        try:
            edit(hist, current, scratch)
        except BaseException:
            hist.db.execute("ROLLBACK")
            hist.db.close()
            raise
        hist.close()
        hist_name = store.put_path(scratch / "hist.new.db", "H")
        ts = max(_default_timestamp(timestamp), current.timestamp + 1)
        reflog = _write_reflog(stratum, scratch, fqrn, [(hist_name, 2)], ts)
        store.sync()
        # A tag edit is not a new revision: the root catalog and S stay, T moves on.
        m = replace(current, history_hash=hist_name, reflog_hash=reflog, timestamp=ts)
        atomic_write(stratum / ".cvmfspublished", _sign_manifest(m, keys))
        return m


def add_tag(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    name: str,
    root_hash: str | None = None,
    description: str = "",
    *,
    timestamp: int | None = None,
) -> Tag:
    """Tag the trunk (or the revision whose root catalog is ``root_hash``) as ``name``."""
    _check_tag_name(name)
    made: list[Tag] = []

    def edit(hist: HistoryWriter, m: mf.Manifest, scratch: Path) -> None:
        if root_hash is None:
            head = hist.get("trunk")
            base = head or Tag("trunk", m.root_hash, m.revision, m.timestamp, m.root_size)
        else:
            row = hist.db.execute(
                "SELECT name, hash, revision, timestamp, size, description FROM tags WHERE hash = ? "
                "ORDER BY revision DESC LIMIT 1",
                (root_hash,),
            ).fetchone()
            if row is not None:
                base = Tag(*row)
            else:
                data = read_object(stratum, root_hash, "C", f"root catalog {root_hash}")
                db = scratch / "cat.tagged.db"
                db.write_bytes(data)
                c = sqlite3.connect(db)
                rev = c.execute("SELECT value FROM properties WHERE key = 'revision'").fetchone()
                mod = c.execute("SELECT value FROM properties WHERE key = 'last_modified'").fetchone()
                c.close()
                base = Tag(name, root_hash, int(rev[0]) if rev else 0, int(mod[0]) if mod else 0, len(data))
        tag = replace(base, name=name, description=description)
        hist.put(tag)
        made.append(tag)

    _retag(stratum, fqrn, keys, edit, timestamp)
    return made[0]


def remove_tag(stratum: Path, fqrn: str, keys: KeySet, name: str, *, timestamp: int | None = None) -> None:
    """Remove the named tag (``trunk`` and ``trunk-previous`` cannot be removed)."""
    if name in RESERVED:
        raise CvmfsError(f"tag {name!r} is maintained by the publisher and cannot be removed")

    def edit(hist: HistoryWriter, m: mf.Manifest, scratch: Path) -> None:
        if not hist.remove(name):
            known = ", ".join(hist.names()) or "none"
            raise CvmfsError(f"{fqrn}: unknown tag {name!r}", hint=f"tags are: {known}")

    _retag(stratum, fqrn, keys, edit, timestamp)


def resign_whitelist(
    stratum: Path, fqrn: str, keys: KeySet, days: int = 30, *, timestamp: int | None = None
) -> Path:
    """Write a freshly signed whitelist valid for ``days`` from now (or from ``timestamp``)."""
    if days <= 0:
        raise CvmfsError(f"whitelist validity must be positive, got {days} days")
    with publish_lock(stratum, "resign"):
        m = _read_current(stratum, fqrn)
        if m.certificate_hash:
            cert = read_object(stratum, m.certificate_hash, "X", "certificate")
            if rsa_raw.load_certificate(cert).der != keys.certificate.public_bytes(Encoding.DER):
                raise CvmfsError(
                    f"{stratum}: the repository is signed with another certificate than these keys",
                    hint="use the key directory the repository was created with",
                )
        path = stratum / ".cvmfswhitelist"
        atomic_write(
            path, _whitelist_bytes(fqrn, keys, timestamp if timestamp is not None else int(time.time()), days)
        )
        return path


__all__ = [
    "ChunkRow",
    "ChunkingSettings",
    "PublishResult",
    "add_tag",
    "create_repository",
    "publish_tar",
    "publish_tree",
    "remove_tag",
    "resign_whitelist",
]
