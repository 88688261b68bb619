"""Reading file catalogs: SQLite databases of schema 2.5 (revisions 1-7; 2.4 read as far as it goes).

Rows are keyed by the MD5 of the full repository path split into two little-endian signed int64s; a
directory's children share its path hash as their parent. A nested catalog holds the subtree below
its mountpoint and is referenced from its parent by hash and uncompressed size.
"""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CvmfsError
from .objects import algorithm_from_flags, from_digest, parse_hash

FLAG_DIR = 1
FLAG_NESTED_MOUNTPOINT = 2
FLAG_FILE = 4
FLAG_LINK = 8
FLAG_SPECIAL = 16
FLAG_NESTED_ROOT = 32
FLAG_CHUNKED = 64
FLAG_EXTERNAL = 128
FLAG_COMPRESSION_NONE = 1 << 11
FLAG_BIND_MOUNTPOINT = 0x4000
FLAG_HIDDEN = 0x8000
FLAG_DIRECT_IO = 0x10000


def md5_pair(path: str) -> tuple[int, int]:
    """The two signed 64-bit halves of md5(path) as stored in ``md5path_1/2`` (root is "")."""
    key = "" if path == "/" else path
    a, b = struct.unpack("<qq", hashlib.md5(key.encode("utf-8")).digest())
    return a, b


def path_inode(path: str) -> int:
    """A stable inode number for ``path`` (root is 1)."""
    if path in ("", "/"):
        return 1
    return (int.from_bytes(hashlib.md5(path.encode("utf-8")).digest()[:8], "little") >> 2) | 2


def hardlink_inode(catalog_prefix: str, group: int) -> int:
    """Hard links of one group share this inode (groups are numbered per catalog)."""
    digest = hashlib.md5(f"{catalog_prefix}\0{group}".encode()).digest()
    return (int.from_bytes(digest[:8], "little") >> 2) | 3


def parse_xattrs(blob: bytes | None, where: str) -> dict[str, bytes]:
    """``uint8 version=1, uint8 count, then count x (uint8 klen, uint8 vlen, key, value)``."""
    if not blob:
        return {}
    if blob[0] != 1 or len(blob) < 2:
        raise CvmfsError(f"{where}: unsupported extended attribute block (version {blob[0]})")
    out: dict[str, bytes] = {}
    pos = 2
    for _ in range(blob[1]):
        if pos + 2 > len(blob):
            raise CvmfsError(f"{where}: truncated extended attribute block")
        klen, vlen = blob[pos], blob[pos + 1]
        pos += 2
        key = blob[pos : pos + klen].decode("utf-8", errors="surrogateescape")
        out[key] = bytes(blob[pos + klen : pos + klen + vlen])
        pos += klen + vlen
    if pos > len(blob):
        raise CvmfsError(f"{where}: truncated extended attribute block")
    return out


@dataclass(frozen=True)
class Chunk:
    offset: int
    size: int  # uncompressed
    hash: str  # hex + algorithm id; the object has suffix "P"


@dataclass(frozen=True)
class DirEntry:
    path: str  # "/a/b"; the root is "/"
    name: str
    mode: int  # full st_mode
    size: int
    mtime: int
    mtime_ns: int
    uid: int
    gid: int
    symlink: str
    hardlink_group: int
    linkcount: int
    flags: int
    content_hash: str | None = None  # hex + algorithm id
    chunks: tuple[Chunk, ...] = ()
    xattrs: dict[str, bytes] = field(default_factory=dict, hash=False)
    catalog_prefix: str = ""  # root_prefix of the catalog holding this entry ("" = root catalog)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_special(self) -> bool:
        return not (self.is_dir or self.is_file or self.is_symlink)

    @property
    def is_chunked(self) -> bool:
        return bool(self.flags & FLAG_CHUNKED) and bool(self.chunks)

    @property
    def is_external(self) -> bool:
        return bool(self.flags & FLAG_EXTERNAL)

    @property
    def compressed(self) -> bool:
        return not self.flags & FLAG_COMPRESSION_NONE

    @property
    def is_nested_mountpoint(self) -> bool:
        return bool(self.flags & FLAG_NESTED_MOUNTPOINT)

    @property
    def rdev(self) -> int:
        """Device number of a character/block device (stored in ``size``)."""
        return self.size if self.is_special else 0

    @property
    def inode(self) -> int:
        if self.hardlink_group and not self.is_dir:
            return hardlink_inode(self.catalog_prefix, self.hardlink_group)
        return path_inode(self.path)


@dataclass(frozen=True)
class NestedRef:
    path: str
    hash: str  # hex + algorithm id, no suffix
    size: int  # uncompressed bytes (0 when the schema predates the column)


def join(parent: str, name: str) -> str:
    return f"/{name}" if parent in ("", "/") else f"{parent}/{name}"


class Catalog:
    """One catalog database, opened read-only. Safe to share between threads."""

    def __init__(self, db_path: Path, *, name: str, where: str):
        self.path = db_path
        self.name = name  # object name (hex + id), for error messages
        self.where = where
        uri = "file:" + urllib.parse.quote(str(db_path)) + "?mode=ro&immutable=1"
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.properties = dict(self._db.execute("SELECT key, value FROM properties").fetchall())
            cols = {row[1] for row in self._db.execute("PRAGMA table_info(catalog)")}
            nested_cols = {row[1] for row in self._db.execute("PRAGMA table_info(nested_catalogs)")}
        except sqlite3.DatabaseError as e:
            raise CvmfsError(f"{where}: catalog {name}C is not a readable SQLite catalog: {e}") from e
        if not cols:
            raise CvmfsError(f"{where}: catalog {name}C has no 'catalog' table")
        self.schema = float(self.properties.get("schema", 0) or 0)
        self.schema_revision = int(self.properties.get("schema_revision", 0) or 0)
        self.root_prefix = str(self.properties.get("root_prefix", "") or "").rstrip("/")
        self._has_xattr = "xattr" in cols
        self._has_mtimens = "mtimens" in cols
        self._nested_size = "size" in nested_cols
        self._select = (
            "SELECT hash, size, mode, mtime, flags, name, symlink, uid, gid, hardlinks, "
            "md5path_1, md5path_2, "
            + ("xattr" if self._has_xattr else "NULL")
            + ", "
            + ("mtimens" if self._has_mtimens else "NULL")
            + " FROM catalog"
        )

    @property
    def revision(self) -> int:
        return int(self.properties.get("revision", 0) or 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: tuple[object, ...]) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise CvmfsError(f"{self.where}: catalog {self.name}C cannot be queried: {e}") from e

    def lookup(self, path: str) -> DirEntry | None:
        a, b = md5_pair(path)
        rows = self._query(self._select + " WHERE md5path_1=? AND md5path_2=?", (a, b))
        if not rows:
            return None
        parent = path.rsplit("/", 1)[0] if path not in ("", "/") else ""
        return self._entry(rows[0], parent, path)

    def children(self, path: str) -> list[DirEntry]:
        """Entries whose parent is ``path``, sorted by name (as str). Hidden entries (the server's
        virtual ``/.cvmfs`` snapshot directory) are left out, as the client does; lookup finds them."""
        a, b = md5_pair(path)
        rows = self._query(self._select + " WHERE parent_1=? AND parent_2=?", (a, b))
        entries = [self._entry(r, path, None) for r in rows if not int(r[4] or 0) & FLAG_HIDDEN]
        entries.sort(key=lambda e: e.name)
        return entries

    def nested(self) -> list[NestedRef]:
        size = "size" if self._nested_size else "0"
        rows = self._query(f"SELECT path, sha1, {size} FROM nested_catalogs", ())
        out = []
        for p, h, s in rows:
            try:
                hash_text = str(parse_hash(str(h)))
            except ValueError as e:
                raise CvmfsError(f"{self.where}: catalog {self.name}C: bad nested hash for {p}: {h!r}") from e
            out.append(NestedRef(str(p).rstrip("/"), hash_text, int(s or 0)))
        return out

    def chunks_of(self, path: str, algorithm: str) -> tuple[Chunk, ...]:
        a, b = md5_pair(path)
        rows = self._query(
            "SELECT offset, size, hash FROM chunks WHERE md5path_1=? AND md5path_2=? ORDER BY offset", (a, b)
        )
        return tuple(Chunk(int(o), int(s), str(from_digest(bytes(h), algorithm))) for o, s, h in rows)

    def statistics(self) -> dict[str, int]:
        try:
            rows = self._query("SELECT counter, value FROM statistics", ())
        except CvmfsError:
            return {}
        return {str(k): int(v) for k, v in rows}

    def _entry(self, row: Any, parent: str, path: str | None) -> DirEntry:
        (h, size, mode, mtime, flags, name, symlink, uid, gid, hardlinks, _m1, _m2, xattr, mtimens) = row
        flags_i = int(flags or 0)
        name_s = str(name or "")
        if path is None:
            path = join(parent, name_s)
        full = "/" if path in ("", "/") else path
        where = f"{self.where}: catalog {self.name}C: {full}"
        try:
            algorithm = algorithm_from_flags(flags_i)
        except ValueError as e:
            raise CvmfsError(f"{where}: {e}") from e
        content = str(from_digest(bytes(h), algorithm)) if h else None
        chunks: tuple[Chunk, ...] = ()
        if flags_i & FLAG_CHUNKED:
            chunks = self.chunks_of(full, algorithm)
        hl = int(hardlinks or 0)
        mt = int(mtime or 0)
        ns = int(mtimens or 0)
        return DirEntry(
            path=full,
            name="" if full == "/" else full.rsplit("/", 1)[1],
            mode=int(mode or 0),
            size=int(size or 0),
            mtime=mt,
            mtime_ns=mt * 1_000_000_000 + ns,
            uid=int(uid or 0),
            gid=int(gid or 0),
            symlink=str(symlink or ""),
            hardlink_group=hl >> 32,
            linkcount=(hl & 0xFFFFFFFF) or 1,
            flags=flags_i,
            content_hash=content,
            chunks=chunks,
            xattrs=parse_xattrs(xattr, where) if xattr else {},
            catalog_prefix=self.root_prefix,
        )
