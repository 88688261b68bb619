"""Several changes in one revision: the parts of ``publish.publish_parts``.

A publish below one ``base_path`` replaces one subtree. A hub that takes in a container image
changes many (each layer, each chain, the flat root, a few metadata files), and paying a signed
revision, a catalog rewrite and a lock for each one is what made it slow. Here the parts are applied
in order to one stage, so the whole set is one revision:

- ``TarPart(base, stream)``: the tar's tree at ``base`` (replacing what was there), or with
  ``over=True`` merged onto what this transaction has staged there (a tar extracted over a tree);
- ``CopyPart(src, dst)``: the subtree at ``src`` (as this transaction staged it, else as the previous
  revision has it, nested catalogs read through) copied to ``dst``, or merged onto it with ``over``:
  ``cvmfs_server transaction -T src=dst`` (a template transaction). Only catalog rows are copied;
  the content objects are shared, so a copy costs a walk of the metadata, never the data.
- ``RemovePart(path, children_only)``: drop a staged subtree (or empty a directory), e.g. a whiteout.

The targets of the replacing parts (a ``TarPart`` or ``CopyPart`` without ``over``) are the
revision's base paths: everything else of the previous revision is kept, nested catalogs by hash.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

from ..errors import CvmfsError
from .catalog_write import Entry
from .content import ContentStore
from .objwrite import ObjectWriter
from .options import Options
from .previous import OldCatalog, PreviousTree
from .scan import ensure_dirs, entry_from_old, norm_base
from .scan_tar import scan_tar
from .stage import Stage


@dataclass(frozen=True)
class TarPart:
    base: str
    stream: BinaryIO
    over: bool = False


@dataclass(frozen=True)
class CopyPart:
    src: str
    dst: str
    over: bool = False


@dataclass(frozen=True)
class RemovePart:
    path: str
    children_only: bool = False


Part = TarPart | CopyPart | RemovePart


def replaced_bases(parts: Sequence[Part]) -> tuple[str, ...]:
    """The paths whose previous content the revision drops (each replacing part's target)."""
    out = []
    for p in parts:
        if isinstance(p, TarPart) and not p.over:
            out.append(norm_base(p.base))
        elif isinstance(p, CopyPart) and not p.over:
            out.append(norm_base(p.dst))
    if not out:
        raise CvmfsError(
            "nothing to publish: no part replaces or adds a subtree", hint="give a tar or a copy"
        )
    return tuple(out)


def _put(stage: Stage, e: Entry) -> None:
    """Stage ``e`` as extracting it would: a non-directory replacing a directory drops its subtree."""
    had = stage.get(e.path)
    if had is not None and stat.S_ISDIR(had.entry.mode) and not stat.S_ISDIR(e.mode):
        stage.remove_tree(e.path)
    stage.put(e)


def _copy_old(stage: Stage, prev: PreviousTree, cat: OldCatalog, src: str, dst: str) -> None:
    """The previous revision's subtree below directory ``src`` (catalog ``cat`` holds its row)."""
    stack = [(cat, src)]
    while stack:
        cat, path = stack.pop()
        if path in cat.nested and path != cat.prefix:
            cat = prev.nested_catalog(cat, path)
        for row in cat.children(path):
            e = entry_from_old(row, cat)
            _put(stage, replace(e, path=dst + row.path[len(src) :]))
            if stat.S_ISDIR(row.mode):
                stack.append((cat, row.path))


def _copy(stage: Stage, prev: PreviousTree, src: str, dst: str) -> None:
    if not stage.has(src):
        found = prev.lookup(src)
        if found is None:
            raise CvmfsError(f"{src or '/'}: nothing there to copy to {dst}", hint="publish it first")
        row, cat = found
        _put(stage, replace(entry_from_old(row, cat), path=dst))
        if stat.S_ISDIR(row.mode):
            _copy_old(stage, prev, cat, src, dst)
        return
    for copied in stage.copy_tree(src, dst):  # the parts kept by reference: read them through
        old = src + copied[len(dst) :]
        found = prev.lookup(old)
        assert found is not None, old
        _copy_old(stage, prev, found[1], old, copied)


def _remove(stage: Stage, path: str, children_only: bool) -> None:
    had = stage.get(path)
    if had is None:
        return
    stage.remove_tree(path)
    if children_only and stat.S_ISDIR(had.entry.mode):
        stage.put(had.entry)


def stage_parts(
    stage: Stage, prev: PreviousTree, store: ObjectWriter, parts: Sequence[Part], opts: Options
) -> None:
    """Apply ``parts`` in order to ``stage`` (which holds the previous revision minus the bases)."""
    for p in parts:
        if isinstance(p, TarPart):
            base = norm_base(p.base)
            if not p.over:
                stage.remove_tree(base)
            content = ContentStore(store, stage, opts)
            try:
                scan_tar(stage, content, p.stream, base, opts)
            finally:
                content.pool.shutdown(wait=True, cancel_futures=True)
        elif isinstance(p, CopyPart):
            src, dst = norm_base(p.src), norm_base(p.dst)
            if dst == src or dst.startswith(src + "/") or src.startswith(dst + "/"):
                raise CvmfsError(f"cannot copy {src or '/'} to {dst or '/'}", hint="they overlap")
            if not p.over:
                stage.remove_tree(dst)
            ensure_dirs(stage, dst.rsplit("/", 1)[0], opts.timestamp)
            _copy(stage, prev, src, dst)
        else:
            _remove(stage, norm_base(p.path), p.children_only)
