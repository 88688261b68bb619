"""The build state: rendered Markdown and highlighted code blocks by content hash, each output's
fingerprint, each Markdown source's digest by its stat (``sources.scan``), and what the last complete
build planned (``Snapshot``: a rebuild after a content-only edit plans the edited pages alone).

One SQLite file per output folder. Losing it costs a full rebuild, never a wrong one: every entry is
keyed by the hash of everything that produced it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import sqlite3
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..fsutil import lock_dir
from .ntuple import NamedTuple

#: bumped with every change of a table's or a blob's format: a tool of another schema drops the state
#: (a full rebuild) instead of misreading it (11: the snapshot's five values; the tools of 10 unpack three)
SCHEMA = 11

#: what every build needs of every rendered source (``pages.make_pages``: front matter, title, default
#: description; ``render_markdown``: the front matter's key; pruning: code blocks): kept beside the whole
#: metadata, which only the pages a build plans need (``Meta``)
HEAD = ("fm", "fm_key", "h1", "summary", "code")


class Snapshot(NamedTuple):
    """What the last complete build planned (``plan.Delta``): the digest of everything but the pages'
    own Markdown, each Markdown source's key, and the pages the search index covers. Dropped before a
    build writes anything and recorded again when it is complete, so an interrupted build leaves none:
    the outputs table may then hold rows of a plan no snapshot describes."""

    digest: str
    keys: dict[str, str]  # content-relative source -> its key (``sources.Source.key``)
    searchable: frozenset[str]  # output paths
    #: the outputs table's row count when the build ended (-1: not recorded), and its site folder, the
    #: search index's format (``search.VERSION``: the index plan, which checks it, is not made then), its
    #: report's pages and outputs and the fingerprint of its output -> source file map (kept beside it,
    #: ``State.report_sources``): a rebuild that finds nothing changed and every recorded output as
    #: recorded reports these without making the page set (``Builder._as_recorded``)
    rows: int = -1
    report: tuple[str, str, int, int, str] = ("", "", 0, 0, "")


class Meta(Mapping[str, Any]):
    """A rendered source's metadata (``sources._render_source``) read lazily: ``HEAD`` at hand, the rest
    (TOC, heading ids, links, excerpt HTML) read from the state on first use. A rebuild that plans only
    the edited pages reads whole metadata for those and the pages their links name, not all of them
    (all of them was 1,001 pickles, 1.6 MB, ~8 ms of a one-page rebuild at 1,000 pages). The head and
    the whole are one row, written together: they cannot disagree. The head itself is unpickled on
    first use: a one-page rebuild planned from the state (``replan``) uses the edited pages' and their
    links' targets' only (the 1,001 heads unpickled were ~3.5 % of its parent's instructions)."""

    __slots__ = ("_blob", "_full", "_head_", "_key", "_state")

    def __init__(self, blob: bytes, state: State, key: str):
        self._blob = blob  # the pickled head
        self._head_: dict[str, Any] | None = None
        self._state = state
        self._key = key
        self._full: dict[str, Any] | None = None

    @property
    def _head(self) -> dict[str, Any]:
        head = self._head_
        if head is None:
            head = self._head_ = pickle.loads(self._blob)
            self._blob = b""
        return head

    def _whole(self) -> dict[str, Any]:
        if self._full is None:
            self._full = self._state.md_meta_of(self._key)
        return self._full

    def __getitem__(self, name: str) -> Any:
        if name in self._head:
            return self._head[name]
        return self._whole()[name]

    def get(self, name: str, default: Any = None) -> Any:
        # Mapping's ``get`` is a call of ``__getitem__`` in a ``try``: every build asks each page's
        # ``code`` this way (``Builder._build``'s pruning), 1,001 times at 1,000 pages
        head = self._head
        if name in head:
            return head[name]
        try:
            return self._whole()[name]
        except KeyError:  # (as Mapping's: a row gone too)
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())

    def __bool__(self) -> bool:  # never empty (a rendered source's), and ``if meta`` reads no row
        return True


#: how long a writer waits for another: the parent keeps the rendered Markdown in one transaction
#: while the write workers keep their shards' extracts (SQLite's default, 5 s, could fail a build)
BUSY_TIMEOUT_S = 300.0


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the state, as each process opens it (the build's own; a forked worker's, since
    SQLite's connections do not survive a fork): autocommit, the WAL's NORMAL sync, a long busy wait."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def is_damage(e: sqlite3.DatabaseError) -> bool:
    """Only the exact class is damage (SQLITE_CORRUPT, SQLITE_NOTADB: "database disk image is
    malformed", "file is not a database"); locked, unreadable, a full disk (OperationalError) or a bug
    (IntegrityError, ProgrammingError...) is not, and the state is kept."""
    return type(e) is sqlite3.DatabaseError


def discard(path: Path) -> None:
    """A damaged state's files deleted: it is a cache, and the next build starts cold."""
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)


def _rows(
    db: sqlite3.Connection, table: str, columns: tuple[str, ...], keys: list[str]
) -> list[tuple[Any, ...]]:
    """The rows ``(key, *columns)`` of these keys (in chunks: SQLite bounds a query's parameters)."""
    select = ", ".join(("key", *columns))
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        marks = ",".join("?" * len(chunk))
        out += db.execute(f"SELECT {select} FROM {table} WHERE key IN ({marks})", chunk)
    return out


def _search_extracts(db: sqlite3.Connection, keys: set[str]) -> dict[str, tuple[bytes, bytes]]:
    return {
        key: (bytes(frag), bytes(post))
        for key, frag, post in _rows(db, "search", ("fragment", "postings"), sorted(keys))
    }


def search_extracts_at(path: Path, keys: set[str]) -> dict[str, tuple[bytes, bytes]]:
    """``State.search_extracts`` of the state at ``path``, through a connection of its own: for a
    process that has none (the render child, ``search.offload``); the WAL lets it read while the build
    writes."""
    with contextlib.closing(connect(path)) as db:
        return _search_extracts(db, keys)


class State:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._pid = os.getpid()  # the process whose connection ``db`` is (``md_meta_of``)
        #: while this process writes the state unsynced: a shared ``flock`` of its folder (``_open``)
        self._writing: int | None = None
        #: why a damaged state was set aside for a new one (a lost disk write, a truncated copy)
        self.discarded: str | None = None
        try:
            self._open()
        except sqlite3.DatabaseError as e:
            if not is_damage(e):
                raise
            # "file is not a database", "database disk image is malformed": the state is a cache, so
            # a damaged one costs a cold build, never a failed one
            if "db" in vars(self):  # else connect() itself failed, its connection already freed
                self.db.close()
            discard(path)
            self.discarded = str(e)
            self._open()

    def _open(self) -> None:
        new = not self.path.exists()
        if new and self._writing is None:  # taken before the file exists: see the tag's clearing below
            # (the folder's lock, not the database file's: apart from SQLite's own locks of that file)
            self._writing = lock_dir(self.path.parent, fcntl.LOCK_SH, follow_links=True)
        self.db = connect(self.path)
        #: this state is unsynced (made by a cold build of this boot): its connections commit and
        #: checkpoint with ``synchronous=OFF``, and each forked worker's connection too (``_here``)
        self.unsynced = False
        if new:
            # A new state (a cold build: ~28 MB at 1,000 pages) is written unsynced, from its creation
            # (the WAL switch, the tables) to the end of the build: the fsyncs of its checkpoints (about
            # one per 4 MB, ~20 calls) blocked 0.1-1 s of the cold build's wall on a journaled ext4.
            # Its header holds this boot's tag instead (``_boot_tag``), from the first page it writes:
            # the next open syncs it (below) while the kernel still holds every write, and a state whose
            # tag is another boot's may be torn by a crash or power loss, so it is checked first.
            self.db.execute("PRAGMA synchronous=OFF")
            boot = _boot_tag()
            self.unsynced = boot != 0
            if self.unsynced:
                self.db.execute(f"PRAGMA application_id={boot}")
        else:
            tag = self.db.execute("PRAGMA application_id").fetchone()[0]
            # made unsynced under another boot: torn only if that boot ended in a crash or a power
            # loss before the kernel wrote it back. Kept when SQLite's own check of its pages passes
            # (deleted with it, every cold build's state was lost at each reboot: a CI runner
            # restoring its cache built cold every time); else damage, which ``__init__`` deletes
            # and says so
            if tag and tag != _boot_tag() and self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("written by a build that a crash or power loss cut short")
            # made unsynced (written back by the kernel since, most often): synced now, the tag
            # cleared after (a tag lost with a crash from here costs a cold build). Not while the
            # build that writes it unsynced still runs (another build sharing the cache folder: it
            # holds the folder's lock from before the file existed): its later writes would be under
            # no tag. The tag stays, for the first open after that build.
            lock = (
                lock_dir(self.path.parent, fcntl.LOCK_EX | fcntl.LOCK_NB, follow_links=True) if tag else None
            )
            if lock is not None:
                try:
                    for name in (self.path, Path(f"{self.path}-wal")):
                        with contextlib.suppress(FileNotFoundError), open(name, "rb") as f:
                            os.fsync(f.fileno())
                    self.db.execute("PRAGMA application_id=0")
                finally:
                    os.close(lock)
        self.db.execute("PRAGMA journal_mode=WAL")  # kept in the file: every connection has it
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA:
            self.db.executescript(
                "DROP TABLE IF EXISTS md; DROP TABLE IF EXISTS outputs; DROP TABLE IF EXISTS code;"
                "DROP TABLE IF EXISTS search; DROP TABLE IF EXISTS sources; DROP TABLE IF EXISTS snapshot;"
                "DROP TABLE IF EXISTS memo; DROP TABLE IF EXISTS folders; DROP TABLE IF EXISTS md_meta;"
                "DROP TABLE IF EXISTS md_head;"
                "DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS plan_parts;"
            )
            self.db.execute(f"PRAGMA user_version={SCHEMA}")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS md (key TEXT PRIMARY KEY, html TEXT);
            CREATE TABLE IF NOT EXISTS md_meta (key TEXT PRIMARY KEY, meta BLOB);
            CREATE TABLE IF NOT EXISTS md_head (key TEXT PRIMARY KEY, head BLOB);
            CREATE TABLE IF NOT EXISTS code (key TEXT PRIMARY KEY, html TEXT);
            CREATE TABLE IF NOT EXISTS outputs (path TEXT PRIMARY KEY, fp TEXT, size INTEGER, mtime INTEGER);
            CREATE TABLE IF NOT EXISTS search (key TEXT PRIMARY KEY, fragment BLOB, postings BLOB);
            CREATE TABLE IF NOT EXISTS claims (out_dir TEXT PRIMARY KEY);
            CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 0), blob BLOB);
            CREATE TABLE IF NOT EXISTS memo (name TEXT PRIMARY KEY, blob BLOB);
            CREATE TABLE IF NOT EXISTS folders (path TEXT PRIMARY KEY, ctime INTEGER);
            CREATE TABLE IF NOT EXISTS sources (
                file TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, ctime INTEGER, ino INTEGER,
                digest TEXT, generate TEXT
            );
            CREATE TABLE IF NOT EXISTS files (
                file TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, ctime INTEGER, ino INTEGER, sha256 TEXT
            );
            CREATE TABLE IF NOT EXISTS plan_parts (key TEXT PRIMARY KEY, blob BLOB);
            """
        )
        if new and not self.unsynced:
            self.db.execute("PRAGMA synchronous=NORMAL")  # no boot tag to guard an unsynced state
        if not self.unsynced and self._writing is not None:
            os.close(self._writing)
            self._writing = None

    def close(self, *, ends_process: bool = False) -> None:
        """``ends_process``: the process ends next (the CLI's one-shot build); a small WAL is then left
        as it is, the connection open to that end. The last connection's close copies the WAL into the
        database and fsyncs both: 10-35 ms of waiting (1 ms of CPU) in each one-page rebuild of ~200 ms
        on a journaled ext4. Left in the WAL, what the build committed is as durable as every commit
        with ``synchronous=NORMAL`` is, and the next build reads it from there. Past ``WAL_LEFT_MAX``
        (a full build's) it is copied now, so that a commit of a later one-page rebuild never finds it
        at ``wal_autocheckpoint``'s 1,000 pages and copies 4 MB then."""
        if ends_process:
            try:
                small = os.stat(f"{self.path}-wal").st_size < WAL_LEFT_MAX
            except OSError:
                small = True
            if small:
                _LEFT_OPEN.append(self.db)  # a reference to the end: a freed connection closes itself
                return  # and the folder's lock, if held, with the process
        self.db.close()
        if self._writing is not None:
            os.close(self._writing)
            self._writing = None

    # -- rendered Markdown ----------------------------------------------------------------------
    def md_meta(
        self, keys: set[str], lazy: bool = False, kept: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The metadata of these keys held: whole, or ``Meta`` (``lazy``: for a build that will plan
        only some pages). ``kept``: the metadata a builder that builds again read of this state in
        its last complete build, whose rows the state still holds (the caller knows: its snapshot is
        that build's): those of ``keys`` are taken from it (the key is the content's), the others read
        (a one-page rebuild in ``site serve`` read 1,001 heads for one new key)."""
        # tables of their own: every build reads all the heads, and beside the HTML (or the whole
        # metadata) that read went through pages of it
        out: dict[str, Any] = {}
        if kept is not None:
            out = {key: kept[key] for key in keys if key in kept}
            for meta in out.values():
                if isinstance(meta, Meta):
                    meta._state = self  # (the last build's state is closed)
            rest = sorted(keys - out.keys())
            if lazy:
                out.update(
                    (key, Meta(blob, self, key)) for key, blob in self._rows("md_head", ("head",), rest)
                )
            else:
                out.update((key, pickle.loads(blob)) for key, blob in self._rows("md_meta", ("meta",), rest))
            return out
        if lazy:
            for key, blob in self.db.execute("SELECT key, head FROM md_head"):
                if key in keys:
                    out[key] = Meta(blob, self, key)
            return out
        for key, blob in self.db.execute("SELECT key, meta FROM md_meta"):
            if key in keys:
                out[key] = pickle.loads(blob)
        return out

    def read_whole(self, metas: Mapping[str, Any]) -> None:
        """Read at once the whole metadata of the ``Meta`` in ``metas`` (a build that plans every page
        after all: one query instead of one per page)."""
        lazy = {key: m for key, m in metas.items() if isinstance(m, Meta) and m._full is None}
        if lazy:
            for key, blob in self.db.execute("SELECT key, meta FROM md_meta"):
                if key in lazy:
                    lazy[key]._full = pickle.loads(blob)

    def md_meta_of(self, key: str) -> dict[str, Any]:
        """One key's whole metadata (``Meta``); from a forked worker through a connection of its own
        (SQLite's connections do not survive a fork)."""
        with self._here() as db:
            row = db.execute("SELECT meta FROM md_meta WHERE key = ?", (key,)).fetchone()
        if row is None:  # the row is read in the build that listed it, which prunes only at its end
            raise KeyError(key)
        return pickle.loads(row[0])  # type: ignore[no-any-return]

    def md_html(self, keys: list[str]) -> dict[str, str]:
        """The rendered Markdown of these keys; from a forked write worker too (``write._fetched``)."""
        with self._here() as db:
            return {key: html for key, html in _rows(db, "md", ("html",), keys)}

    def _rows(self, table: str, columns: tuple[str, ...], keys: list[str]) -> list[tuple[Any, ...]]:
        return _rows(self.db, table, columns, keys)

    def put_md(self, rows: list[tuple[str, Any, str]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO md VALUES (?, ?)", [(k, h) for k, _m, h in rows])
            self.db.executemany(
                "INSERT OR REPLACE INTO md_meta VALUES (?, ?)", [(k, _pickle(m)) for k, m, _h in rows]
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO md_head VALUES (?, ?)",
                [(k, _pickle({n: m[n] for n in HEAD if n in m})) for k, m, _h in rows],
            )

    def prune_md(self, keep: set[str], suspects: set[str] | None = None) -> bool:
        """``_prune`` of the rendered Markdown; True when the table was listed: with ``suspects``, when
        it held other rows too (a failed build's, whose code blocks it stored with them)."""
        return self._prune(
            "md_head", keep, also=("md_meta", "md"), suspects=suspects
        )  # keys from the smallest table

    def _prune(
        self, table: str, keep: set[str], also: tuple[str, ...] = (), suspects: set[str] | None = None
    ) -> bool:
        """Delete the rows not in ``keep``. ``suspects``: the only keys that can be stale when the
        table held just the last build's keep (a one-page rebuild's: the edited pages' former keys);
        they are deleted by key, and the table is listed only when its row count then says it holds
        others too (left by a failed build, which keeps what it rendered): listing every key cost a
        one-page rebuild ~2 ms at 1,000 pages. Returns whether it was listed (``suspects`` given)."""
        if suspects is not None:
            self._delete((table, *also), [(k,) for k in suspects if k not in keep])
            if self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] <= len(keep):
                return False
        self._delete(
            (table, *also), [(k,) for (k,) in self.db.execute(f"SELECT key FROM {table}") if k not in keep]
        )
        return True

    def _delete(self, tables: tuple[str, ...], keys: list[tuple[str]]) -> None:
        if keys:
            with self.db:
                self.db.execute("BEGIN")
                for t in tables:
                    self.db.executemany(f"DELETE FROM {t} WHERE key = ?", keys)

    # -- Markdown sources: digest and generator name by stat (sources.scan) ------------------------
    def sources(self) -> dict[str, tuple[tuple[int, int, int, int], str, str]]:
        """file -> ((size, mtime, ctime, inode), digest of its bytes, its ``generate:`` name or '')."""
        return {
            f: ((size, mtime, ctime, ino), digest, gen)
            for f, size, mtime, ctime, ino, digest, gen in self.db.execute("SELECT * FROM sources")
        }

    def put_sources(self, rows: list[tuple[str, int, int, int, int, str, str]], removed: list[str]) -> None:
        self._upsert("sources", "file", rows, removed)

    def _upsert(self, table: str, key: str, rows: list[tuple[Any, ...]], removed: list[str]) -> None:
        """Rows written and rows removed (by ``key``), in one transaction; nothing when neither."""
        if rows or removed:
            with self.db:
                self.db.execute("BEGIN")
                if rows:
                    marks = ", ".join("?" * len(rows[0]))
                    self.db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)
                self.db.executemany(f"DELETE FROM {table} WHERE {key} = ?", [(r,) for r in removed])

    # -- other files: sha256 by stat (filedigest.digests) --------------------------------------------
    def files(self) -> dict[str, tuple[tuple[int, int, int, int], str]]:
        """file -> ((size, mtime, ctime, inode), sha256 of its bytes)."""
        return {
            f: ((size, mtime, ctime, ino), digest)
            for f, size, mtime, ctime, ino, digest in self.db.execute("SELECT * FROM files")
        }

    def put_files(self, rows: list[tuple[str, int, int, int, int, str]], removed: list[str]) -> None:
        self._upsert("files", "file", rows, removed)

    # -- highlighted code blocks (markdown.code_key) -----------------------------------------------
    def code(self) -> CodeRows:
        """The highlighted blocks, looked up as a page asks for them (``CodeRows``)."""
        return CodeRows(self.path)

    def code_html(self, key: str) -> str | None:
        """One highlighted block (or the stylesheet kept beside them), through this connection."""
        row = self.db.execute("SELECT html FROM code WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put_code(self, rows: dict[str, str]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO code VALUES (?, ?)", rows.items())

    def prune_code(self, keep: set[str], suspects: set[str] | None = None) -> None:
        self._prune("code", keep, suspects=suspects)

    # -- search index: each page's extract (search.extract) by page output fingerprint ------------
    def search_extracts(self, keys: set[str]) -> dict[str, tuple[bytes, bytes]]:
        return _search_extracts(self.db, keys)

    def search_keys(self, keys: set[str]) -> set[str]:
        """Those of ``keys`` whose extract is kept (the extracts themselves are not read)."""
        return {key for (key,) in self._rows("search", (), sorted(keys))}

    def put_search_extracts(self, rows: list[tuple[str, bytes, bytes]]) -> None:
        """Keep page extracts; from a forked write worker too, through a connection of its own (it keeps
        the extracts of the shards it made: they are not sent back)."""
        if not rows:
            return
        with self._here() as db, db:
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO search VALUES (?, ?, ?)", rows)

    @contextlib.contextmanager
    def _here(self) -> Iterator[sqlite3.Connection]:
        """This process's connection: ``db`` in the one that opened the state, else (a forked worker:
        SQLite's connections do not survive a fork) one of its own, closed after."""
        if os.getpid() == self._pid:
            yield self.db
            return
        with contextlib.closing(connect(self.path)) as db:
            if self.unsynced:
                db.execute("PRAGMA synchronous=OFF")
            yield db

    def prune_search_extracts(self, keep: set[str]) -> None:
        self._prune("search", keep)

    # -- the output folder is ours once a build started writing into it --------------------------
    def claimed(self, out_dir: str) -> bool:
        return self.db.execute("SELECT 1 FROM claims WHERE out_dir = ?", (out_dir,)).fetchone() is not None

    def claim(self, out_dir: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO claims VALUES (?)", (out_dir,))

    # -- memos: results kept by the hash of what made them (YAML texts parsed: ``frontmatter.Memo``) --
    def memo(self, name: str) -> dict[str, bytes]:
        row = self.db.execute("SELECT blob FROM memo WHERE name = ?", (name,)).fetchone()
        return dict(pickle.loads(row[0])) if row else {}

    def put_memo(self, name: str, entries: dict[str, bytes]) -> None:
        blob = pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)
        self.db.execute("INSERT OR REPLACE INTO memo VALUES (?, ?)", (name, blob))

    # -- the last complete build's plan (``Snapshot``) -------------------------------------------
    def snapshot(self) -> Snapshot | None:
        row = self.db.execute("SELECT blob FROM snapshot WHERE id = 0").fetchone()
        if row is None:
            return None
        digest, keys, searchable, *more = pickle.loads(row[0])
        return Snapshot(digest, keys, frozenset(searchable), *more)

    def put_snapshot(self, snap: Snapshot | None) -> None:
        """Record the plan of a complete build (None: forget it, before a build writes anything)."""
        if snap is None:
            self.db.execute("DELETE FROM snapshot")
            return
        blob = pickle.dumps(
            (snap.digest, snap.keys, sorted(snap.searchable), snap.rows, snap.report),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        self.db.execute("INSERT OR REPLACE INTO snapshot VALUES (0, ?)", (blob,))

    def report_sources(self) -> tuple[str, dict[str, str]]:
        """The last complete build's output -> source file map and its fingerprint (``Snapshot.report``);
        a row of its own, written only when it differs from the build's: read by a rebuild that has
        nothing to do, and by one that built, which repairs it."""
        row = self.db.execute("SELECT blob FROM memo WHERE name = ?", (REPORT,)).fetchone()
        return pickle.loads(row[0]) if row else ("", {})  # type: ignore[no-any-return]

    def put_report_sources(self, fp: str, sources: dict[str, str]) -> None:
        self.db.execute("INSERT OR REPLACE INTO memo VALUES (?, ?)", (REPORT, _pickle((fp, sources))))

    # -- each planned page's plan parts by source, and the pages' places (``replan``) ---------------
    def plan_parts(self, srcs: set[str]) -> dict[str, bytes]:
        """The recorded plan parts (``plan.parts_blob``) of these sources, those there are."""
        return {key: blob for key, blob in self._rows("plan_parts", ("blob",), sorted(srcs))}

    def put_plan_parts(self, rows: dict[str, bytes], keep: set[str] | None = None) -> None:
        """Rows written; ``keep``: every source's (a build that planned every page), the others' deleted."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO plan_parts VALUES (?, ?)", rows.items())
            if keep is not None:
                gone = [(k,) for (k,) in self.db.execute("SELECT key FROM plan_parts") if k not in keep]
                self.db.executemany("DELETE FROM plan_parts WHERE key = ?", gone)

    def page_places(self) -> bytes | None:
        """The last page set's source pages' places (``replan.places_blob``); None: no row."""
        row = self.db.execute("SELECT blob FROM memo WHERE name = ?", (PLACES,)).fetchone()
        # (a damaged row may hold text or a number: bytes() of one was a TypeError, or n zero bytes)
        return row[0] if row is not None and isinstance(row[0], bytes) else None

    def put_page_places(self, blob: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO memo VALUES (?, ?)", (PLACES, blob))

    # -- the output's folders by ctime (``output.files_in_changed_folders``) -----------------------
    def folders(self, under: str | None = None, *, outside: str | None = None) -> dict[str, int]:
        """The folders recorded; ``under``: only that folder and those in it; ``outside``: all but
        those (the search index's folders are its step's, ``search.sweep``)."""
        if under is None and outside is None:
            return dict(self.db.execute("SELECT path, ctime FROM folders"))
        top = under if under is not None else outside
        assert top is not None
        # "0" follows "/": the paths top + "/..." are those between top + "/" and top + "0"
        match = "(path = ? OR (path > ? AND path < ?))"
        where = match if under is not None else f"NOT {match}"
        return dict(
            self.db.execute(f"SELECT path, ctime FROM folders WHERE {where}", (top, top + "/", top + "0"))
        )

    def put_folders(self, rows: list[tuple[str, int]], gone: list[str]) -> None:
        self._upsert("folders", "path", rows, gone)

    # -- outputs --------------------------------------------------------------------------------
    def output_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0])

    def outputs(self) -> dict[str, tuple[str, int, int]]:
        return {p: (fp, size, mtime) for p, fp, size, mtime in self.db.execute("SELECT * FROM outputs")}

    def put_outputs(self, rows: list[tuple[str, str, int, int]], removed: list[str]) -> None:
        self._upsert("outputs", "path", rows, removed)


#: a code table of at most this many rows is read whole by a process's first look-up (``CodeRows``)
WHOLE_CODE_MAX = 64


class CodeRows(Mapping[str, str]):
    """The state's highlighted code blocks by key, read one by one as pages ask for them: a rebuild
    renders the pages that changed and needs their few blocks, where loading the whole table cost it
    more than rendering (tens of thousands of blocks on a big site). Each process (forked render
    workers too) reads through its own connection: an SQLite connection must not cross a fork.

    A table of at most ``WHOLE_CODE_MAX`` rows (a cold build's: the stylesheet alone) is read whole by
    each process's first look-up, and a key it does not hold is then missing without a query: a cold
    build of 1,000 pages asked ~2,100 times for a block (every one missing) and ~1,000 times for the
    table's size (``Code``'s ``known or {}``), ~0.1 CPU-s of SQLite over its processes."""

    def __init__(self, path: Path):
        self.path = path
        self._pid = 0
        self._db: sqlite3.Connection | None = None
        self._seen: dict[str, str | None] = {}
        self._whole = False  # ``_seen`` holds the whole table
        self._count: int | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            self._db = connect(self.path)
            self._pid = os.getpid()
            # counted up to one past the bound first: a big table's rows are not read for nothing
            few = "SELECT COUNT(*) FROM (SELECT 1 FROM code LIMIT ?)"
            self._whole = self._db.execute(few, (WHOLE_CODE_MAX + 1,)).fetchone()[0] <= WHOLE_CODE_MAX
            self._seen = dict(self._db.execute("SELECT key, html FROM code")) if self._whole else {}
            self._count = None
        return self._db

    def __getitem__(self, key: str) -> str:
        db = self._conn()
        if key in self._seen:
            got = self._seen[key]
        elif self._whole:
            got = None
        else:
            row = db.execute("SELECT html FROM code WHERE key = ?", (key,)).fetchone()
            got = self._seen[key] = row[0] if row else None
        if got is None:
            raise KeyError(key)
        return got

    def __iter__(self) -> Iterator[str]:
        db = self._conn()
        if self._whole:
            return iter(list(self._seen))
        return (k for (k,) in db.execute("SELECT key FROM code"))

    def __len__(self) -> int:
        db = self._conn()
        if self._whole:
            return len(self._seen)
        if self._count is None:  # counted once a process: asked once a page
            self._count = int(db.execute("SELECT COUNT(*) FROM code").fetchone()[0])
        return self._count

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None


#: the largest WAL a one-shot build leaves for the next (``State.close``): a one-page rebuild at 1,000
#: pages commits ~640 KB, so the copy and its fsyncs come once in ~3 of them
WAL_LEFT_MAX = 2 << 20
#: the memo row of the last complete build's output -> source file map (``State.report_sources``)
REPORT = "\0report"
#: the memo row of the source pages' places (``State.page_places``)
PLACES = "\0places"
#: connections left open for the process's end (``State.close``)
_LEFT_OPEN: list[sqlite3.Connection] = []


def _boot_tag() -> int:
    """This boot's tag (a positive 31-bit hash of the kernel's boot id), 0 where there is none: a state
    made unsynced (``State._open``) is trusted as it is by a later open under the boot that wrote it,
    whose kernel has kept every write the build made; under another boot, only once it checks."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_bytes()
    except OSError:
        return 0
    return (zlib.crc32(boot_id) & 0x7FFFFFFF) or 1


def _pickle(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
