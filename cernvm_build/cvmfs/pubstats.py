"""Publish statistics: what each revision changed, kept in the repository as ``stats/stats.db``.

The layout is the real server's statistics database (schema 1.0, revision 4, as ``cvmfs_server``
writes to ``/var/spool/cvmfs/<fqrn>/stats.db`` and uploads as ``stats/stats.db`` with
``CVMFS_UPLOAD_STATS_DB``): a ``properties`` table (``schema``, ``schema_revision``, ``repo_name``),
``publish_statistics`` (one row per publish) and an empty ``gc_statistics``. So ``cvmfs_server
print-stats``-style readers and our site read the same rows.

What the columns mean here: a file, directory or symlink is *added*/*removed* when its path exists
only in the new/old revision (a path whose type changed counts as both), *changed* when its
content, size, mode, mtime, owner, target or xattrs differ. ``sz_bytes_added`` is the size of added
files plus the new size of changed ones, ``sz_bytes_removed`` the size of removed files plus the old
size of changed ones (a rewrite counts both ways, as the server's sync does). ``chunks_added`` and
``sz_bytes_uploaded`` are the content objects and bytes this publish wrote (de-duplicated objects are
not written again); ``catalogs_added``/``sz_catalog_bytes_uploaded`` the new catalogs. Unknown
values are NULL, never a made-up 0 (``chunks_duplicated``).
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import CvmfsError
from ..fsutil import atomic_copy
from .previous import PreviousTree
from .stage import Stage

STATS_PATH = "stats/stats.db"
SCHEMA = "1.0"
SCHEMA_REVISION = "4"
_MARKERS = (".cvmfscatalog", ".cvmfsautocatalog")

_PUBLISH_COLUMNS = (
    "publish_id INTEGER PRIMARY KEY, start_time TEXT, finish_time TEXT, revision INTEGER,"
    " files_added INTEGER, files_removed INTEGER, files_changed INTEGER, chunks_added INTEGER,"
    " chunks_duplicated INTEGER, catalogs_added INTEGER, directories_added INTEGER,"
    " directories_removed INTEGER, directories_changed INTEGER, symlinks_added INTEGER,"
    " symlinks_removed INTEGER, symlinks_changed INTEGER, sz_bytes_added INTEGER,"
    " sz_bytes_removed INTEGER, sz_bytes_uploaded INTEGER, sz_catalog_bytes_uploaded INTEGER,"
    " success INTEGER"
)
_GC_COLUMNS = (
    "gc_id INTEGER PRIMARY KEY, start_time TEXT, finish_time TEXT, n_preserved_catalogs INTEGER,"
    " n_condemned_catalogs INTEGER, n_condemned_objects INTEGER, sz_condemned_bytes INTEGER,"
    " n_duplicate_delete_requests INTEGER, success INTEGER"
)


@dataclass
class Diff:
    files_added: int = 0
    files_removed: int = 0
    files_changed: int = 0
    directories_added: int = 0
    directories_removed: int = 0
    directories_changed: int = 0
    symlinks_added: int = 0
    symlinks_removed: int = 0
    symlinks_changed: int = 0
    sz_bytes_added: int = 0
    sz_bytes_removed: int = 0


@dataclass(frozen=True)
class PublishRow:
    """One ``publish_statistics`` row (times as the server writes them: ``YYYY-MM-DD HH:MM:SS`` UTC)."""

    start_time: str
    finish_time: str
    revision: int
    diff: Diff
    chunks_added: int
    catalogs_added: int
    sz_bytes_uploaded: int
    sz_catalog_bytes_uploaded: int
    chunks_duplicated: int | None = None
    success: bool = True


def gmt(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- the difference between two revisions ---------------------------------------------------------

#: (kind, size, digest, the fields that make a change: mode, mtime, symlink target, owner, xattrs)
_Summary = tuple[str, int, Any, tuple[Any, ...]]
_Child = tuple[str, _Summary, bool]  # name, summary, a nested catalog's mountpoint


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file" if stat.S_ISREG(mode) else "special"


def _summary(mode: int, size: int, mtime: int, digest: Any, symlink: str | None, uid: int, gid: int,
             xattr: Any) -> _Summary:  # fmt: skip
    kind = _kind(mode)
    # a directory's size is that of its listing, not a change of its own
    fields = (
        (mode, mtime, uid, gid, xattr)
        if kind == "dir"
        else (size, mode, mtime, symlink or "", uid, gid, xattr)
    )
    return kind, size, None if digest is None else bytes(digest), fields


def _new_children(stage: Stage, path: str) -> Iterator[_Child]:
    """``(name, summary, is a nested mountpoint)`` of each staged child, in name order."""
    rows = stage.db.execute(
        "SELECT name, mode, size, mtime, digest, symlink, uid, gid, xattr, nested_hash FROM stage"
        " WHERE parent = ? ORDER BY name",
        (path,),
    )
    for name, mode, size, mtime, digest, symlink, uid, gid, xattr, nested in rows:
        if name not in _MARKERS:
            yield str(name), _summary(mode, size, mtime, digest, symlink, uid, gid, xattr), nested is not None


def _old_children(prev: PreviousTree, path: str) -> Iterator[_Child]:
    """``(name, summary, False)`` of each child in the previous revision, in name order."""
    for name, mode, size, mtime, digest, symlink, uid, gid, xattr in prev.catalog_for(path).child_summaries(
        path
    ):
        if name not in _MARKERS:
            yield str(name), _summary(mode, size, mtime, digest, symlink, uid, gid, xattr), False


_END: _Child = ("", ("", 0, None, ()), False)  # a listing's end (compared by identity)


def _merged(
    new: Iterator[_Child], old: Iterator[_Child]
) -> Iterator[tuple[str, tuple[_Summary, bool] | None, _Summary | None]]:
    """``(name, (new summary, nested) or None, old summary or None)`` of both listings, in name
    order: two cursors sorted alike (SQLite compares names as UTF-8 bytes, which is the order of
    their code points, as Python compares them), so a directory's listing is never held whole (a
    directory of 200,000 files held both as dictionaries)."""
    n, o = next(new, _END), next(old, _END)
    while n is not _END or o is not _END:
        if o is _END or (n is not _END and n[0] < o[0]):
            yield n[0], (n[1], n[2]), None
            n = next(new, _END)
        elif n is _END or o[0] < n[0]:
            yield o[0], None, o[1]
            o = next(old, _END)
        else:
            yield n[0], (n[1], n[2]), o[1]
            n, o = next(new, _END), next(old, _END)


def _count(d: Diff, kind: str, how: str, size: int) -> None:
    name = {"file": "files", "dir": "directories", "symlink": "symlinks"}.get(kind)
    if name is None:
        return
    setattr(d, f"{name}_{how}", getattr(d, f"{name}_{how}") + 1)
    if kind == "file" and how in ("added", "removed"):
        setattr(d, f"sz_bytes_{how}", getattr(d, f"sz_bytes_{how}") + size)


def _same(new: _Summary, old: _Summary) -> bool:
    if new[2] is not None and old[2] is not None and new[2] != old[2]:
        return False  # other content (chunked files store no whole-file hash: None)
    return new[3] == old[3]


def diff_tree(stage: Stage, prev: PreviousTree | None, base: str) -> Diff:
    """What the staged revision changes below ``base`` against the previous one, directory by
    directory (an explicit stack; subtrees kept by reference from the previous revision are skipped)."""
    d = Diff()
    in_old = prev is not None
    if base and prev is not None and prev.lookup(base) is None:
        # a new base path (a new layer): the directory itself is added too
        _count(d, "dir", "added", 0)
        in_old = False
    stack: list[tuple[str, bool, bool]] = [(base, True, in_old)]
    while stack:
        path, in_new, in_old = stack.pop()
        new = _new_children(stage, path) if in_new else iter(())
        old = _old_children(prev, path) if in_old and prev is not None else iter(())
        for name, n, o in _merged(new, old):
            child = f"{path}/{name}"
            if n is not None and o is not None and n[0][0] == o[0]:
                if not _same(n[0], o):
                    _count(d, n[0][0], "changed", 0)
                    if n[0][0] == "file":
                        d.sz_bytes_added += n[0][1]
                        d.sz_bytes_removed += o[1]
                if n[0][0] == "dir" and not n[1]:
                    stack.append((child, True, True))
                continue
            if n is not None:
                _count(d, n[0][0], "added", n[0][1])
                if n[0][0] == "dir" and not n[1]:
                    stack.append((child, True, False))
            if o is not None:
                _count(d, o[0], "removed", o[1])
                if o[0] == "dir":
                    stack.append((child, False, True))
    return d


# -- the database -------------------------------------------------------------------------------------


def _create(db: sqlite3.Connection, fqrn: str) -> None:
    db.execute("CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key))")
    db.execute(f"CREATE TABLE publish_statistics ({_PUBLISH_COLUMNS})")
    db.execute(f"CREATE TABLE gc_statistics ({_GC_COLUMNS})")
    db.executemany(
        "INSERT INTO properties VALUES (?, ?)",
        [("schema", SCHEMA), ("schema_revision", SCHEMA_REVISION), ("repo_name", fqrn)],
    )


def record(stratum: Path, fqrn: str, row: PublishRow, scratch: Path) -> Path:
    """Append ``row`` to ``<stratum>/stats/stats.db`` (created when missing): the row is added to a
    copy in ``scratch`` (the publish's, on the same file system), which replaces the file by rename,
    so readers never see a half-written database."""
    dest = stratum / STATS_PATH
    work = scratch / "stats.new.db"
    if dest.is_file():
        shutil.copyfile(dest, work)
    db = sqlite3.connect(work)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'publish_statistics'").fetchone():
            _create(db, fqrn)
        values: dict[str, Any] = {f.name: getattr(row.diff, f.name) for f in fields(Diff)}
        values.update(
            start_time=row.start_time,
            finish_time=row.finish_time,
            revision=row.revision,
            chunks_added=row.chunks_added,
            chunks_duplicated=row.chunks_duplicated,
            catalogs_added=row.catalogs_added,
            sz_bytes_uploaded=row.sz_bytes_uploaded,
            sz_catalog_bytes_uploaded=row.sz_catalog_bytes_uploaded,
            success=int(row.success),
        )
        names = sorted(values)
        db.execute(
            f"INSERT INTO publish_statistics ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
            [values[n] for n in names],
        )
        db.commit()
    finally:
        db.close()
    atomic_copy(work, dest)
    return dest


_READ_COLUMNS = (
    "revision, start_time, finish_time, files_added, files_removed, files_changed, directories_added,"
    " directories_removed, directories_changed, symlinks_added, symlinks_removed, symlinks_changed,"
    " sz_bytes_added, sz_bytes_removed, chunks_added, catalogs_added, sz_bytes_uploaded,"
    " sz_catalog_bytes_uploaded, success"
)
MAX_ROWS = 100_000
#: The file is not signed and may be anyone's: no value longer than this (a row's times and the
#: repository name are short), and the queries stop after about this many SQLite VM steps (its
#: schema decides what a SELECT costs; 100,000 genuine rows take a few million).
MAX_VALUE_BYTES = 4096
MAX_STEPS = 200_000_000
_STEP_CHECK = 10_000


def _bounded(db: sqlite3.Connection) -> list[int]:
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    steps = [0]

    def tick() -> int:
        steps[0] += _STEP_CHECK
        return 1 if steps[0] > MAX_STEPS else 0  # non-zero interrupts the query

    db.set_progress_handler(tick, _STEP_CHECK)
    return steps


_TABLES = ("properties", "publish_statistics")


def read(path: Path, where: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The repository name and the publish rows of a statistics database (ours or the server's,
    schema revision 2 or later), oldest first; values of the wrong type are refused, naming the row."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as e:
        raise CvmfsError(f"{where}: cannot open the statistics database: {e}") from None
    try:
        steps = [0]
        try:
            steps = _bounded(db)
            kinds = dict(db.execute("SELECT name, type FROM sqlite_master WHERE name IN (?, ?)", _TABLES))
            odd = sorted(n for n in _TABLES if kinds.get(n, "table") != "table")
            if odd:
                raise CvmfsError(
                    f"{where}: {odd[0]} is a {kinds[odd[0]]}, not a table",
                    hint="the statistics database is damaged or hostile: the server writes plain tables",
                )
            name_row = db.execute("SELECT value FROM properties WHERE key = 'repo_name'").fetchone()
            cur = db.execute(
                f"SELECT publish_id, {_READ_COLUMNS} FROM publish_statistics ORDER BY publish_id LIMIT ?",
                (MAX_ROWS,),
            )
            names = [c[0] for c in cur.description]
            rows = cur.fetchall()
        except sqlite3.Error as e:
            if steps[0] > MAX_STEPS:
                raise CvmfsError(
                    f"{where}: reading it took more than {MAX_STEPS:,} SQLite steps; stopped",
                    hint="a genuine statistics database is plain tables: this one is damaged or hostile",
                ) from None
            raise CvmfsError(
                f"{where}: not a statistics database ({e})",
                hint="expected the server's stats.db layout (publish_statistics, schema revision >= 2)",
            ) from None
    finally:
        db.close()
    out: list[dict[str, Any]] = []
    for raw in rows:
        item = dict(zip(names, raw, strict=True))
        for key, value in item.items():
            ok = value is None or (isinstance(value, str) if key.endswith("_time") else type(value) is int)
            if not ok:
                raise CvmfsError(
                    f"{where}: publish_statistics row {item['publish_id']}: {key} is {value!r}",
                    hint="the statistics database is damaged",
                )
        out.append(item)
    name = name_row[0] if name_row else None
    if name is not None and (not isinstance(name, str) or not name.isprintable() or len(name) > 255):
        raise CvmfsError(
            f"{where}: properties repo_name is {name!r:.80}", hint="the statistics database is damaged"
        )
    return name, out


MAX_STATS_BYTES = 64 << 20
#: seconds for the whole file (64 MiB at ~110 kB/s)
STATS_DEADLINE = 600.0


def read_source(source: str, *, timeout: float = 10) -> dict[str, Any]:
    """The publish rows of a Stratum folder or URL (``stats/stats.db``; fetched at most 64 MiB, it is
    not signed: every value is type-checked, and it is read immutable and read-only)."""
    from .fetch import Fetcher, HttpFetcher, LocalFetcher, NotFound, make_fetcher
    from .monitor import fqrn_of

    name = fqrn_of(source) or source.rstrip("/").rsplit("/", 1)[-1]
    if source.startswith(("http://", "https://")):
        # a whole-transfer deadline: per-read timeouts alone let a trickling server hold it for ever
        fetcher: Fetcher = HttpFetcher(
            [source], repo=name, timeout=timeout, retries=1, deadline=STATS_DEADLINE
        )
    else:
        fetcher = make_fetcher(source, repo=name, timeout=timeout, retries=1)
    with tempfile.TemporaryDirectory(prefix="cvmfs-stats-") as tmp:
        path = Path(tmp) / "stats.db"
        try:
            data = fetcher.get(STATS_PATH, what="statistics database", limit=MAX_STATS_BYTES)
        except NotFound as e:
            # the fetcher's hint (an object's hash) is wrong here: a repository that `cvmfs create`
            # made has no statistics until its first publish, and a server writes them only then
            hint = "each `cvmfs publish` writes it: a repository no publish has written yet has none"
            if isinstance(fetcher, LocalFetcher) and not fetcher.root.is_dir():
                hint = "no such folder: give a Stratum folder or an http(s):// repository URL"
            raise NotFound(e.message, hint=hint) from None
        path.write_bytes(data)
        repo_name, rows = read(path, f"{source}: {STATS_PATH}")
    return {"fqrn": repo_name or name, "source": source, "publishes": rows}
