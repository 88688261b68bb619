"""Hostile CernVM-FS repositories (issue 12), for the tests and the benchmarks.

Every case starts as a small, normal repository made by the project's own publisher. Its catalogs
are then edited with sqlite3 (rows a publisher would never write), recompressed, stored under their
new hashes, the references above them rewritten (nested catalog rows, manifest ``C``/``B``), and the
manifest re-signed with the test keys: the repositories are *correctly signed* and hostile, as from
a compromised publisher. ``MitmServer`` plays the other attacker, a man in the middle without keys.

    base = publish_base(tmp / "base")                # once: keys, publisher, a tiny tree
    repo = build_case("name-dotdot", tmp / "c", base)   # a copy of it, edited and re-signed
    run_measured([*cli(), "cvmfs", "ls", *repo.cli_args(), "/"], timeout=60)

``CASES`` lists every case with the error a reader must give (``None``: the case is a big but
legitimate repository the reader must handle in bounded memory). The big cases are written with
sqlite directly (no publisher), so the million-entry directory is built in seconds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import shutil
import sqlite3
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs import manifest as mf
from cernvm_build.cvmfs.catalog_write import CatalogWriter, Entry
from cernvm_build.cvmfs.chunking import ChunkingSettings
from cernvm_build.cvmfs.publish import create_repository, publish_tree

FQRN = "hostile.cernvm.test"
#: mtime of every row the editor writes (2023-11-14)
TS = 1_700_000_000
REPO_ROOT = Path(__file__).resolve().parents[2]

FLAG_DIR = 1
FLAG_NESTED_MOUNTPOINT = 2
FLAG_FILE = 4
FLAG_LINK = 8
FLAG_SPECIAL = 16
FLAG_NESTED_ROOT = 32
FLAG_CHUNKED = 64


# -- the base repository ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Repo:
    """A Stratum directory and the keys that verify it."""

    stratum: Path
    keys_dir: Path
    fqrn: str = FQRN

    @property
    def pub(self) -> Path:
        return self.keys_dir / f"{self.fqrn}.pub"

    def keyset(self) -> keymod.KeySet:
        return keymod.load_keys(self.keys_dir, self.fqrn)

    def cli_args(self, source: str | None = None) -> list[str]:
        """``SOURCE --key PUB --fqrn FQRN`` for ``cernvm-build cvmfs <cmd>``."""
        return [source or str(self.stratum), "--key", str(self.pub), "--fqrn", self.fqrn]


@functools.cache
def _keyset(fqrn: str) -> keymod.KeySet:
    return keymod.generate_keys(fqrn)


#: The base tree: /dir holds a file, a link and a subdirectory; /chunked is cut into several chunks;
#: /nested and /nested/inner are nested catalogs.
BASE_FILES = {
    "dir/file": b"hello\n",
    "dir/sub/deep": b"deep\n",
    "nested/.cvmfscatalog": b"",
    "nested/data": b"nested\n",
    "nested/inner/.cvmfscatalog": b"",
    "nested/inner/x": b"x\n",
}
CHUNKED_SIZE = 256 << 10
CHUNKING = ChunkingSettings(min_size=16 << 10, avg_size=32 << 10, max_size=64 << 10)


def publish_base(dest: Path, fqrn: str = FQRN) -> Repo:
    """Keys in ``dest/keys``, a published repository in ``dest/stratum``."""
    keys = _keyset(fqrn)
    keys.save(dest / "keys")
    src = dest / "src"
    for rel, data in BASE_FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "dir" / "link").symlink_to("file")
    (src / "chunked").write_bytes(random.Random(12).randbytes(CHUNKED_SIZE))
    stratum = dest / "stratum"
    now = int(time.time())
    create_repository(stratum, fqrn, keys, timestamp=now)
    publish_tree(stratum, fqrn, keys, src, timestamp=now + 1, chunking=CHUNKING)
    shutil.rmtree(src)
    return Repo(stratum, dest / "keys", fqrn)


def copy_repo(base: Repo, dest: Path) -> Repo:
    """A private copy of ``base`` (objects are hard-linked: they are never modified in place)."""
    shutil.copytree(base.stratum, dest / "stratum", copy_function=os.link)
    for name in (".cvmfspublished", ".cvmfswhitelist"):
        (dest / "stratum" / name).unlink()
        shutil.copyfile(base.stratum / name, dest / "stratum" / name)
    shutil.copytree(base.keys_dir, dest / "keys")
    return Repo(dest / "stratum", dest / "keys", base.fqrn)


def rotate_certificate(repo: Repo, *, days: int = 30) -> str:
    """A second signing certificate, as ``cvmfs_server`` rotates one: a new certificate key under
    the same master key, its certificate stored as an object, a whitelist listing it (signed by the
    master key) published, and the keys folder's ``.crt``/``.key`` replaced, so that an ``Editor``
    made after this signs with it. Returns the certificate's object name (the manifest's ``X``)."""
    from dataclasses import replace

    from cryptography.hazmat.primitives.asymmetric import rsa

    from cernvm_build.cvmfs.commit import whitelist_bytes

    old = repo.keyset()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new = replace(
        old, cert_pem=keymod.self_signed_certificate(repo.fqrn, key), cert_key_pem=keymod._pem_private(key)
    )
    new.save(repo.keys_dir)
    ed = Editor(repo)
    try:
        name = ed.put(new.cert_pem, "X")
    finally:
        ed.close()
    (repo.stratum / ".cvmfswhitelist").write_bytes(whitelist_bytes(repo.fqrn, new, int(time.time()), days))
    return name


# -- editing catalogs and re-signing ---------------------------------------------------------------


def md5_pair(path: str) -> tuple[int, int]:
    a, b = struct.unpack("<qq", hashlib.md5(path.encode("utf-8", "surrogateescape")).digest())
    return a, b


def join(parent: str, name: str) -> str:
    return f"/{name}" if parent in ("", "/") else f"{parent}/{name}"


def default_flags(mode: int) -> int:
    if stat.S_ISDIR(mode):
        return FLAG_DIR
    if stat.S_ISLNK(mode):
        return FLAG_FILE | FLAG_LINK
    if stat.S_ISREG(mode):
        return FLAG_FILE
    return FLAG_FILE | FLAG_SPECIAL


@dataclass
class _Open:
    prefix: str
    parent: str | None  # prefix of the catalog that references this one (None: the root)
    path: Path
    db: sqlite3.Connection


class Editor:
    """Edit the catalogs of a repository, then ``commit()``: recompress, rehash, re-reference, re-sign.

    Usable as a context manager (commits on success).
    """

    def __init__(self, repo: Repo, *, level: int = 6):
        self.repo = repo
        self.keys = repo.keyset()
        self.level = level
        signed = mf.split_signed((repo.stratum / ".cvmfspublished").read_bytes(), "manifest")
        self.manifest = mf.parse(signed.body)
        self._work = Path(tempfile.mkdtemp(prefix="hostile-edit-"))
        self._open: dict[str, _Open] = {}

    def __enter__(self) -> Editor:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.close()

    def close(self) -> None:
        for o in self._open.values():
            with contextlib.suppress(sqlite3.Error):
                o.db.close()
        self._open.clear()
        shutil.rmtree(self._work, ignore_errors=True)

    # -- objects -------------------------------------------------------------------------------
    def object_path(self, name: str, suffix: str = "") -> Path:
        return self.repo.stratum / "data" / name[:2] / (name[2:] + suffix)

    def put_stored(self, stored: bytes, suffix: str = "") -> str:
        """Store bytes exactly as given (normally zlib data); returns the object name (hex)."""
        name = hashlib.sha1(stored).hexdigest()
        p = self.object_path(name, suffix)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(stored)
        return name

    def put(self, data: bytes, suffix: str = "") -> str:
        return self.put_stored(zlib.compress(data, self.level), suffix)

    def read_object(self, name: str, suffix: str = "") -> bytes:
        return zlib.decompress(self.object_path(name, suffix).read_bytes())

    def _put_file(self, path: Path, suffix: str) -> tuple[str, int]:
        """Compress a file into an object without holding it in memory; (name, inflated size)."""
        comp = zlib.compressobj(self.level)
        h = hashlib.sha1()
        fd, tmp = tempfile.mkstemp(dir=self._work)
        size = 0
        with os.fdopen(fd, "wb") as out, open(path, "rb") as f:
            while block := f.read(1 << 20):
                size += len(block)
                z = comp.compress(block)
                h.update(z)
                out.write(z)
            z = comp.flush()
            h.update(z)
            out.write(z)
        name = h.hexdigest()
        dest = self.object_path(name, suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp, dest)
        return name, size

    # -- catalogs ------------------------------------------------------------------------------
    def _refs(self, db: sqlite3.Connection) -> dict[str, str]:
        return {str(p).rstrip("/"): str(h) for p, h in db.execute("SELECT path, sha1 FROM nested_catalogs")}

    def catalog(self, prefix: str = "") -> sqlite3.Connection:
        """The catalog whose root is ``prefix`` ("" for the root catalog), opened for writing."""
        prefix = prefix.rstrip("/")
        if prefix in self._open:
            return self._open[prefix].db
        if prefix == "":
            name, parent = self.manifest.root_hash, None
        else:
            parent = self._parent_of(prefix)
            refs = self._refs(self.catalog(parent))
            if prefix not in refs:
                raise KeyError(f"no nested catalog at {prefix}")
            name = refs[prefix]
        path = self._work / f"cat{len(self._open)}.db"
        with open(self.object_path(name, "C"), "rb") as f, open(path, "wb") as out:
            d = zlib.decompressobj()
            while block := f.read(1 << 20):
                out.write(d.decompress(block))
            out.write(d.flush())
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-65536")
        self._open[prefix] = _Open(prefix, parent, path, db)
        return db

    def _parent_of(self, prefix: str) -> str:
        """The prefix of the catalog holding the reference to ``prefix`` (the deepest one above)."""
        cur = ""
        while True:
            refs = self._refs(self.catalog(cur))
            below = [p for p in refs if prefix.startswith(p + "/")]
            if not below:
                return cur
            cur = max(below, key=len)

    def new_catalog(self, prefix: str, *, parent: str | None = None) -> sqlite3.Connection:
        """A new, empty nested catalog at ``prefix`` (a directory the editor also adds to the parent
        catalog as a mountpoint, with a reference that ``commit`` fills in)."""
        parent = self._parent_of(prefix) if parent is None else parent
        pdb = self.catalog(parent)
        up, name = prefix.rsplit("/", 1)
        add_row(pdb, up, name, mode=stat.S_IFDIR | 0o755, flags=FLAG_DIR | FLAG_NESTED_MOUNTPOINT, size=4096)
        pdb.execute("INSERT INTO nested_catalogs VALUES (?, ?, ?)", (prefix, "0" * 40, 0))
        path = self._work / f"cat{len(self._open)}.db"
        w = CatalogWriter(path, root_prefix=prefix, revision=1, last_modified=TS, previous_revision=None)
        w.add(Entry(path=prefix, mode=stat.S_IFDIR | 0o755, mtime=TS, linkcount=2), nested_root=True)
        w.finish()
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=OFF")
        self._open[prefix] = _Open(prefix, parent, path, db)
        return db

    def store_catalog(self, prefix: str) -> tuple[str, int]:
        """Close the edited catalog at ``prefix`` and store it; (object name, inflated size)."""
        o = self._open.pop(prefix)
        o.db.close()
        name, size = self._put_file(o.path, "C")
        o.path.unlink()
        return name, size

    def commit(self) -> None:
        """Store every edited catalog, deepest first, rewrite the references above, re-sign."""
        try:
            root: tuple[str, int] | None = None
            while self._open:
                prefix = max(self._open, key=lambda p: (p.count("/"), len(p)) if p else (-1, 0))
                parent = self._open[prefix].parent
                name, size = self.store_catalog(prefix)
                if parent is None:
                    root = (name, size)
                else:
                    self.catalog(parent).execute(
                        "UPDATE nested_catalogs SET sha1 = ?, size = ? WHERE path = ?", (name, size, prefix)
                    )
            if root is not None:
                self.sign_manifest(root_hash=root[0], root_size=root[1])
        finally:
            self.close()

    def sign_manifest(self, **changes: object) -> None:
        m = self.manifest.replace(**changes)
        body = mf.serialize(m)
        hash_text = mf.body_hash(body, m.algorithm)
        signed = mf.join_signed(body, hash_text, self.keys.sign_manifest(hash_text))
        (self.repo.stratum / ".cvmfspublished").write_bytes(signed)
        self.manifest = m


def add_row(
    db: sqlite3.Connection,
    parent: str,
    name: str,
    *,
    mode: int,
    size: int = 0,
    digest: bytes | None = None,
    symlink: str = "",
    uid: int = 0,
    gid: int = 0,
    mtime: int = TS,
    mtimens: int | None = None,
    flags: int | None = None,
    hardlinks: int = 1,
    key_path: str | None = None,
    xattr: bytes | None = None,
) -> None:
    """Insert one catalog row under ``parent`` (its primary key is md5(``key_path``), by default the
    entry's own path, so a duplicate name needs another ``key_path``)."""
    m1, m2 = md5_pair(key_path if key_path is not None else join(parent, name))
    p1, p2 = md5_pair("" if parent == "/" else parent)
    db.execute(
        "INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, "
        "mtime, mtimens, flags, name, symlink, uid, gid, xattr) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            m1,
            m2,
            p1,
            p2,
            hardlinks,
            digest,
            size,
            mode,
            mtime,
            mtimens,
            default_flags(mode) if flags is None else flags,
            name,
            symlink,
            uid,
            gid,
            xattr,
        ),
    )


def set_column(db: sqlite3.Connection, path: str, **values: object) -> None:
    """Overwrite columns of the row of ``path``."""
    m1, m2 = md5_pair("" if path == "/" else path)
    cols = ", ".join(f"{k} = ?" for k in values)
    n = db.execute(
        f"UPDATE catalog SET {cols} WHERE md5path_1 = ? AND md5path_2 = ?", (*values.values(), m1, m2)
    ).rowcount
    if n != 1:
        raise KeyError(f"no row for {path}")


def row(db: sqlite3.Connection, path: str, column: str) -> object:
    m1, m2 = md5_pair("" if path == "/" else path)
    got = db.execute(
        f"SELECT {column} FROM catalog WHERE md5path_1 = ? AND md5path_2 = ?", (m1, m2)
    ).fetchone()
    if got is None:
        raise KeyError(f"no row for {path}")
    return got[0]


# -- payloads --------------------------------------------------------------------------------------


@functools.cache
def zlib_bomb(inflated: int = 1 << 30) -> bytes:
    """A valid zlib stream of ``inflated`` zero bytes (1 GiB -> about 1 MB)."""
    c = zlib.compressobj(9)
    zero = bytes(1 << 20)
    parts = [c.compress(zero) for _ in range(inflated >> 20)]
    parts.append(c.flush())
    return b"".join(parts)


# -- the cases -------------------------------------------------------------------------------------

NAME_ERROR = r"(?i)name"
DUP_ERROR = r"(?i)duplicate|twice|repeat"


@dataclass(frozen=True)
class Case:
    """One hostile repository: how to make it, and where a consumer meets the problem."""

    name: str
    build: Callable[[Editor], None]
    #: regular expression the one error line must match; None: a legitimate (big) repository
    error: str | None
    #: a directory whose listing meets the problem (``ls``); the whole tree meets it (``ls -R``,
    #: ``verify``, ``export``)
    ls_path: str = "/"
    #: a file whose reading (or whose look-up) meets the problem (``cat``); None: no such file
    #: (a duplicate is met by listing its directory: a look-up by path reads the one row keyed by
    #: that path, as the real client does)
    cat_path: str | None = None
    big: bool = False
    #: consumers that legitimately succeed on this case (e.g. ``cat`` of a path unrelated to it)
    tolerated: frozenset[str] = field(default_factory=frozenset)


def _bad_name(name: str, kind: str = "file") -> Callable[[Editor], None]:
    def build(ed: Editor) -> None:
        db = ed.catalog()
        digest = bytes.fromhex(ed.put(b"pwned\n"))
        if kind == "file":
            add_row(db, "/dir", name, mode=stat.S_IFREG | 0o644, size=6, digest=digest)
        else:
            add_row(db, "/dir", name, mode=stat.S_IFDIR | 0o755, size=4096)

    return build


def _dotdot(ed: Editor) -> None:
    """``/..`` is a directory holding ``escaped``: a naive exporter writes beside its output."""
    db = ed.catalog()
    digest = bytes.fromhex(ed.put(b"escaped\n"))
    add_row(db, "/", "..", mode=stat.S_IFDIR | 0o755, size=4096)
    add_row(db, "/..", "escaped", mode=stat.S_IFREG | 0o644, size=8, digest=digest)


def _dup(first: str, second: str) -> Callable[[Editor], None]:
    """Two entries named ``x`` in /dir: ``first`` then ``second`` (symlink -> the canary beside the
    output, so following it writes outside)."""

    def build(ed: Editor) -> None:
        db = ed.catalog()
        digest = bytes.fromhex(ed.put(b"pwned\n"))
        for i, kind in enumerate((first, second)):
            key = "/dir/x" if i == 0 else "/dir/x#dup"
            if kind == "symlink":
                target = "../../canary"
                add_row(
                    db, "/dir", "x", mode=stat.S_IFLNK | 0o777, size=len(target), symlink=target, key_path=key
                )
            elif kind == "dir":
                add_row(db, "/dir", "x", mode=stat.S_IFDIR | 0o755, size=4096, key_path=key)
                add_row(db, "/dir/x", "pwned", mode=stat.S_IFREG | 0o644, size=6, digest=digest)
            else:
                add_row(db, "/dir", "x", mode=stat.S_IFREG | 0o644, size=6, digest=digest, key_path=key)

    return build


def _nested_ref(at: str, path: str, target: str) -> Callable[[Editor], None]:
    """The catalog at ``at`` references ``path`` with the catalog object of ``target``."""

    def build(ed: Editor) -> None:
        parent_of_target = ed._parent_of(target) if target else None
        target_hash = (
            ed.manifest.root_hash if not target else ed._refs(ed.catalog(parent_of_target or ""))[target]
        )
        ed.catalog(at).execute("INSERT INTO nested_catalogs VALUES (?, ?, ?)", (path, target_hash, 0))

    return build


#: Nested catalogs deeper than this are refused by the reader (cvmfs/repository.py MAX_NESTING).
CHAIN_DEPTH = 70


def _nested_chain(ed: Editor) -> None:
    prefix = "/dir"
    parent = ""
    for _ in range(CHAIN_DEPTH):
        prefix += "/c"
        ed.new_catalog(prefix, parent=parent)
        parent = prefix


def _chunks(kind: str) -> Callable[[Editor], None]:
    def build(ed: Editor) -> None:
        db = ed.catalog()
        m1, m2 = md5_pair("/chunked")
        rows = db.execute(
            "SELECT offset, size, hash FROM chunks WHERE md5path_1 = ? AND md5path_2 = ? ORDER BY offset",
            (m1, m2),
        ).fetchall()
        assert len(rows) >= 3, rows
        db.execute("DELETE FROM chunks WHERE md5path_1 = ? AND md5path_2 = ?", (m1, m2))
        if kind == "overlap":  # the second chunk starts inside the first
            o, s, h = rows[1]
            rows[1] = (o - 100, s, h)
        elif kind == "short":  # the last chunk is missing: the list ends before the file does
            rows = rows[:-1]
        elif kind == "offset":  # the list does not start at 0
            rows = rows[1:]
        db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", [(m1, m2, o, s, h) for o, s, h in rows])

    return build


BOMB_ERROR = r"larger than|inflates to more"


def _file_bomb(declared: int | None) -> Callable[[Editor], None]:
    """/dir/file's content is 1 GiB of zeros compressed to about 1 MB; the catalog declares
    ``declared`` bytes (None: as many as the object has stored, so only inflating can stop it)."""

    def build(ed: Editor) -> None:
        bomb = zlib_bomb()
        name = ed.put_stored(bomb)
        size = len(bomb) if declared is None else declared
        set_column(ed.catalog(), "/dir/file", hash=bytes.fromhex(name), size=size)

    return build


def _catalog_bomb(ed: Editor) -> None:
    """The nested catalog /nested is replaced by a zlib bomb; the reference declares as many bytes
    as the object has stored (so the stored size passes, and only inflating can stop it)."""
    bomb = zlib_bomb()
    name = ed.put_stored(bomb, "C")
    ed.catalog().execute(
        "UPDATE nested_catalogs SET sha1 = ?, size = ? WHERE path = '/nested'", (name, len(bomb))
    )


def _set(path: str, **values: object) -> Callable[[Editor], None]:
    def build(ed: Editor) -> None:
        set_column(ed.catalog(), path, **values)

    return build


def _huge_cell(path: str, column: str) -> Callable[[Editor], None]:
    """A huge symlink target or xattr block (made when the case is built, not at import)."""

    def build(ed: Editor) -> None:
        # 64 MiB of symlink cost 538 MB of RSS before; 8 MiB of xattr block was accepted
        value: object = "A" * (64 << 20) if column == "symlink" else b"\x01" * (8 << 20)
        set_column(ed.catalog(), path, **{column: value})

    return build


MILLION = 1_000_000


def _million(ed: Editor) -> None:
    """/many holds 1,000,000 empty files (rows written with sqlite directly)."""
    db = ed.catalog()
    add_row(db, "/", "many", mode=stat.S_IFDIR | 0o755, size=4096)
    p1, p2 = md5_pair("/many")
    unpack = struct.Struct("<qq").unpack
    md5 = hashlib.md5

    def rows() -> Iterator[tuple[int, int, str]]:
        for i in range(MILLION):
            name = f"f{i:07d}"
            m1, m2 = unpack(md5(f"/many/{name}".encode()).digest())
            yield m1, m2, name

    # Constants in the statement: binding three values per row instead of sixteen halves the time.
    sql = (
        f"INSERT INTO catalog VALUES (?, ?, {p1}, {p2}, 1, NULL, 0, {stat.S_IFREG | 0o644}, {TS}, NULL, "
        f"{FLAG_FILE}, ?, '', 0, 0, NULL)"
    )
    db.execute("BEGIN")
    db.executemany(sql, rows())
    db.execute("COMMIT")


DEPTH = 1500


def _deep(ed: Editor) -> None:
    """A chain of 1,500 directories /d/d/d/... with a file at the bottom."""
    db = ed.catalog()
    path = "/"
    for _ in range(DEPTH):
        add_row(db, path, "d", mode=stat.S_IFDIR | 0o755, size=4096)
        path = join(path, "d")
    digest = bytes.fromhex(ed.put(b"bottom\n"))
    add_row(db, path, "bottom", mode=stat.S_IFREG | 0o644, size=7, digest=digest)


def _cases() -> dict[str, Case]:
    reg = stat.S_IFREG | 0o644
    cases = [
        Case("name-slash", _bad_name("a/b"), NAME_ERROR, "/dir", "/dir/a/b"),
        Case("name-dotdot", _dotdot, NAME_ERROR, "/", None),
        Case("name-dot", _bad_name("."), NAME_ERROR, "/dir", None),
        Case("name-empty", _bad_name(""), NAME_ERROR, "/dir", None),
        Case("name-nul", _bad_name("a\0b"), NAME_ERROR, "/dir", None),
        Case("dup-symlink-dir", _dup("symlink", "dir"), DUP_ERROR, "/dir", None),
        Case("dup-symlink-file", _dup("symlink", "file"), DUP_ERROR, "/dir", None),
        Case("dup-file-file", _dup("file", "file"), DUP_ERROR, "/dir", None),
        Case(
            "nested-self", _nested_ref("/nested", "/nested", "/nested"), r"nested", "/nested", "/nested/data"
        ),
        Case(
            "nested-parent",
            _nested_ref("/nested/inner", "/nested", "/nested"),
            r"nested",
            "/nested/inner",
            "/nested/inner/x",
        ),
        Case("nested-root", _nested_ref("/nested", "", ""), r"nested", "/nested", "/nested/data"),
        Case(
            "nested-not-below",
            _nested_ref("/nested", "/dir", "/nested/inner"),
            r"nested",
            "/nested",
            "/nested/data",
        ),
        Case(
            "nested-chain",
            _nested_chain,
            r"nested",
            "/dir" + "/c" * CHAIN_DEPTH,
            None,
        ),
        Case("chunks-overlap", _chunks("overlap"), r"chunk", "/", "/chunked"),
        Case("chunks-short", _chunks("short"), r"chunk", "/", "/chunked"),
        Case("chunks-offset", _chunks("offset"), r"chunk", "/", "/chunked"),
        Case("bomb-file", _file_bomb(None), BOMB_ERROR, "/dir", "/dir/file", tolerated=frozenset({"ls"})),
        Case("bomb-file-tiny", _file_bomb(6), BOMB_ERROR, "/dir", "/dir/file", tolerated=frozenset({"ls"})),
        Case("bomb-catalog", _catalog_bomb, BOMB_ERROR, "/nested", "/nested/data"),
        Case(
            "size-huge",
            _set("/dir/file", size=1 << 62),
            r"size",
            "/dir",
            "/dir/file",
            tolerated=frozenset({"ls"}),
        ),
        Case("size-negative", _set("/dir/file", size=-1), r"size", "/dir", "/dir/file"),
        Case("uid-huge", _set("/dir/file", uid=1 << 40), r"uid", "/dir", "/dir/file"),
        Case("gid-negative", _set("/dir/file", gid=-1), r"gid", "/dir", "/dir/file"),
        Case("mode-type", _set("/dir/file", mode=0o160644), r"mode|type", "/dir", "/dir/file"),
        Case("mode-range", _set("/dir/file", mode=reg | (1 << 20)), r"mode", "/dir", "/dir/file"),
        Case("mtime-huge", _set("/dir/file", mtime=1 << 62), r"mtime", "/dir", "/dir/file"),
        Case("symlink-nul", _set("/dir/link", symlink="fi\0le"), r"symlink|link", "/dir", None),
        # cells far over their limits: refused before they are fetched (audit13c finding 7: a 64 MB
        # symlink cost 538 MB of RSS, a 64 MB xattr block was accepted)
        Case("symlink-huge", _huge_cell("/dir/link", "symlink"), r"longer than", "/dir", "/dir/link"),
        Case("xattr-huge", _huge_cell("/dir/file", "xattr"), r"longer than", "/dir", "/dir/file"),
        Case("million", _million, None, "/many", "/dir/file", big=True),
        Case("deep", _deep, None, "/d", "/d" * DEPTH + "/bottom", big=True),
    ]
    return {c.name: c for c in cases}


CASES: dict[str, Case] = _cases()


def build_case(name: str, dest: Path, base: Repo) -> Repo:
    """A copy of ``base`` made hostile as the case ``name`` says (``dest`` must not exist)."""
    case = CASES[name]
    repo = copy_repo(base, dest)
    with Editor(repo, level=1 if case.big else 6) as ed:
        case.build(ed)
    return repo


# -- a man in the middle ---------------------------------------------------------------------------

Body = Callable[[], Iterable[bytes]]


def streamed(size: int, fill: bytes = b"A") -> Body:
    """A body of ``size`` bytes made on the fly (never held in memory)."""

    def body() -> Iterator[bytes]:
        block = (fill * (1 << 16))[: 1 << 16]
        left = size
        while left > 0:
            n = min(left, len(block))
            yield block[:n]
            left -= n

    return body


class MitmServer:
    """Serves a Stratum directory at ``/cvmfs/<fqrn>/`` on 127.0.0.1, except for the paths in
    ``overrides`` (relative to the repository), whose bodies it makes up. No keys needed."""

    def __init__(
        self, repo: Repo, overrides: dict[str, Body] | None = None, lengths: dict[str, int] | None = None
    ):
        self.repo = repo
        self.overrides = dict(overrides or {})
        #: a Content-Length to announce for an override (the body may then be cut short)
        self.lengths = dict(lengths or {})
        self.requests: list[str] = []
        self.sent: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                prefix = f"/cvmfs/{outer.repo.fqrn}/"
                rel = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
                outer.requests.append(rel)
                blocks: Iterable[bytes]
                if rel in outer.overrides:
                    blocks = outer.overrides[rel]()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    if rel in outer.lengths:
                        self.send_header("Content-Length", str(outer.lengths[rel]))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                else:
                    p = outer.repo.stratum / rel
                    if not rel or ".." in rel.split("/") or not p.is_file():
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    data = p.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    blocks = (data,)
                sent = 0
                try:
                    for b in blocks:
                        self.wfile.write(b)
                        sent += len(b)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    outer.sent[rel] = outer.sent.get(rel, 0) + sent

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/cvmfs/{self.repo.fqrn}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MitmServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A hostile server of any behaviour (``handler``) on 127.0.0.1, behind ``tls`` (a server
    context) if given; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def tampered_manifest(repo: Repo, **fields: str) -> bytes:
    """The repository's manifest with body fields replaced and a matching hash line, but the old
    signature (what a man in the middle without the keys can make)."""
    signed = mf.split_signed((repo.stratum / ".cvmfspublished").read_bytes(), "manifest")
    lines = [ln for ln in signed.body.split(b"\n") if ln]
    out = []
    for ln in lines:
        key = ln[:1].decode()
        out.append(f"{key}{fields[key]}".encode() if key in fields else ln)
    body = b"\n".join(out) + b"\n"
    return mf.join_signed(body, mf.body_hash(body), signed.signature)


def constant(data: bytes) -> Body:
    return lambda: (data,)


#: Error a reader must give when a man in the middle serves a signed file or object too large to be
#: genuine (it must stop reading long before the end).
TOO_LARGE = r"(?i)larger than|too large|exceeds|limit"


def mitm_cases(repo: Repo) -> dict[str, tuple[dict[str, Body], str]]:
    """Man-in-the-middle cases over ``repo``: name -> (overrides for ``MitmServer``, error regex).

    - ``manifest-500mb``/``whitelist-500mb``: 500 MB bodies, streamed by the server;
    - ``cert-huge``: the manifest's ``X`` points at a 1 GiB certificate object;
    - ``cert-bomb``: ... at a valid zlib stream (hash matching) that inflates to 512 MiB.
    """
    huge = "c0" * 20
    bomb = zlib_bomb(512 << 20)
    bomb_name = hashlib.sha1(bomb).hexdigest()

    def obj(name: str) -> str:
        return f"data/{name[:2]}/{name[2:]}X"

    return {
        "manifest-500mb": ({".cvmfspublished": streamed(500 << 20, b"C")}, TOO_LARGE),
        "whitelist-500mb": ({".cvmfswhitelist": streamed(500 << 20, b"E")}, TOO_LARGE),
        "cert-huge": (
            {".cvmfspublished": constant(tampered_manifest(repo, X=huge)), obj(huge): streamed(1 << 30)},
            TOO_LARGE,
        ),
        "cert-bomb": (
            {
                ".cvmfspublished": constant(tampered_manifest(repo, X=bomb_name)),
                obj(bomb_name): constant(bomb),
            },
            TOO_LARGE,
        ),
    }


# -- running a consumer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    max_rss_mb: float  # peak resident set of the process itself (VmHWM)
    timed_out: bool

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("error:")]


def cli() -> list[str]:
    """The ``cernvm-build`` command of this checkout, for subprocesses."""
    return [sys.executable, "-m", "cernvm_build.cli.main"]


#: Runs a module like ``python -m`` and, at exit, copies /proc/self/status to $HOSTILE_STATUS: the
#: peak RSS of the process's own memory (VmHWM). ``wait4``'s ru_maxrss is no good here: Linux
#: carries the parent's high-water mark across fork and exec, so a child of a big pytest process
#: would "peak" at the parent's size.
_WRAP = (
    "import atexit, os, runpy, sys\n"
    "def _status():\n"
    "    with open('/proc/self/status') as f, open(os.environ['HOSTILE_STATUS'], 'w') as out:\n"
    "        out.write(f.read())\n"
    "atexit.register(_status)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def _hwm_mb(status: str) -> float:
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_measured(
    argv: Sequence[str], *, timeout: float, cwd: Path | None = None, stdout_limit: int = 1 << 20
) -> Measured:
    """Run ``argv`` (``python -m module ...``, e.g. ``cli()``), kill it after ``timeout`` seconds;
    its own peak RSS: VmHWM reported by the process at exit, or the last one polled from /proc.

    stdout goes to a file (a million-line listing must not fill a pipe); only its first
    ``stdout_limit`` bytes are returned.
    """
    argv = list(argv)
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".status") as status,
    ):
        env = dict(os.environ, COLUMNS="200", PYTHONPATH=str(REPO_ROOT), HOSTILE_STATUS=status.name)
        if argv[:2] == [sys.executable, "-m"]:
            argv = [sys.executable, "-c", _WRAP, *argv[2:]]
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd or REPO_ROOT, env=env)
        deadline = time.monotonic() + timeout
        timed_out = False
        polled = 0.0
        while True:
            try:
                polled = max(polled, _hwm_mb(Path(f"/proc/{proc.pid}/status").read_text()))
            except OSError:
                pass
            if proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                timed_out = True
                proc.kill()
                proc.wait()
                break
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        return Measured(
            proc.returncode,
            out.read(stdout_limit).decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            max(polled, _hwm_mb(status.read())),
            timed_out,
        )


def snapshot_tree(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every path below ``root`` with mode, size and content (files) or target (links): a canary."""
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (st.st_mode, st.st_size, os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = (st.st_mode, st.st_size, Path(p).read_bytes())
            else:
                out[rel] = (st.st_mode, 0, b"")
    return out
