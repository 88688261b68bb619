"""The staging area of one publish: every entry of the new revision, on disk in SQLite.

Scanning a directory or a tar stream fills the stage (content objects are written as the data
streams past); the catalog builder then walks the stage in sorted order. Keeping it in SQLite
instead of Python objects is what lets a publish of millions of files run in bounded memory.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog_write import ChunkRow, Counters, Entry
from .objwrite import StoredFile

#: rows a streamed listing holds at once (``Stage.iter_children``), and a catalog batch
BATCH = 4096

_SCHEMA = [
    "CREATE TABLE stage (path TEXT PRIMARY KEY, parent TEXT, name TEXT, mode INTEGER, size INTEGER,"
    " mtime INTEGER, mtimens INTEGER, uid INTEGER, gid INTEGER, symlink TEXT, xattr BLOB, digest BLOB,"
    " algorithm TEXT, hlkey TEXT, linkcount INTEGER, hidden INTEGER,"
    " nested_hash TEXT, nested_size INTEGER, nested_counters TEXT)",
    "CREATE INDEX stage_parent ON stage (parent, name)",
    "CREATE TABLE stage_chunks (path TEXT, offset INTEGER, size INTEGER, digest BLOB,"
    " PRIMARY KEY (path, offset))",
]


@dataclass(frozen=True)
class NestedRef:
    """A nested catalog kept from the previous revision as it is (not restaged)."""

    catalog_hash: str
    size: int
    counters: Counters


@dataclass(frozen=True)
class Staged:
    entry: Entry
    nested: NestedRef | None


#: ``path`` and everything below it: a range of the primary key in byte order ("0" follows "/";
#: LIKE would be case-insensitive and scan the table)
_AT_OR_BELOW = "(path = ? OR (path > ? AND path < ?))"


def _subtree(path: str) -> tuple[str, str, str]:
    return path, path + "/", path + "0"


class Stage:
    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        for sql in _SCHEMA:
            self.db.execute(sql)
        self.db.execute("BEGIN")

    def put(self, e: Entry, nested: NestedRef | None = None) -> None:
        """Add or replace an entry (a later tar member of the same path wins)."""
        self.db.execute("DELETE FROM stage_chunks WHERE path = ?", (e.path,))
        self.put_many([e], nested)

    def put_many(self, entries: list[Entry], nested: NestedRef | None = None) -> None:
        """Add entries that are not staged yet (one SQL batch)."""
        rows: list[tuple[object, ...]] = []
        chunks: list[tuple[str, int, int, bytes]] = []
        for e in entries:
            rows.append(
                (
                    e.path,
                    e.path.rsplit("/", 1)[0] if e.path else None,
                    e.name,
                    e.mode,
                    e.size,
                    e.mtime,
                    e.mtimens,
                    e.uid,
                    e.gid,
                    e.symlink,
                    e.xattrs,
                    e.digest,
                    e.algorithm,
                    e.hardlink_key,
                    e.linkcount,
                    int(e.hidden),
                    nested.catalog_hash if nested else None,
                    nested.size if nested else None,
                    json.dumps(nested.counters.rows()) if nested else None,
                )
            )
            chunks.extend((e.path, c.offset, c.size, c.digest) for c in e.chunks)
        self.db.executemany(
            "INSERT OR REPLACE INTO stage VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
        )
        if chunks:
            self.db.executemany("INSERT INTO stage_chunks VALUES (?,?,?,?)", chunks)

    def set_content(self, path: str, digest: bytes | None, chunks: tuple[ChunkRow, ...]) -> None:
        """Record a pending file's content (staged without content, so it has no chunk rows yet)."""
        self.db.execute("UPDATE stage SET digest = ? WHERE path = ?", (digest, path))
        if chunks:
            self.set_chunks(path, chunks)

    def set_contents(self, results: list[tuple[str, StoredFile]]) -> None:
        """Record the content of many pending files (staged without content or chunk rows)."""
        self.db.executemany(
            "UPDATE stage SET digest = ? WHERE path = ?", [(r.digest, path) for path, r in results]
        )
        self.db.executemany(
            "INSERT INTO stage_chunks VALUES (?,?,?,?)",
            [(path, c.offset, c.size, c.digest) for path, r in results for c in r.chunks],
        )

    def set_chunks(self, path: str, chunks: tuple[ChunkRow, ...]) -> None:
        self.db.executemany(
            "INSERT INTO stage_chunks VALUES (?,?,?,?)", [(path, c.offset, c.size, c.digest) for c in chunks]
        )

    def remove_tree(self, path: str) -> None:
        """Drop ``path`` and everything below it (a tar member replacing a directory)."""
        for table in ("stage", "stage_chunks"):
            self.db.execute(f"DELETE FROM {table} WHERE {_AT_OR_BELOW}", _subtree(path))

    def copy_tree(self, src: str, dst: str) -> list[str]:
        """Copy the staged ``src`` and everything below it to ``dst`` in a few SQL statements (a
        template transaction: rows only, the content objects are shared), replacing rows there and,
        where a copied non-directory lands on a directory, that directory's subtree. Returns the
        copies of directories that were kept by reference to a previous catalog (``NestedRef``,
        copied as plain directories): the caller copies their content from that catalog."""
        below = _subtree(src)
        n = len(src) + 1
        sel = f"FROM stage WHERE {_AT_OR_BELOW}"
        s_ifmt, s_ifdir = stat.S_IFMT(0xFFFF), stat.S_IFDIR
        replaced = self.db.execute(
            f"SELECT d.path FROM stage s JOIN stage d ON d.path = ? || substr(s.path, ?)"
            f" WHERE (s.path = ? OR (s.path > ? AND s.path < ?)) AND (d.mode & {s_ifmt}) = {s_ifdir}"
            f" AND (s.mode & {s_ifmt}) != {s_ifdir}",
            (dst, n, *below),
        ).fetchall()
        for (path,) in replaced:
            self.remove_tree(str(path))
        self.db.execute(
            f"DELETE FROM stage_chunks WHERE path IN (SELECT ? || substr(path, ?) {sel})", (dst, n, *below)
        )
        head, _, name = dst.rpartition("/")
        self.db.execute(
            "INSERT OR REPLACE INTO stage SELECT ? || substr(path, ?),"
            " CASE WHEN path = ? THEN ? ELSE ? || substr(parent, ?) END,"
            " CASE WHEN path = ? THEN ? ELSE name END,"
            " mode, size, mtime, mtimens, uid, gid, symlink, xattr, digest, algorithm, hlkey, linkcount,"
            f" hidden, NULL, NULL, NULL {sel}",
            (dst, n, src, head, dst, n, src, name, *below),
        )
        self.db.execute(
            f"INSERT INTO stage_chunks SELECT ? || substr(path, ?), offset, size, digest"
            f" FROM stage_chunks WHERE {_AT_OR_BELOW}",
            (dst, n, *below),
        )
        nested = self.db.execute(f"SELECT path {sel} AND nested_hash IS NOT NULL", below).fetchall()
        return [dst + str(p)[len(src) :] for (p,) in nested]

    def get(self, path: str) -> Staged | None:
        row = self.db.execute("SELECT * FROM stage WHERE path = ?", (path,)).fetchone()
        return None if row is None else self._staged(row)

    def has(self, path: str) -> bool:
        return self.db.execute("SELECT 1 FROM stage WHERE path = ?", (path,)).fetchone() is not None

    def iter_children(self, path: str, *, dirs: bool) -> Iterator[Staged]:
        """``path``'s children that are directories (``dirs``) or are not, in name order, streamed
        (``BATCH`` rows at a time: a directory of 10^6 entries was 10^6 ``Staged`` at once, ~0.8 KB
        each, in the catalog builder)."""
        kind = f"(mode & {0o170000}) {'=' if dirs else '!='} {stat.S_IFDIR}"
        cursor = self.db.execute(f"SELECT * FROM stage WHERE parent = ? AND {kind} ORDER BY name", (path,))
        try:
            while rows := cursor.fetchmany(BATCH):
                for r in rows:
                    yield self._staged(r)
        finally:
            # a listing left suspended by an error is closed when collected, maybe after the stage
            # (printed 'Exception ignored ... Cannot operate on a closed database' under the error)
            with contextlib.suppress(sqlite3.ProgrammingError):
                cursor.close()

    def subdirectories(self, path: str) -> int:
        """How many of ``path``'s children are directories (its link count is 2 more)."""
        (n,) = self.db.execute(
            f"SELECT COUNT(*) FROM stage WHERE parent = ? AND (mode & {0o170000}) = {stat.S_IFDIR}", (path,)
        ).fetchone()
        return int(n)

    def orphans(self) -> Iterator[str]:
        """Parent paths that have no entry themselves (tar streams may omit directories)."""
        for (p,) in self.db.execute(
            "SELECT DISTINCT s.parent FROM stage s LEFT JOIN stage d ON d.path = s.parent "
            "WHERE s.parent IS NOT NULL AND d.path IS NULL ORDER BY s.parent"
        ).fetchall():
            yield str(p)

    def below_non_directories(self) -> tuple[int, str, str] | None:
        """Entries whose parent is staged as something other than a directory (a tar's ``a`` as a
        symlink or file, then ``a/b``): how many, the first one's path and its parent's; None if
        there are none. A catalog lists only a directory's children, so they would vanish."""
        where = (
            f"FROM stage d JOIN stage s ON s.parent = d.path WHERE (d.mode & {0o170000}) != {stat.S_IFDIR}"
        )
        first = self.db.execute(f"SELECT s.path, d.path {where} ORDER BY s.path LIMIT 1").fetchone()
        if first is None:
            return None
        (count,) = self.db.execute(f"SELECT COUNT(*) {where}").fetchone()
        return int(count), str(first[0]), str(first[1])

    def _staged(self, r: Any) -> Staged:
        path = str(r[0])
        mode = int(r[3])
        chunks: tuple[ChunkRow, ...] = ()
        if stat.S_ISREG(mode) and r[11] is None:
            chunks = tuple(
                ChunkRow(int(o), int(s), bytes(d))
                for o, s, d in self.db.execute(
                    "SELECT offset, size, digest FROM stage_chunks WHERE path = ? ORDER BY offset", (path,)
                )
            )
        e = Entry(
            path=path,
            mode=mode,
            size=int(r[4]),
            mtime=int(r[5]),
            mtimens=None if r[6] is None else int(r[6]),
            uid=int(r[7]),
            gid=int(r[8]),
            symlink=str(r[9]),
            xattrs=None if r[10] is None else bytes(r[10]),
            digest=None if r[11] is None else bytes(r[11]),
            algorithm=str(r[12]),
            chunks=chunks,
            hardlink_key=None if r[13] is None else str(r[13]),
            linkcount=int(r[14]),
            hidden=bool(r[15]),
        )
        nested = None
        if r[16] is not None:
            counters = Counters.from_rows(json.loads(str(r[18])))
            nested = NestedRef(str(r[16]), int(r[17]), counters)
        return Staged(e, nested)

    def close(self) -> None:
        try:
            self.db.execute("COMMIT")
        except sqlite3.OperationalError:
            pass
        self.db.close()
