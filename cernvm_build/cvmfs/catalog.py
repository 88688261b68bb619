"""Reading file catalogs: SQLite databases of schema 2.5 (revisions 1-7; 2.4 read as far as it goes).

Rows are keyed by the MD5 of the full repository path split into two little-endian signed int64s; a
directory's children share its path hash as their parent. A nested catalog holds the subtree below
its mountpoint and is referenced from its parent by hash and uncompressed size.

Every row is checked as it is read, so that no consumer (export, tar, containers, FUSE, ``ls``)
ever sees an entry a file system could not hold safely (issue 12): a name must be a single path
component (not empty, ``.``, ``..``, no ``/`` or NUL, at most 255 bytes) and unique in its
directory; ids, mode type bits, mtimes, sizes, symlink targets, hashes and extended attributes must
be in range; a chunk list must start at 0, be contiguous and add up to the file size; nested
catalog references must lie strictly below the catalog's own root. Directory listings stream from
SQLite in name order (duplicates are then neighbours), so a million-entry directory costs no more
memory than a small one. The entry model and the per-field checks live in ``catalog_rows.py``
(re-exported here); this module holds the ``Catalog`` queries that apply them.
"""

from __future__ import annotations

import sqlite3
import stat
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import CvmfsError
from .catalog_rows import (
    _TYPES,
    ENTRY_HINT,
    FETCH,
    FLAG_CHUNKED,
    FLAG_COMPRESSION_NONE,
    FLAG_EXTERNAL,
    FLAG_FILE,
    FLAG_HIDDEN,
    Chunk,
    DirEntry,
    NestedRef,
    ObjectRef,
    Problem,
    _int,
    _text,
    check_name,
    chunk_at,
    field_problem,
    inode_of_md5_half,
    join,
    md5_pair,
    parse_xattrs,
    symlink_problem,
)
from .limits import (
    MAX_CATALOG_BYTES,
    MAX_CELL_BYTES,
    MAX_CHUNKS,
    MAX_ID,
    MAX_MTIME,
    MAX_NAME_BYTES,
    MAX_NESTED_REFS,
    MAX_PROPERTIES,
    MAX_SIZE,
    MAX_SYMLINK_BYTES,
    MAX_XATTR_BYTES,
    human,
)
from .objects import (
    ALGORITHM_IDS,
    ALGORITHM_ORDER,
    DIGEST_SIZE,
    algorithm_from_flags,
    from_digest,
    parse_hash,
)

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import Any

_new = object.__new__
#: what a row's parent is when it is not a directory (``Catalog.strays``)
_STRAY_PARENTS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFREG: "a regular file",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}
#: the longest path ``Catalog.strays`` rebuilds for a message (PATH_MAX)
MAX_PATH_BYTES = 4096
#: bound parameters of one ``IN`` list (``Catalog.objects_among``), under SQLite's older 999
IN_BATCH = 900

__all__ = [
    "FLAG_HIDDEN",
    "Catalog",
    "Chunk",
    "DirEntry",
    "NestedRef",
    "ObjectRef",
    "Problem",
    "chunk_at",
    "md5_pair",
    "parse_xattrs",
]


_SCHEMA_HINT = "the catalog is damaged or hostile: the server tools write plain tables"


def plain_schema(db: sqlite3.Connection, what: str, hint: str) -> None:
    """A CvmfsError unless every object in ``db``'s schema is a plain table or an index: a view or a
    virtual table is SQL of the file's writer run by every read (the server tools write neither). A
    catalog whose ``catalog`` was a view over an endless recursive query hung ``cvmfs ls`` (and
    every lookup) for ever, sorting rows without end (pr20a finding 8)."""
    for name, kind, sql in db.execute("SELECT name, type, sql FROM sqlite_master"):
        virtual = kind == "table" and str(sql or "").lstrip()[:14].upper() == "CREATE VIRTUAL"
        if kind not in ("table", "index", "trigger") or virtual:
            raise CvmfsError(
                f"{what}: {str(name)[:80]!r} is a {'virtual table' if virtual else kind}, not a table",
                hint=hint,
            )


def read_properties(db: sqlite3.Connection, what: str) -> dict[Any, Any]:
    """The ``properties`` table, at most MAX_PROPERTIES rows (read whole: pr20a finding 10)."""
    rows = db.execute(f"SELECT key, value FROM properties LIMIT {MAX_PROPERTIES + 1}").fetchall()
    if len(rows) > MAX_PROPERTIES:
        raise CvmfsError(
            f"{what}: more than {MAX_PROPERTIES} properties (the server writes about ten)",
            hint="the database is damaged or hostile",
        )
    return dict(rows)


#: the indexes every lookup and listing relies on: (table, leading columns); the server tools make
#: them with the tables (primary keys and ``idx_catalog_parent``)
_INDEXED = (
    ("catalog", ("md5path_1", "md5path_2")),
    ("catalog", ("parent_1", "parent_2")),
    ("chunks", ("md5path_1", "md5path_2")),
)


def _check_indexes(db: sqlite3.Connection, what: str) -> None:
    """A CvmfsError unless the tables that are looked up by key have their index: without one,
    every lookup reads the whole table, and a listing of N directories costs N whole-table reads (a
    catalog of 20,000 directories without them took 31.6 s to list, 1.9 s with; a million: a day)."""
    tables = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, columns in _INDEXED:
        if table not in tables:
            continue  # a schema before chunking has no chunks table; no catalog table is said later
        leading = set()
        for index in db.execute(f"PRAGMA index_list({table})").fetchall():
            if index[4]:  # partial (``WHERE 0``): used by no lookup of ours
                continue
            info = db.execute(f"PRAGMA index_info({_quoted(str(index[1]))})").fetchall()
            leading.add(tuple(str(r[2]) for r in info[: len(columns)]))
        if columns not in leading:
            raise CvmfsError(
                f"{what}: table {table} has no index on ({', '.join(columns)}): every lookup would "
                "read the whole table",
                hint="the catalog is damaged or hostile: the server tools write it with its indexes",
            )


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Catalog:
    """One catalog database, opened read-only. Safe to share between threads."""

    def __init__(self, db_path: Path, *, name: str, where: str, depth: int = 0):
        self.path = db_path
        self.name = name  # object name (hex + id), for error messages
        self.where = where
        self.depth = depth  # 0 for the root catalog, 1 for its nested catalogs, ...
        uri = "file:" + urllib.parse.quote(str(db_path)) + "?mode=ro&immutable=1"
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.text_factory = _text
            self._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_CELL_BYTES)
            # Pages read through a memory map of the file, not a pread each into SQLite's own cache
            # (issue 13): a booting μCernVM's LOOKUPs and listings hit the catalog's B-tree at random,
            # and each page missing from SQLite's cache was a system call and a copy (a mapped page
            # costs neither once faulted in); on a cold page cache also one 4 KiB disk read (the
            # kernel reads a random pread as is) where a fault reads the 128 KiB around it. The file
            # is read-only and never rewritten in place (copies are renamed into place), so the map
            # cannot shrink under SQLite; a disk error while reading it is SIGBUS, not an error line.
            self._db.execute(f"PRAGMA mmap_size={MAX_CATALOG_BYTES}")  # SQLite may cap it (2 GiB)
            # One cursor for every ``_query`` (they run under ``_lock``, one at a time): not a cursor
            # made and freed per query, as ``Connection.execute`` does, on every FUSE LOOKUP
            self._cursor = self._db.cursor()
            plain_schema(self._db, f"{where}: catalog {name}C", _SCHEMA_HINT)
            _check_indexes(self._db, f"{where}: catalog {name}C")
            self.properties = read_properties(self._db, f"{where}: catalog {name}C")
            cols = {row[1] for row in self._db.execute("PRAGMA table_info(catalog)")}
            nested_cols = {row[1] for row in self._db.execute("PRAGMA table_info(nested_catalogs)")}
        except sqlite3.DatabaseError as e:
            raise CvmfsError(f"{where}: catalog {name}C is not a readable SQLite catalog: {e}") from e
        if not cols:
            raise CvmfsError(f"{where}: catalog {name}C has no 'catalog' table")
        try:
            self.schema = float(self.properties.get("schema", 0) or 0)
            self.schema_revision = int(self.properties.get("schema_revision", 0) or 0)
        except (TypeError, ValueError) as e:
            raise CvmfsError(f"{where}: catalog {name}C: schema properties are not numbers") from e
        self.root_prefix = str(self.properties.get("root_prefix", "") or "").rstrip("/")
        self._has_xattr = "xattr" in cols
        self._has_mtimens = "mtimens" in cols
        self._nested_size = "size" in nested_cols
        # An over-long symlink or xattr cell comes as the integer -1, measured by SQLite and never
        # fetched into Python (a 4 GiB catalog may hold a cell of hundreds of MB; SQLite 3.40 has
        # no octet_length, so ``length`` of a text counts characters: more than the byte limit
        # in characters is more in bytes too; the byte check follows on the fetched text). A text
        # cell is read by SQLite to be counted: MAX_CELL_BYTES bounds that.
        self._select = (
            "SELECT hash, size, mode, mtime, flags, name, "
            f"CASE WHEN length(symlink) > {MAX_SYMLINK_BYTES} THEN -1 ELSE symlink END, "
            "uid, gid, hardlinks, "
            + (
                f"CASE WHEN length(xattr) > {MAX_XATTR_BYTES} THEN -1 ELSE xattr END"
                if self._has_xattr
                else "NULL"
            )
            + ", "
            + ("mtimens" if self._has_mtimens else "NULL")
            + " FROM catalog"
        )
        self._lookup_sql = self._select + " WHERE md5path_1=? AND md5path_2=? LIMIT 2"
        self._children_sql = self._select + " WHERE parent_1=? AND parent_2=? ORDER BY name"

    @property
    def revision(self) -> int:
        try:
            return int(self.properties.get("revision", 0) or 0)
        except (TypeError, ValueError):
            return 0

    @property
    def label(self) -> str:
        """``catalog <hash>C`` (and where it is mounted, for a nested one), for messages."""
        return f"catalog {self.name}C" + (f" at {self.root_prefix}" if self.root_prefix else "")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _error(self, e: sqlite3.Error) -> CvmfsError:
        if isinstance(e, sqlite3.DataError):  # SQLITE_TOOBIG: over the connection's length limit
            return CvmfsError(
                f"{self.where}: {self.label}: a value in it is longer than {human(MAX_CELL_BYTES)} ({e})",
                hint=ENTRY_HINT,
            )
        return CvmfsError(f"{self.where}: {self.label} cannot be queried: {e}", hint=ENTRY_HINT)

    def _query(self, sql: str, args: tuple[object, ...]) -> list[Any]:
        with self._lock:
            try:
                return self._cursor.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise self._error(e) from e

    def _stream(self, sql: str, args: tuple[object, ...]) -> Iterator[Any]:
        """Rows of a query, ``FETCH`` at a time (the lock is held only while fetching)."""
        with self._lock:
            try:
                cursor = self._db.execute(sql, args)
            except sqlite3.Error as e:
                raise self._error(e) from e
        try:
            while True:
                with self._lock:
                    try:
                        rows = cursor.fetchmany(FETCH)
                    except sqlite3.Error as e:
                        raise self._error(e) from e
                if not rows:
                    return
                yield from rows
        finally:
            with self._lock:
                try:
                    cursor.close()
                except sqlite3.Error:  # the catalog was closed under a suspended listing
                    pass

    def _bad_entry(self, parent: str, name: object, why: str) -> CvmfsError:
        return CvmfsError(
            f"{self.where}: {self.label}: directory {parent or '/'}: entry {name!r}: {why}", hint=ENTRY_HINT
        )

    def lookup(self, path: str) -> DirEntry | None:
        pair = md5_pair(path)
        rows = self._query(self._lookup_sql, pair)
        if not rows:
            return None
        parent, _, base = path.rpartition("/") if path not in ("", "/") else ("", "", "")
        if len(rows) > 1:
            raise self._bad_entry(parent, base, "the name appears twice in the directory")
        name = rows[0][5]
        if name != base:
            why = check_name(name) or f"the entry's name does not match its path {path}"
            raise self._bad_entry(parent, name, why)
        entry = self._entry(rows[0], parent, path)
        if base and not entry.shares_inode:
            # ``DirEntry.inode`` is ``path_inode``: from the md5 of the path just hashed for the query,
            # not a second md5 of it (every FUSE LOOKUP asks for it)
            entry.__dict__["inode"] = inode_of_md5_half(pair[0])
        return entry

    def children(self, path: str, on_problem: Problem | None = None) -> Iterator[DirEntry]:
        """Entries whose parent is ``path``, in name order (byte order of the UTF-8, as ``sorted``),
        streamed. Hidden entries (the server's virtual ``/.cvmfs`` snapshot directory) are left out,
        as the client does; lookup finds them.

        A bad entry (name, duplicate, field out of range) raises CvmfsError, or with ``on_problem``
        is reported there and skipped.
        """
        return self._checked(path, self._stream(self._children_sql, md5_pair(path)), on_problem)

    def listing(self, path: str, limit: int) -> list[DirEntry] | None:
        """``children`` (raising on a bad entry) as a list read in one query, or None when there
        are more than ``limit`` rows (stream those): a small directory without a stream kept open
        and its generators resumed per row (the FUSE client lists every directory it shows)."""
        rows = self._query(self._children_sql + f" LIMIT {int(limit) + 1}", md5_pair(path))
        if len(rows) > limit:
            return None
        return list(self._checked(path, rows, None))

    def _checked(self, path: str, rows: Iterable[Any], on_problem: Problem | None) -> Iterator[DirEntry]:
        """The entries of ``rows`` (``path``'s children in name order), each checked (see children)."""
        previous: str | None = None
        for r in rows:
            name = r[5]
            try:
                # Fast path for the common name; check_name says what is wrong with the others.
                if (
                    type(name) is str
                    and name
                    and name != previous
                    and "/" not in name
                    and "\0" not in name
                    and name != "."
                    and name != ".."
                    and len(name) <= MAX_NAME_BYTES // 4
                ):
                    why = None
                else:
                    why = check_name(name)
                if why is None and name == previous:
                    why = "the name appears twice in the directory"
                previous = name
                if why is not None:
                    raise self._bad_entry(path, name, why)
                flags = r[4]
                if type(flags) is int and flags & FLAG_HIDDEN:
                    continue
                entry = self._entry(r, path, None)
            except CvmfsError as e:
                if on_problem is None:
                    raise
                on_problem(e)
                continue
            yield entry

    def strays(self) -> Iterator[CvmfsError]:
        """A problem for each row no listing reaches: its parent is not a directory of this
        catalog (a symlink, a regular file, or no row at all; the catalog's own root row, whose
        parent is in the catalog above, excepted). ``lookup`` still finds such a row by its
        path, so ``cat /dir/link/x`` would read a file ``verify``'s walk never checked. One
        streamed query; a path is rebuilt only for the rows reported."""
        root = md5_pair(self.root_prefix or "/")
        sql = (
            "SELECT c.name, c.parent_1, c.parent_2, p.mode, p.md5path_1 IS NOT NULL FROM catalog c "
            "LEFT JOIN catalog p ON p.md5path_1 = c.parent_1 AND p.md5path_2 = c.parent_2 "
            "WHERE NOT (c.md5path_1 IS ? AND c.md5path_2 IS ?) "
            f"AND (p.md5path_1 IS NULL OR NOT ((p.mode & {stat.S_IFMT(0o177777)}) IS {stat.S_IFDIR}))"
        )
        for name, p1, p2, mode, found in self._stream(sql, root):
            parent = self._path_of((p1, p2)) if found else None
            if not found:
                where = f"entry {name!r:.300}: its parent is not in the catalog (path hash {p1}, {p2})"
            elif parent is None:
                where = f"entry {name!r:.300}: its parent is not a directory (and not reached from the root)"
            else:
                kind = _STRAY_PARENTS.get(mode & 0o170000, "") if type(mode) is int else ""
                where = f"{join(parent, str(name)[:300])}: its parent {parent} is {kind or 'not a directory'}"
            yield CvmfsError(
                f"{self.where}: {self.label}: {where}: no listing reaches it",
                hint="the catalog is damaged or hostile: a reader looking the path up would find what "
                "verify never checked",
            )

    def _path_of(self, pair: tuple[object, object]) -> str | None:
        """The path of the row keyed ``pair``, rebuilt from its names up to this catalog's root;
        None if the chain breaks, loops or runs deeper than any path can be."""
        root = md5_pair(self.root_prefix or "/")
        names: list[str] = []
        seen: set[tuple[object, object]] = set()
        length = len(self.root_prefix)
        while pair != root:
            if pair in seen or length > MAX_PATH_BYTES:
                return None
            seen.add(pair)
            rows = self._query(
                "SELECT name, parent_1, parent_2 FROM catalog WHERE md5path_1=? AND md5path_2=? LIMIT 1", pair
            )
            if not rows or not isinstance(rows[0][0], str):
                return None
            names.append(rows[0][0])
            length += 1 + len(rows[0][0])
            pair = (rows[0][1], rows[0][2])
        return (self.root_prefix + "/" + "/".join(reversed(names))) if names else (self.root_prefix or "/")

    def nested(self) -> list[NestedRef]:
        """The references to nested catalogs, each strictly below this catalog's root."""
        size = "size" if self._nested_size else "0"
        rows = self._query(f"SELECT path, sha1, {size} FROM nested_catalogs LIMIT {MAX_NESTED_REFS + 1}", ())
        if len(rows) > MAX_NESTED_REFS:
            raise CvmfsError(
                f"{self.where}: {self.label} references more than {MAX_NESTED_REFS} nested catalogs",
                hint=ENTRY_HINT,
            )
        out = []
        top = self.root_prefix
        for p, h, s in rows:
            where = f"{self.where}: {self.label}: nested catalog reference {p!r}"
            if not isinstance(p, str):
                raise CvmfsError(f"{where}: the path is not text", hint=ENTRY_HINT)
            ref = p.rstrip("/")
            parts = ref.split("/")
            if (
                not ref.startswith(top + "/")
                or any(check_name(c) for c in parts[1:])
                or len(ref) <= len(top) + 1
            ):
                raise CvmfsError(
                    f"{where}: not a path strictly below the catalog's root {top or '/'}",
                    hint="a nested catalog that points at itself, a parent or elsewhere would never end; "
                    "the repository is damaged or hostile",
                )
            try:
                hash_text = str(parse_hash(str(h)))
            except ValueError as e:
                raise CvmfsError(f"{where}: bad hash {h!r}", hint=ENTRY_HINT) from e
            try:
                declared = _int(s, "size", 0, MAX_SIZE)
            except ValueError as e:
                raise CvmfsError(f"{where}: {e}", hint=ENTRY_HINT) from e
            out.append(NestedRef(ref, hash_text, declared))
        return out

    def objects(self) -> Iterator[ObjectRef]:
        """Every data object this catalog's rows name (whole files and chunks; external files and
        the bulk hash of chunked files name none), streamed; duplicates are not removed."""
        return self._objects("", ())

    def objects_among(self, digests: Sequence[bytes]) -> Iterator[ObjectRef]:
        """``objects`` whose hash (the raw digest) is one of ``digests``: SQLite filters the rows
        (one scan per table, ``IN`` a bound list), not Python (the boot list maps its ~1,700 names
        to sizes on the guest's one CPU: ``bootlist.py``)."""
        for k in range(0, len(digests), IN_BATCH):
            part = tuple(digests[k : k + IN_BATCH])
            yield from self._objects(f" AND {{h}} IN ({','.join('?' * len(part))})", part)

    def _objects(self, where: str, args: tuple[object, ...]) -> Iterator[ObjectRef]:
        """``objects``, with ``where`` (``{h}``: the hash column) added to each query's condition."""
        skip = FLAG_CHUNKED | FLAG_EXTERNAL
        queries = (
            (
                f"SELECT hash, size, flags FROM catalog WHERE (flags & {FLAG_FILE}) "
                f"AND NOT (flags & {skip}) AND hash IS NOT NULL" + where.format(h="hash"),
                "",
            ),
            (
                "SELECT c.hash, c.size, f.flags FROM chunks c JOIN catalog f "
                "ON c.md5path_1 = f.md5path_1 AND c.md5path_2 = f.md5path_2 "
                f"WHERE (f.flags & {FLAG_FILE}) AND (f.flags & {FLAG_CHUNKED}) "
                f"AND NOT (f.flags & {FLAG_EXTERNAL})" + where.format(h="c.hash"),
                "P",
            ),
        )
        tables = {r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type='table'", ())}
        for sql, suffix in queries:
            if suffix and "chunks" not in tables:  # schemas before chunking had no such table
                continue
            for h, size, flags in self._stream(sql, args):
                if h in (None, b""):
                    continue
                if (
                    type(h) is not bytes
                    or len(h) != DIGEST_SIZE
                    or type(size) is not int
                    or not 0 <= size <= MAX_SIZE
                    or type(flags) is not int
                    or (flags >> 8) & 7 >= len(ALGORITHM_ORDER)
                ):
                    raise CvmfsError(
                        f"{self.where}: {self.label}: a {'chunk' if suffix else 'file'} row has a bad "
                        f"hash, size or flags ({h!r:.60}, {size!r}, {flags!r})",
                        hint=ENTRY_HINT,
                    )
                yield ObjectRef(
                    str(from_digest(h, algorithm_from_flags(flags))),
                    suffix,
                    size,
                    not flags & FLAG_COMPRESSION_NONE,
                )

    def chunks_of(self, path: str, algorithm: str, size: int, where: str) -> tuple[Chunk, ...]:
        """The chunk list of a file of ``size`` bytes: from 0, contiguous, adding up to the size."""
        a, b = md5_pair(path)
        rows = self._query(
            "SELECT offset, size, hash FROM chunks WHERE md5path_1=? AND md5path_2=? "
            f"ORDER BY offset, size LIMIT {MAX_CHUNKS + 1}",
            (a, b),
        )
        if len(rows) > MAX_CHUNKS:
            raise CvmfsError(f"{where}: more than {MAX_CHUNKS} chunks", hint=ENTRY_HINT)
        out = []
        pos = 0
        for o, n, h in rows:
            if type(o) is not int or type(n) is not int or n <= 0 or o != pos:
                raise CvmfsError(
                    f"{where}: chunk list is not contiguous from 0 (chunk at {o!r} of {n!r} bytes, "
                    f"expected one at {pos})",
                    hint=ENTRY_HINT,
                )
            if not isinstance(h, bytes) or len(h) != DIGEST_SIZE:
                raise CvmfsError(f"{where}: chunk at {o} has no valid content hash", hint=ENTRY_HINT)
            out.append(Chunk(o, n, str(from_digest(h, algorithm))))
            pos += n
        if rows and pos != size:
            raise CvmfsError(f"{where}: chunks add up to {pos} bytes, the file has {size}", hint=ENTRY_HINT)
        return tuple(out)

    def statistics(self) -> dict[str, int]:
        try:
            # the first MAX_PROPERTIES counters (the server writes about thirty): a hostile table
            # of millions was read whole by `cvmfs info` (pr20a finding 12)
            rows = self._query(f"SELECT counter, value FROM statistics LIMIT {MAX_PROPERTIES}", ())
        except CvmfsError:
            return {}
        return {str(k): v for k, v in rows if type(v) is int}

    def _field_error(self, full: str, *values: object) -> None:
        """Raise the error for the first field out of range (the slow path of ``_entry``)."""
        why = field_problem(*values)
        if why is None:
            raise AssertionError("a field was out of range but no check says which")
        raise CvmfsError(f"{self.where}: {self.label}: {full}: {why}", hint=ENTRY_HINT)

    def _xattrs(self, blob: object, full: str) -> dict[str, bytes]:
        where = f"{self.where}: {self.label}: {full}"
        if blob == -1:
            raise CvmfsError(
                f"{where}: extended attribute block is longer than {MAX_XATTR_BYTES} bytes", hint=ENTRY_HINT
            )
        return parse_xattrs(blob, where)  # type: ignore[arg-type]  # parse_xattrs checks the type

    def _entry(self, row: Any, parent: str, path: str | None) -> DirEntry:
        (h, size, mode, mtime, flags, name, symlink, uid, gid, hardlinks, xattr, mtimens) = row
        if path is None:
            path = join(parent, name)
        full = "/" if path in ("", "/") else path
        # One inline test for the common case (this runs for every row); the slow path says why.
        # NULL reads as 0 (old schemas; mtimens is NULL when the publisher had no nanoseconds)
        if mtimens is None:
            mtimens = 0
        if hardlinks is None:
            hardlinks = 0
        if size is None or uid is None or gid is None or mtime is None or flags is None:
            size, uid, gid, mtime, flags = (0 if v is None else v for v in (size, uid, gid, mtime, flags))
        if not (
            type(mode) is int
            and type(flags) is int
            and type(size) is int
            and type(uid) is int
            and type(gid) is int
            and type(mtime) is int
            and type(mtimens) is int
            and type(hardlinks) is int
            and 0 <= mode <= 0o177777
            and (mode & 0o170000) in _TYPES
            and flags >= 0
            and size >= 0
            and 0 <= uid <= MAX_ID
            and 0 <= gid <= MAX_ID
            and -MAX_MTIME <= mtime <= MAX_MTIME
            and -1 <= mtimens <= 999_999_999
            and hardlinks >= 0
            and (flags >> 8) & 7 < 3
        ):
            self._field_error(full, mode, flags, size, uid, gid, mtime, mtimens, hardlinks)
        mode_i: int = mode
        flags_i: int = flags
        size_i: int = size
        algorithm = ALGORITHM_ORDER[(flags_i >> 8) & 7]
        link = ""
        if mode_i & 0o170000 == stat.S_IFLNK:
            where = f"{self.where}: {self.label}: {full}"
            # -1: the query measured it and did not fetch it
            why = (
                f"symlink target is longer than {MAX_SYMLINK_BYTES} bytes"
                if symlink == -1
                else symlink_problem(symlink)
            )
            if why is not None:
                raise CvmfsError(f"{where}: {why}", hint=ENTRY_HINT)
            link = symlink
        content = None
        if h:
            if type(h) is not bytes or len(h) != DIGEST_SIZE:
                raise CvmfsError(
                    f"{self.where}: {self.label}: {full}: content hash is not a {DIGEST_SIZE}-byte digest",
                    hint=ENTRY_HINT,
                )
            content = h.hex() + ALGORITHM_IDS[algorithm]
        chunks: tuple[Chunk, ...] = ()
        if flags_i & FLAG_CHUNKED and mode_i & 0o170000 == stat.S_IFREG:
            chunks = self.chunks_of(full, algorithm, size_i, f"{self.where}: {self.label}: {full}")
        # DirEntry's own __init__ (frozen: each of its 17 fields set through object.__setattr__)
        # was two thirds of a row's cost; its fields straight into a new instance's __dict__
        # (every one of them: test_reader checks that none is missed).
        entry = _new(DirEntry)
        entry.__dict__.update(
            path=full,
            name="" if full == "/" else name,  # the row's, checked against the path
            mode=mode_i,
            kind=mode_i & 0o170000,
            size=size_i,
            mtime=mtime,
            mtime_ns=mtime * 1_000_000_000 + max(mtimens, 0),
            uid=uid,
            gid=gid,
            symlink=link,
            hardlink_group=hardlinks >> 32,
            linkcount=(hardlinks & 0xFFFFFFFF) or 1,
            flags=flags_i,
            content_hash=content,
            chunks=chunks,
            xattrs=self._xattrs(xattr, full) if xattr else {},
            catalog_prefix=self.root_prefix,
        )
        return entry
