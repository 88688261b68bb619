"""Writing file catalogs: SQLite databases in CernVM-FS schema 2.5, revision 7.

One ``CatalogWriter`` builds one catalog file on disk (never in memory). Rows are added in the
order the caller walks the tree (sorted, so the same tree gives the same bytes); the writer keeps
the 24 statistics counters, derives the flags from the entry, stores chunk lists, nested catalog
references and the extended attributes blob, and numbers hardlink groups when it finishes.
"""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CvmfsError

# The flag bits and the path key are the format's, defined once with the reader's row model.
from .catalog_rows import (
    FLAG_CHUNKED,
    FLAG_DIR,
    FLAG_FILE,
    FLAG_LINK,
    FLAG_NESTED_MOUNTPOINT,
    FLAG_NESTED_ROOT,
    FLAG_SPECIAL,
    md5_pair,
    row_problem,
)

SCHEMA = "2.5"
SCHEMA_REVISION = 7
DEFAULT_TTL = 240
DIR_SIZE = 4096
ROW_HINT = (
    "no CernVM-FS reader accepts such an entry, so nothing was published: "
    "rename, shorten or fix it in the source (names <= 255 bytes without NUL, symlink targets "
    "<= 4095 bytes, mtimes within years 1697-2242, ids < 2^32 - 1)"
)

ALGO_FLAG_SHIFT = 8
ALGORITHM_INDEX = {"sha1": 0, "rmd160": 1, "shake128": 2}

_SCHEMA_SQL = [
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));",
    "CREATE TABLE catalog (md5path_1 INTEGER, md5path_2 INTEGER, parent_1 INTEGER, parent_2 INTEGER,"
    " hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, mtime INTEGER, mtimens INTEGER,"
    " flags INTEGER, name TEXT, symlink TEXT, uid INTEGER, gid INTEGER, xattr BLOB, "
    " CONSTRAINT pk_catalog PRIMARY KEY (md5path_1, md5path_2));",
    "CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2);",
    "CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, size INTEGER, "
    " hash BLOB,  CONSTRAINT pk_chunks PRIMARY KEY (md5path_1, md5path_2, offset, size), "
    " FOREIGN KEY (md5path_1, md5path_2) REFERENCES   catalog(md5path_1, md5path_2));",
    "CREATE TABLE nested_catalogs (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_nested_catalogs PRIMARY KEY (path));",
    "CREATE TABLE bind_mountpoints (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_bind_mountpoints PRIMARY KEY (path));",
    "CREATE TABLE statistics (counter TEXT, value INTEGER, CONSTRAINT pk_statistics PRIMARY KEY (counter));",
]

COUNTER_FIELDS = (
    "regular",
    "symlink",
    "special",
    "dir",
    "nested",
    "chunked",
    "chunks",
    "file_size",
    "chunked_size",
    "xattr",
    "external",
    "external_file_size",
)


def parent_path(path: str) -> str:
    return path.rsplit("/", 1)[0] if path else ""


def _shown(path: str) -> str:
    """``path`` for one line of a message: control characters escaped, a long one cut."""
    if len(path) > 200:
        path = f"{path[:80]}...{path[-100:]}"
    return path if path.isprintable() else ascii(path)[1:-1]


def serialize_xattrs(xattrs: Mapping[str, bytes]) -> bytes | None:
    """``u8 version=1, u8 count, (u8 klen, u8 vlen, key, value)*``, keys sorted; None when empty."""
    if not xattrs:
        return None
    items = sorted(xattrs.items())
    if len(items) > 255:
        raise ValueError("more than 255 extended attributes")
    out = bytearray([1, len(items)])
    for key, value in items:
        k = key.encode("utf-8", "surrogateescape")
        if not 0 < len(k) < 256 or len(value) > 255 or len(k) + len(value) > 512:
            raise ValueError(f"extended attribute {key!r} too long for a catalog (key/value <= 255 bytes)")
        out += bytes([len(k), len(value)]) + k + value
    return bytes(out)


@dataclass
class Counters:
    """Statistics: ``self`` for this catalog's rows, ``subtree`` for everything nested below."""

    self_: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_FIELDS, 0))
    subtree: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_FIELDS, 0))

    def total(self) -> dict[str, int]:
        return {k: self.self_[k] + self.subtree[k] for k in COUNTER_FIELDS}

    def rows(self) -> list[tuple[str, int]]:
        rows = [(f"self_{k}", v) for k, v in self.self_.items()]
        rows += [(f"subtree_{k}", v) for k, v in self.subtree.items()]
        return sorted(rows)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, int]]) -> Counters:
        c = cls()
        for name, value in rows:
            if name.startswith("self_") and name[5:] in c.self_:
                c.self_[name[5:]] = int(value)
            elif name.startswith("subtree_") and name[8:] in c.subtree:
                c.subtree[name[8:]] = int(value)
        return c


@dataclass(frozen=True)
class ChunkRow:
    offset: int
    size: int
    digest: bytes


@dataclass
class Entry:
    """One directory entry as the catalog stores it (``path`` is the full repository path)."""

    path: str  # "" for the repository root, else "/a/b"
    mode: int  # full st_mode including the type bits
    mtime: int
    mtimens: int | None = None
    size: int = 0  # regular: content bytes; special char/block: rdev
    uid: int = 0
    gid: int = 0
    symlink: str = ""
    digest: bytes | None = None  # raw content hash (whole file); None for dirs, links, specials
    algorithm: str = "sha1"
    chunks: tuple[ChunkRow, ...] = ()
    xattrs: bytes | None = None  # serialized blob
    linkcount: int = 1  # directories: 2 + subdirectories
    hardlink_key: str | None = None  # entries sharing a key in one catalog form a hardlink group
    hidden: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1] if self.path else ""


def flags_for(e: Entry, *, mountpoint: bool = False, nested_root: bool = False) -> int:
    if stat.S_ISDIR(e.mode):
        flags = FLAG_DIR
        if nested_root:
            flags |= FLAG_NESTED_ROOT
        elif mountpoint:
            flags |= FLAG_NESTED_MOUNTPOINT
    elif stat.S_ISLNK(e.mode):
        flags = FLAG_FILE | FLAG_LINK
    elif stat.S_ISREG(e.mode):
        flags = FLAG_FILE
        if e.chunks:
            flags |= FLAG_CHUNKED
    else:
        flags = FLAG_FILE | FLAG_SPECIAL
    if e.digest is not None or e.chunks:
        flags |= ALGORITHM_INDEX[e.algorithm] << ALGO_FLAG_SHIFT
    if e.hidden:
        flags |= 0x8000
    return flags


class CatalogWriter:
    """Builds one catalog database file at ``path`` (which must not exist yet)."""

    def __init__(
        self,
        path: Path,
        *,
        root_prefix: str,
        revision: int,
        last_modified: int,
        previous_revision: str | None,
        ttl: int | None = None,
    ):
        self.path = path
        self.root_prefix = root_prefix
        self.counters = Counters()
        self.db = sqlite3.connect(path, isolation_level=None)
        # A scratch file rebuilt on failure: no journal, no fsync until the whole file is done.
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("BEGIN")
        for sql in _SCHEMA_SQL:
            self.db.execute(sql)
        props: list[tuple[str, str]] = [("schema", SCHEMA), ("schema_revision", str(SCHEMA_REVISION))]
        if root_prefix:
            props.append(("root_prefix", root_prefix))
        if ttl is not None:
            props.append(("TTL", str(ttl)))
        props.append(("last_modified", str(last_modified)))
        props.append(("revision", str(revision)))
        if previous_revision is not None:
            props.append(("previous_revision", previous_revision))
        self.db.executemany("INSERT INTO properties (key, value) VALUES (?, ?)", props)
        self.db.execute("CREATE TEMP TABLE hl (md5path_1 INTEGER, md5path_2 INTEGER, key TEXT)")

    def add(self, e: Entry, *, mountpoint: bool = False, nested_root: bool = False) -> None:
        self.add_many([e], mountpoint=mountpoint, nested_root=nested_root)

    def add_many(self, entries: list[Entry], *, mountpoint: bool = False, nested_root: bool = False) -> None:
        """Insert rows (one SQL batch: a directory's files go in together)."""
        rows: list[tuple[object, ...]] = []
        chunks: list[tuple[int, int, int, int, bytes]] = []
        links: list[tuple[int, int, str]] = []
        parents: dict[str, tuple[int, int]] = {}
        c = self.counters.self_
        for e in entries:
            p1, p2 = md5_pair(e.path)
            if e.path == "":
                q1, q2 = 0, 0
            else:
                parent = parent_path(e.path)
                q = parents.get(parent)
                if q is None:
                    q = parents[parent] = md5_pair(parent)
                q1, q2 = q
            mode = e.mode
            size = e.size
            if stat.S_ISDIR(mode):
                size = DIR_SIZE
                c["dir"] += 1
            elif stat.S_ISLNK(mode):
                size = len(e.symlink.encode("utf-8", "surrogateescape"))
                c["symlink"] += 1
            elif stat.S_ISREG(mode):
                c["regular"] += 1
                c["file_size"] += size
                if e.chunks:
                    c["chunked"] += 1
                    c["chunked_size"] += size
                    c["chunks"] += len(e.chunks)
                    chunks.extend((p1, p2, ch.offset, ch.size, ch.digest) for ch in e.chunks)
                if e.hardlink_key is not None:
                    # CernVM-FS groups hard links per directory (the real server and clients expect
                    # a group's members side by side): links elsewhere form their own group.
                    links.append((p1, p2, f"{parent_path(e.path)}\0{e.hardlink_key}"))
            else:
                c["special"] += 1
                if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
                    size = 0
            if e.xattrs:
                c["xattr"] += 1
            flags = flags_for(e, mountpoint=mountpoint, nested_root=nested_root)
            # The reader's own row checks, before the row is stored: a publisher that signed a row
            # every reader then refuses would poison the repository (pr17c finding 3).
            why = row_problem(
                e.path, e.name, mode, flags, size, e.uid, e.gid, e.mtime, e.mtimens, e.symlink, e.xattrs
            )
            if why is not None:
                raise CvmfsError(f"{_shown(e.path or '/')}: {why}", hint=ROW_HINT)
            rows.append(
                (
                    p1,
                    p2,
                    q1,
                    q2,
                    e.linkcount if stat.S_ISDIR(mode) else 1,
                    e.digest,
                    size,
                    mode,
                    e.mtime,
                    e.mtimens,
                    flags,
                    e.name,
                    e.symlink,
                    e.uid,
                    e.gid,
                    e.xattrs,
                )
            )
        self.db.executemany("INSERT INTO catalog VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        if chunks:
            self.db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?)", chunks)
        if links:
            self.db.executemany("INSERT INTO hl VALUES (?,?,?)", links)

    def add_nested(self, path: str, catalog_hash: str, size: int, counters: Counters) -> None:
        """Reference a finished child catalog whose root directory is ``path``."""
        self.db.execute("INSERT INTO nested_catalogs VALUES (?,?,?)", (path, catalog_hash, size))
        self.counters.self_["nested"] += 1
        for k, v in counters.total().items():
            self.counters.subtree[k] += v

    def finish(self) -> Counters:
        """Number the hardlink groups, write the statistics and close the file."""
        groups = self.db.execute(
            "SELECT key, COUNT(*) FROM hl GROUP BY key HAVING COUNT(*) > 1 ORDER BY MIN(rowid)"
        ).fetchall()
        for group, (key, count) in enumerate(groups, start=1):
            self.db.execute(
                "UPDATE catalog SET hardlinks = ? WHERE (md5path_1, md5path_2) IN "
                "(SELECT md5path_1, md5path_2 FROM hl WHERE key = ?)",
                ((group << 32) | count, key),
            )
        self.db.executemany("INSERT INTO statistics VALUES (?, ?)", self.counters.rows())
        self.db.execute("DROP TABLE hl")
        self.db.execute("COMMIT")
        self.db.close()
        return self.counters


def content_digest(db_path: Path) -> str:
    """A digest of a catalog's entries, chunks and nested references, independent of row order.

    Two catalogs with the same digest describe the same subtree, so an unchanged nested catalog is
    reused by its old hash instead of being stored again with only a new revision number.
    """
    h = hashlib.sha1()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        cols = [r[1] for r in db.execute("PRAGMA table_info(catalog)")]
        mt = "mtimens" if "mtimens" in cols else "NULL"
        for table, sql in (
            (
                "catalog",
                "SELECT md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, "
                f"{mt}, flags, name, symlink, uid, gid, xattr FROM catalog ORDER BY md5path_1, md5path_2",
            ),
            ("chunks", "SELECT * FROM chunks ORDER BY md5path_1, md5path_2, offset"),
            ("nested", "SELECT path, sha1, size FROM nested_catalogs ORDER BY path"),
        ):
            h.update(table.encode())
            for row in db.execute(sql):
                h.update(repr(row).encode("utf-8", "surrogateescape"))
    finally:
        db.close()
    return h.hexdigest()
