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
from .stage import BATCH, Stage, Staged

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
        root.entry.linkcount = 2 + self.stage.subdirectories("")
        return self._catalog("", root.entry)

    def _catalog(self, prefix: str, root: Entry) -> tuple[str, int, Counters]:
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
        self._fill(w, prefix)
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

    def _fill(self, w: CatalogWriter, path: str) -> None:
        """Rows for directory ``path``'s children: its files, then each subdirectory, depth first,
        streamed from the stage in name order (files in batches of ``BATCH``: a directory's entries
        are never all in memory at once). A stack of the directories' iterators, not recursion: a
        layer from a registry can be 3,000 directories deep (a RecursionError past ~1,000); the rows
        come in the same order."""
        stack = [self._files_then_dirs(w, path)]
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
            e.linkcount = 2 + self.stage.subdirectories(e.path)
            marker = self.stage.get(e.path + "/.cvmfscatalog")
            if marker is not None and stat.S_ISREG(marker.entry.mode):
                w.add(e, mountpoint=True)
                name, size, counters = self._catalog(e.path, e)
                w.add_nested(e.path, name, size, counters)
            else:
                w.add(e)
                stack.append(self._files_then_dirs(w, e.path))

    def _files_then_dirs(self, w: CatalogWriter, path: str) -> Iterator[Staged]:
        """Adds directory ``path``'s files (in batches); then yields its subdirectories."""
        files: list[Entry] = []
        for s in self.stage.iter_children(path, dirs=False):
            e = s.entry
            if stat.S_ISREG(e.mode) and e.digest is None and not e.chunks:
                raise AssertionError(f"no content recorded for {e.path}")
            files.append(e)
            if len(files) >= BATCH:
                w.add_many(files)
                files = []
        w.add_many(files)
        return self.stage.iter_children(path, dirs=True)
