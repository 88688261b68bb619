"""Reading the history database (tags): schema 1.0, the ``tags`` table the server maintains."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from .. import utcdate
from ..errors import CvmfsError
from ..termtext import is_utf8
from .catalog import plain_schema, read_properties
from .limits import MAX_TAG_TEXT, MAX_TAGS, human


class Tag:
    """A named tag of the repository's history: the snapshot it names (``root_hash``: hex +
    algorithm id, no suffix; ``size``: uncompressed root catalog bytes). Compared and hashed by
    value; not to be changed once made."""

    __slots__ = ("branch", "description", "name", "revision", "root_hash", "size", "timestamp")

    def __init__(
        self,
        name: str,
        root_hash: str,
        revision: int,
        timestamp: int,
        description: str,
        size: int,
        branch: str = "",
    ) -> None:
        self.name = name
        self.root_hash = root_hash
        self.revision = revision
        self.timestamp = timestamp
        self.description = description
        self.size = size
        self.branch = branch

    def _key(self) -> tuple[str, str, int, int, str, int, str]:
        return (
            self.name,
            self.root_hash,
            self.revision,
            self.timestamp,
            self.description,
            self.size,
            self.branch,
        )

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if type(other) is Tag else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())


def parse_date(text: str) -> int:
    """``YYYY-MM-DDTHH:MM:SSZ`` (exactly, as the client requires) to a Unix timestamp
    (``utcdate.parse``, the one date rule)."""
    try:
        return utcdate.parse(text)
    except ValueError as e:
        raise CvmfsError(f"snapshot date {e}", hint=utcdate.HINT) from None


def _int(value: object) -> int:
    """A revision, timestamp or size column: a non-negative integer (None: 0)."""
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


class History:
    def __init__(self, db_path: Path, *, where: str):
        self.where = where
        uri = "file:" + urllib.parse.quote(str(db_path)) + "?mode=ro&immutable=1"
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
            self._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_TAG_TEXT)
            plain_schema(
                self._db,
                f"{where}: history database",
                "the repository's history is damaged or hostile: the server tools write plain tables",
            )
            self.properties = read_properties(self._db, f"{where}: history database")
            self._cols = {row[1] for row in self._db.execute("PRAGMA table_info(tags)")}
        except sqlite3.DatabaseError as e:
            raise CvmfsError(f"{where}: history database is not readable: {e}") from e

    def close(self) -> None:
        self._db.close()

    def _rows(self, where_sql: str, args: tuple[object, ...], limit: int | None = None) -> list[Tag]:
        """The tags ``where_sql`` selects, at most ``limit`` (None: all, up to MAX_TAGS)."""
        branch = "branch" if "branch" in self._cols else "''"
        sql = f"SELECT name, hash, revision, timestamp, description, size, {branch} FROM tags {where_sql}"
        sql += f" LIMIT {MAX_TAGS + 1 if limit is None else limit}"
        try:
            rows = self._db.execute(sql, args).fetchall()
        except sqlite3.DataError as e:  # SQLITE_TOOBIG: a value over the connection's length limit
            raise CvmfsError(
                f"{self.where}: history database: a value in it is longer than {human(MAX_TAG_TEXT)}",
                hint="the history database is damaged or hostile",
            ) from e
        except sqlite3.DatabaseError as e:
            raise CvmfsError(f"{self.where}: history database cannot be queried: {e}") from e
        if len(rows) > MAX_TAGS:
            raise CvmfsError(
                f"{self.where}: history database holds more than {MAX_TAGS:,} tags",
                hint="the history database is damaged or hostile",
            )
        try:
            return [
                Tag(str(n), str(h), _int(r), _int(t), str(d or ""), _int(s), str(b or ""))
                for n, h, r, t, d, s, b in rows
            ]
        except ValueError as e:
            raise CvmfsError(
                f"{self.where}: history database: {e}", hint="the history database is damaged"
            ) from e

    def tags(self) -> list[Tag]:
        """All tags, newest revision first (then by name)."""
        tags = self._rows("", ())
        tags.sort(key=lambda t: (-t.revision, t.name))
        return tags

    def by_name(self, name: str) -> Tag | None:
        if not is_utf8(name):  # a command line's byte that is no UTF-8 (os.fsdecode's): SQLite's traceback
            return None
        # LIMIT 1: the server's schema makes a name unique, a hostile database need not (a million
        # rows of one name were read whole)
        rows = self._rows("WHERE name = ?", (name,), limit=1)
        return rows[0] if rows else None

    def by_date(self, timestamp: int) -> Tag | None:
        """The newest tag on the trunk branch published at or before ``timestamp`` (as the client)."""
        cond = "WHERE branch = '' AND " if "branch" in self._cols else "WHERE "
        rows = self._rows(cond + "timestamp <= ? ORDER BY revision DESC", (timestamp,), limit=1)
        return rows[0] if rows else None
