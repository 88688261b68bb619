"""Writing the tag history database (schema 1.0, revision 3), stored as the ``H`` object.

Each publish derives the new history from the previous one: ``trunk`` moves to the new root
catalog, the old ``trunk`` becomes ``trunk-previous``, and named or automatic tags are added.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

SCHEMA = "1.0"
SCHEMA_REVISION = 3
TRUNK = "trunk"
TRUNK_PREVIOUS = "trunk-previous"
RESERVED = (TRUNK, TRUNK_PREVIOUS)

_SCHEMA_SQL = [
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));",
    "CREATE TABLE branches (branch TEXT, parent TEXT, initial_revision INTEGER, "
    " CONSTRAINT pk_branch PRIMARY KEY (branch),   FOREIGN KEY (parent) REFERENCES branches (branch), "
    "  CHECK ((branch <> '') OR (parent IS NULL)),   CHECK ((branch = '') OR (parent IS NOT NULL)));",
    "CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER,   timestamp INTEGER, channel INTEGER,"
    " description TEXT, size INTEGER,   branch TEXT, CONSTRAINT pk_tags PRIMARY KEY (name), "
    "  FOREIGN KEY (branch) REFERENCES branches (branch));",
    "CREATE TABLE recycle_bin (hash TEXT, flags INTEGER,   CONSTRAINT pk_hash PRIMARY KEY (hash));",
]


@dataclass(frozen=True)
class Tag:
    name: str
    root_hash: str  # hex (+ algorithm id), no suffix
    revision: int
    timestamp: int
    size: int  # uncompressed root catalog bytes
    description: str = ""


def auto_tag_name(timestamp: int) -> str:
    """``generic-YYYY-MM-DDThh:mm:ss.000Z`` as the server names automatic tags."""
    t = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return "generic-" + t.strftime("%Y-%m-%dT%H:%M:%S") + ".000Z"


class HistoryWriter:
    """Edits a history database file in place (a fresh one, or a copy of the previous one)."""

    def __init__(self, path: Path, fqrn: str, *, previous_db: Path | None, previous_hash: str | None):
        if previous_db is not None:
            shutil.copyfile(previous_db, path)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("BEGIN")
        if previous_db is None:
            for sql in _SCHEMA_SQL:
                self.db.execute(sql)
            self.db.execute("INSERT INTO branches VALUES ('', NULL, 0)")
            self._prop("schema", SCHEMA)
            self._prop("schema_revision", str(SCHEMA_REVISION))
            self._prop("fqrn", fqrn)
        self._prop("previous_revision", previous_hash or "0" * 40)

    def _prop(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO properties (key, value) VALUES (?, ?)", (key, value))

    def get(self, name: str) -> Tag | None:
        row = self.db.execute(
            "SELECT name, hash, revision, timestamp, size, description FROM tags WHERE name = ?", (name,)
        ).fetchone()
        return Tag(*row) if row else None

    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM tags ORDER BY name")]

    def put(self, tag: Tag) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO tags (name, hash, revision, timestamp, channel, description, size,"
            " branch) VALUES (?, ?, ?, ?, 0, ?, ?, '')",
            (tag.name, tag.root_hash, tag.revision, tag.timestamp, tag.description, tag.size),
        )

    def remove(self, name: str) -> bool:
        return self.db.execute("DELETE FROM tags WHERE name = ?", (name,)).rowcount > 0

    def advance_trunk(self, head: Tag) -> None:
        """The new revision becomes ``trunk``; the old ``trunk`` becomes ``trunk-previous``."""
        old = self.get(TRUNK)
        if old is not None:
            self.put(
                Tag(
                    TRUNK_PREVIOUS,
                    old.root_hash,
                    old.revision,
                    old.timestamp,
                    old.size,
                    "default undo target",
                )
            )
        self.put(Tag(TRUNK, head.root_hash, head.revision, head.timestamp, head.size, "current HEAD"))

    def close(self) -> None:
        self.db.execute("COMMIT")
        self.db.close()
