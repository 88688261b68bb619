"""Catalogs written bottom-up from the stage; a nested catalog whose rows did not change keeps its
old object."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

from .catalog_write import (
    DEFAULT_TTL,
    CatalogWriter,
    Counters,
    Entry,
    content_digest,
)
from .objwrite import ObjectWriter
from .previous import OldCatalog, PreviousTree
from .stage import Stage, Staged

ZERO_HASH = "0" * 40


class CatalogBuilder:
    def __init__(
        self,
        stage: Stage,
        store: ObjectWriter,
        prev: PreviousTree | None,
        scratch: Path,
        revision: int,
        timestamp: int,
    ):
        self.stage = stage
        self.store = store
        self.prev = prev
        self.scratch = scratch
        self.revision = revision
        self.timestamp = timestamp
        self.new_catalogs: list[str] = []
        self.reused = 0
        self._n = 0

    def _old_catalog(self, prefix: str) -> OldCatalog | None:
        if self.prev is None:
            return None
        if prefix == "":
            return self.prev.root
        cat = self.prev.catalog_for(prefix)
        return cat if cat.prefix == prefix else None

    def build(self) -> tuple[str, int, Counters]:
        root = self.stage.get("")
        if root is None:
            raise AssertionError("stage has no root entry")
        children = self.stage.children("")
        root.entry.linkcount = 2 + sum(1 for c in children if stat.S_ISDIR(c.entry.mode))
        return self._catalog("", root.entry, children)

    def _catalog(self, prefix: str, root: Entry, children: list[Staged]) -> tuple[str, int, Counters]:
        self._n += 1
        db = self.scratch / f"cat.{self._n}.db"
        old = self._old_catalog(prefix)
        w = CatalogWriter(
            db,
            root_prefix=prefix,
            revision=self.revision,
            last_modified=self.timestamp,
            previous_revision=old.name if old else (None if prefix == "" else ZERO_HASH),
            ttl=DEFAULT_TTL if prefix == "" else None,
        )
        w.add(root, nested_root=prefix != "")
        self._fill(w, children)
        counters = w.finish()
        if old is not None and prefix and content_digest(db) == content_digest(old.db_path):
            self.reused += 1
            db.unlink()
            return old.name, old.size, counters
        size = db.stat().st_size
        name = self.store.put_path(db, "C")
        db.unlink()
        self.new_catalogs.append(name)
        if self.prev is not None:
            self.prev.cache.put(name, counters)
        return name, size, counters

    def _fill(self, w: CatalogWriter, children: list[Staged]) -> None:
        """Rows for one directory's children: its files in one batch, then each subdirectory, depth
        first. A stack of the directories' iterators, not recursion: a layer from a registry can be
        3,000 directories deep (a RecursionError past ~1,000); the rows come in the same order."""
        stack = [self._files_then_dirs(w, children)]
        while stack:
            s = next(stack[-1], None)
            if s is None:
                stack.pop()
                continue
            e = s.entry
            if s.nested is not None:
                w.add(e, mountpoint=True)
                w.add_nested(e.path, s.nested.catalog_hash, s.nested.size, s.nested.counters)
                continue
            grandchildren = self.stage.children(e.path)
            e.linkcount = 2 + sum(1 for c in grandchildren if stat.S_ISDIR(c.entry.mode))
            if any(c.entry.name == ".cvmfscatalog" and stat.S_ISREG(c.entry.mode) for c in grandchildren):
                w.add(e, mountpoint=True)
                name, size, counters = self._catalog(e.path, e, grandchildren)
                w.add_nested(e.path, name, size, counters)
            else:
                w.add(e)
                stack.append(self._files_then_dirs(w, grandchildren))

    @staticmethod
    def _files_then_dirs(w: CatalogWriter, children: list[Staged]) -> Iterator[Staged]:
        """Adds the directory's files in one batch; then yields its subdirectories."""
        files = [s.entry for s in children if not stat.S_ISDIR(s.entry.mode)]
        for e in files:
            if stat.S_ISREG(e.mode) and e.digest is None and not e.chunks:
                raise AssertionError(f"no content recorded for {e.path}")
        w.add_many(files)
        return (s for s in children if stat.S_ISDIR(s.entry.mode))
