"""The previous revision of a local repository, as the publisher needs it: raw catalog rows.

The publisher reads its own ``data/`` directly (it holds the lock, and it must see the exact
column values to copy rows unchanged). Every object it opens is checked against its name.
Catalogs are inflated into a scratch directory and opened read-only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CvmfsError, IntegrityError
from .catalog_rows import md5_pair
from .catalog_write import ChunkRow, Counters
from .objects import new_hasher, object_path, parse_hash

ROW_COLUMNS = (
    "hardlinks, hash, size, mode, mtime, {mtimens}, flags, name, symlink, uid, gid, xattr,"
    " md5path_1, md5path_2"
)
#: paths looked up per query (SQLite before 3.32 takes at most 999 parameters)
_LOOKUP_BATCH = 500
_BLOCK = 1 << 20


@dataclass(frozen=True)
class OldRow:
    """A catalog row as stored (plus its full path)."""

    path: str
    hardlinks: int
    digest: bytes | None
    size: int
    mode: int
    mtime: int
    mtimens: int | None
    flags: int
    name: str
    symlink: str
    uid: int
    gid: int
    xattr: bytes | None
    md5: tuple[int, int]

    @property
    def algorithm(self) -> str:
        return ("sha1", "rmd160", "shake128")[(self.flags >> 8) & 7]


def read_object(stratum: Path, name: str, suffix: str, where: str) -> bytes:
    """An object's inflated bytes, after checking the stored bytes hash to its name."""
    out: list[bytes] = []
    _inflate_object(stratum, name, suffix, where, out.append)
    return b"".join(out)


def inflate_object_to(stratum: Path, name: str, suffix: str, where: str, dest: Path) -> int:
    """Inflate an object into the new file ``dest`` a block at a time (a previous catalog of a
    directory of 200,000 files was held stored and inflated: tens of MB); ``dest`` is removed
    unless the stored bytes hash to the name. Returns the inflated size."""
    try:
        with open(dest, "xb") as f:
            return _inflate_object(stratum, name, suffix, where, f.write)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _inflate_object(
    stratum: Path, name: str, suffix: str, where: str, write: Callable[[bytes], object]
) -> int:
    # The name first: one given on the command line (``tag add --root-hash ../../x``) named a file
    # outside the repository, read whole or, a FIFO, waited on for ever (pr17c finding 12).
    try:
        algo = parse_hash(name).algorithm
    except ValueError:
        raise CvmfsError(
            f"{where}: {name!r} is not an object name",
            hint="give a content hash: 40 hex digits (and a suffix)",
        ) from None
    path = stratum / object_path(name, suffix)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CvmfsError(
            f"{where}: object {name}{suffix} is missing from {stratum}/data",
            hint="the repository is incomplete; restore it from a backup or a replica",
        ) from None
    except OSError as e:
        raise CvmfsError(f"{where}: object {name}{suffix}: {e.strerror}") from None
    h = new_hasher(algo)
    z = zlib.decompressobj()
    size = 0
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IntegrityError(f"{where}: object {name}{suffix} is not a regular file")
        # The stored bytes are hashed first, in a pass of their own: a damaged or replaced file is
        # refused before any of it is inflated (in one pass, a zlib bomb under an object's name was
        # inflated whole, into memory or onto the scratch, before its hash said no)
        while block := f.read(_BLOCK):
            h.update(block)
        if h.hexdigest() != name[:40]:
            raise IntegrityError(f"{where}: object {name}{suffix} does not match its hash (damaged file)")
        f.seek(0)
        try:
            while block := f.read(_BLOCK):
                while block:  # at most _BLOCK inflated bytes at a time
                    data = z.decompress(block, _BLOCK)
                    size += len(data)
                    write(data)
                    block = z.unconsumed_tail
            tail = z.flush()
            size += len(tail)
            write(tail)
            if not z.eof:  # (bytes after the stream are ignored, as zlib.decompress did)
                raise zlib.error("truncated stream")
        except zlib.error as e:
            raise IntegrityError(f"{where}: object {name}{suffix} is not a valid zlib stream") from e
    return size


class OldCatalog:
    def __init__(self, db_path: Path, name: str, prefix: str, size: int):
        self.name = name  # object name (hash)
        self.prefix = prefix
        self.size = size  # uncompressed bytes
        self.db_path = db_path
        self.db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
        cols = [r[1] for r in self.db.execute("PRAGMA table_info(catalog)")]
        self._cols = ROW_COLUMNS.format(mtimens="mtimens" if "mtimens" in cols else "NULL")
        self.nested: dict[str, tuple[str, int]] = {
            str(p): (str(h), int(s or 0))
            for p, h, s in self.db.execute("SELECT path, sha1, size FROM nested_catalogs")
        }
        self.revision = int(self.property("revision") or 0)

    def property(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM properties WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _row(self, path: str, r: Any) -> OldRow:
        return OldRow(
            path,
            hardlinks=r[0],
            digest=None if r[1] is None else bytes(r[1]),
            size=r[2],
            mode=r[3],
            mtime=r[4],
            mtimens=r[5],
            flags=r[6],
            name=r[7],
            symlink=r[8] or "",
            uid=r[9],
            gid=r[10],
            xattr=None if r[11] is None else bytes(r[11]),
            md5=(r[12], r[13]),
        )

    def lookup(self, path: str) -> OldRow | None:
        p1, p2 = md5_pair(path)
        r = self.db.execute(
            f"SELECT {self._cols} FROM catalog WHERE md5path_1 = ? AND md5path_2 = ?", (p1, p2)
        ).fetchone()
        return None if r is None else self._row(path, r)

    def children(self, path: str) -> list[OldRow]:
        p1, p2 = md5_pair(path)
        rows = self.db.execute(
            f"SELECT {self._cols} FROM catalog WHERE parent_1 = ? AND parent_2 = ? ORDER BY name", (p1, p2)
        ).fetchall()
        return [self._row(f"{path}/{r[7]}", r) for r in rows]

    def rows_at(self, paths: Sequence[str]) -> dict[str, OldRow]:
        """The rows this catalog has of ``paths``, by path: primary-key lookups, a few hundred per
        query. The scan asks a batch at a time; the whole listing of a directory of 200,000 files
        held as rows was most of a re-publish's 257 MB peak."""
        out: dict[str, OldRow] = {}
        for i in range(0, len(paths), _LOOKUP_BATCH):
            want = {md5_pair(p): p for p in paths[i : i + _LOOKUP_BATCH]}
            marks = ",".join("?" * len(want))
            for r in self.db.execute(
                f"SELECT {self._cols} FROM catalog WHERE md5path_1 IN ({marks})", [a for a, _ in want]
            ):
                path = want.get((r[12], r[13]))
                if path is not None:
                    out[path] = self._row(path, r)
        return out

    def child_summaries(self, path: str) -> Iterator[tuple[Any, ...]]:
        """``(name, mode, size, mtime, hash, symlink, uid, gid, xattr)`` of each child in name order,
        as stored: the few fields the publish statistics compare, without building a row object per
        entry; a cursor, not a list (SQLite's sorter spills to disk: bounded memory)."""
        return self.db.execute(
            "SELECT name, mode, size, mtime, hash, symlink, uid, gid, xattr FROM catalog"
            " WHERE parent_1 = ? AND parent_2 = ? ORDER BY name",
            md5_pair(path),
        )

    def chunks(self, md5: tuple[int, int]) -> tuple[ChunkRow, ...]:
        rows = self.db.execute(
            "SELECT offset, size, hash FROM chunks WHERE md5path_1 = ? AND md5path_2 = ? ORDER BY offset", md5
        ).fetchall()
        return tuple(ChunkRow(int(o), int(s), bytes(h)) for o, s, h in rows)

    def counters(self) -> Counters:
        return Counters.from_rows(self.db.execute("SELECT counter, value FROM statistics"))

    def close(self) -> None:
        self.db.close()


class CountersCache:
    """Statistics of catalogs by hash, kept in ``data/txn/counters-cache.db``.

    A publish below ``base_path`` needs the counters of every sibling nested catalog it keeps
    (for the parent's ``subtree_*`` sums); with this cache it does not inflate each of them again.
    Catalogs are immutable, so an entry never goes stale.
    """

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS counters (hash TEXT PRIMARY KEY, rows TEXT)")
        # new entries are written in one transaction at close: one synced commit per publish, not
        # one per catalog (~35 ms each on a busy disk; a hub publish meets one per new layer/chain)
        self.pending: dict[str, Counters] = {}

    def get(self, name: str) -> Counters | None:
        if name in self.pending:
            return self.pending[name]
        row = self.db.execute("SELECT rows FROM counters WHERE hash = ?", (name,)).fetchone()
        return None if row is None else Counters.from_rows(json.loads(row[0]))

    def put(self, name: str, counters: Counters) -> None:
        self.pending[name] = counters

    def close(self) -> None:
        try:
            if self.pending:
                with self.db:
                    self.db.execute("BEGIN")
                    self.db.executemany(
                        "INSERT OR REPLACE INTO counters VALUES (?, ?)",
                        [(n, json.dumps(c.rows())) for n, c in self.pending.items()],
                    )
                self.pending.clear()
        finally:
            self.db.close()


class PreviousTree:
    """Lazy access to the catalogs of one earlier revision."""

    def __init__(self, stratum: Path, root_hash: str, scratch: Path):
        self.stratum = stratum
        self.scratch = scratch
        self._open: dict[str, OldCatalog] = {}
        self.cache = CountersCache(stratum / "data" / "txn" / "counters-cache.db")
        self.root = self._load(root_hash, "", 0)

    def nested_counters(self, parent: OldCatalog, path: str) -> Counters:
        """The statistics of the nested catalog at ``path`` (from the cache when known)."""
        name, _ = parent.nested[path]
        counters = self.cache.get(name)
        if counters is None:
            counters = self.nested_catalog(parent, path).counters()
            self.cache.put(name, counters)
        return counters

    def _load(self, name: str, prefix: str, size: int) -> OldCatalog:
        cat = self._open.get(prefix)
        if cat is not None and cat.name == name:
            return cat
        path = self.scratch / f"cat.old.{name}.db"
        path.unlink(missing_ok=True)  # (a catalog loaded again for another prefix)
        inflated = inflate_object_to(self.stratum, name, "C", f"catalog {prefix or '/'}", path)
        cat = OldCatalog(path, name, prefix, size or inflated)
        self._open[prefix] = cat
        return cat

    def nested_catalog(self, parent: OldCatalog, path: str) -> OldCatalog:
        name, size = parent.nested[path]
        return self._load(name, path, size)

    def catalog_for(self, path: str) -> OldCatalog:
        """The catalog that holds ``path``'s row (for a mountpoint: the nested one)."""
        cat = self.root
        while cat.nested:
            # the next nested catalog on the way down is the one whose mountpoint prefixes ``path``
            nxt = None
            probe = path
            while len(probe) > len(cat.prefix):
                if probe in cat.nested:
                    nxt = probe
                probe = probe.rsplit("/", 1)[0]
            if nxt is None:
                break
            cat = self.nested_catalog(cat, nxt)
        return cat

    def lookup(self, path: str) -> tuple[OldRow, OldCatalog] | None:
        cat = self.catalog_for(path)
        row = cat.lookup(path)
        return None if row is None else (row, cat)

    def close(self) -> None:
        for cat in self._open.values():
            cat.close()
        self._open.clear()
        self.cache.close()
