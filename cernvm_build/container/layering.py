"""Where a tree is cut into layers, so that the image of the next snapshot reuses unchanged layers.

A snapshot is not a build history, so the cut follows the tree itself: one metadata pass weighs
every directory down to ``SPLIT_DEPTH`` (content bytes plus 512 per entry, a tar header). A
directory heavier than ``layer_bytes`` is *split*: each child directory of at least a quarter of
``layer_bytes`` becomes a layer of its own (or is split in turn), the lighter ones are grouped into
layers along name-defined boundaries (``_chunks``), and the split directory's own files are one
more layer. The root is always split; its own files and
the split directories' own entries form the *base* layer.

Every entry belongs to exactly one layer, so no whiteouts are needed. A layer's tar still needs the
directories above its subtrees (the tar writer wants a tree); those are *placeholders* with fixed
metadata (0755, root, mtime 0) so that a change of ``/usr``'s mtime does not change every layer
under it. The base layer is the last (top) layer and carries the real metadata of those
directories, which is what the unpacked image shows.

The cut depends only on the weights of the directories concerned, never on the whole tree's size,
so a change in one subtree moves no other boundary (unless it makes a directory cross a threshold).
Hard links never span layers: a link group found in two layers merges them. More than
``MAX_LAYERS`` layers doubles ``layer_bytes`` and cuts again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..tree import DIR, FILE, Entry, TreeSource

SPLIT_DEPTH = 3  # directories deeper than this are never split
MAX_LAYERS = 64  # overlay file systems and some engines limit the depth of an image (~125)
MAX_WEIGHED_DIRS = 200_000  # bounded memory for hostile trees: further directories are not weighed
DEFAULT_LAYER_BYTES = 64 << 20
_HEADER = 512
BASE = "/"  # the key of the base layer


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


@dataclass
class Weights:
    """Per directory (depth <= SPLIT_DEPTH + 1): its subtree's weight; the pairs of directories a
    link group joins; and the tree's content bytes (a link group once: the build's progress total)."""

    dirs: dict[str, int]
    links: set[tuple[str, str]]
    content: int = 0


def weigh(source: TreeSource) -> Weights:
    """The tree's weights, from one metadata pass."""
    dirs: dict[str, int] = {"": 0}
    first_dir: dict[object, str] = {}  # link id -> the first directory it was seen in
    links: set[tuple[str, str]] = set()
    content = 0
    for e in source.entries():
        weight = _HEADER + (e.size if e.kind == FILE else 0)
        if e.kind == FILE and (e.link_id is None or e.link_id not in first_dir):
            content += e.size
        parts = e.path.split("/")
        if e.kind == DIR and len(parts) <= SPLIT_DEPTH + 1 and len(dirs) < MAX_WEIGHED_DIRS:
            dirs[e.path] = 0
        for k in range(min(len(parts), SPLIT_DEPTH + 1) + 1):
            prefix = "/".join(parts[:k])
            if prefix in dirs:
                dirs[prefix] += weight
        if e.kind == FILE and e.link_id is not None:
            where = _parent(e.path)
            seen = first_dir.setdefault(e.link_id, where)
            if seen != where:
                links.add((seen, where))
    return Weights(dirs, links, content)


@dataclass(frozen=True)
class LayerPlan:
    """The cut: split directories, the units (subtrees with a layer of their own) and, for each
    layer key (a unit's path, a split directory's path + "/" for its rest, ``BASE``), its layer."""

    split: frozenset[str]
    layer_of_key: dict[str, int]
    keys: tuple[tuple[str, ...], ...]  # per layer, in image order (the base layer last)

    @property
    def count(self) -> int:
        return len(self.keys)

    @property
    def base(self) -> int:
        return self.count - 1

    def layer_of(self, path: str) -> int:
        """The layer that owns the entry at ``path``."""
        if path in self.split:
            return self.base
        cur = path
        while True:
            k = self.layer_of_key.get(cur)
            if k is not None:
                return k
            up = _parent(cur)
            if up in self.split:
                return self.layer_of_key[up + "/" if up else BASE]
            cur = up

    def split_entries(self, source: TreeSource) -> Iterator[tuple[int, Entry]]:
        """(layer, entry) for every entry, each layer's stream a tree: a layer's first entry below
        a split directory is preceded by placeholders for the split directories above it."""
        opened: list[set[str]] = [{""} for _ in range(self.count)]
        last_parent, last_layer = None, -1
        for e in source.entries():
            up = _parent(e.path)
            if e.kind == DIR:
                layer = self.layer_of(e.path)
            elif up == last_parent:  # a non-directory's layer is its directory's: most are siblings
                layer = last_layer
            else:
                layer = last_layer = self.files_in(up)
                last_parent = up
            if layer != self.base and up not in opened[layer] and e.path not in self.split:
                chain = []
                while up not in opened[layer] and up in self.split:
                    chain.append(up)
                    opened[layer].add(up)
                    up = _parent(up)
                for p in reversed(chain):
                    yield layer, Entry(path=p, kind=DIR, mode=0o755)
            yield layer, e

    def files_in(self, directory: str) -> int:
        """The layer of a non-directory directly in ``directory`` (its rest layer, when split)."""
        if directory in self.split:
            return self.layer_of_key[directory + "/" if directory else BASE]
        return self.layer_of(directory)


def plan_layers(source: TreeSource, *, layer_bytes: int = DEFAULT_LAYER_BYTES) -> LayerPlan:
    return plan_weighed(weigh(source), layer_bytes=layer_bytes)


def plan_weighed(weights: Weights, *, layer_bytes: int = DEFAULT_LAYER_BYTES) -> LayerPlan:
    """The cut of a tree already weighed (the build weighs it once, for the progress total too)."""
    while True:
        plan = _cut(weights, layer_bytes)
        if plan.count <= MAX_LAYERS:
            return plan
        layer_bytes *= 2


def _cut(w: Weights, layer_bytes: int) -> LayerPlan:
    children: dict[str, list[str]] = {}
    for d in w.dirs:
        if d:
            children.setdefault(_parent(d), []).append(d)
    split: set[str] = set()
    initial: list[list[str]] = []  # the layers before hard links merge any, each its keys
    todo = [""]
    while todo:
        d = todo.pop()
        split.add(d)
        small: list[str] = []
        for c in children.get(d, []):
            weight = w.dirs[c]
            if weight > layer_bytes and c.count("/") + 1 <= SPLIT_DEPTH and c in children:
                todo.append(c)
            elif weight * 4 >= layer_bytes:
                initial.append([c])
            else:
                small.append(c)
        initial += _chunks(small, w.dirs, layer_bytes)
        if d:
            initial.append([d + "/"])
    initial.sort(key=lambda g: g[0])
    initial.append([BASE])
    # hard-link groups spanning layers merge them (union-find over the initial layers)
    index = {k: i for i, g in enumerate(initial) for k in g}
    root = list(range(len(initial)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    probe = LayerPlan(frozenset(split), index, tuple(tuple(g) for g in initial))
    for a, b in w.links:
        ia, ib = find(probe.files_in(a)), find(probe.files_in(b))
        if ia != ib:
            base = len(initial) - 1
            # the base layer absorbs; otherwise the smaller index (a stable choice)
            keep, drop = (base, ia + ib - base) if base in (ia, ib) else (min(ia, ib), max(ia, ib))
            root[drop] = keep
    groups: dict[int, list[str]] = {}
    for i, g in enumerate(initial):
        groups.setdefault(find(i), []).extend(g)
    base_root = find(len(initial) - 1)
    ordered = sorted((g for r, g in groups.items() if r != base_root), key=lambda g: g[0])
    ordered.append(groups[base_root])
    layer_of_key = {k: i for i, g in enumerate(ordered) for k in g}
    return LayerPlan(frozenset(split), layer_of_key, tuple(tuple(g) for g in ordered))


def _chunks(small: list[str], weights: dict[str, int], layer_bytes: int) -> list[list[str]]:
    """Consecutive light directories grouped into layers of about ``layer_bytes / 2``. A group
    ends before a directory whose name hashes to a boundary (1 in 8) once it weighs a quarter
    of ``layer_bytes``, or when it reaches ``layer_bytes``: boundaries depend on the names, so a
    directory that grows or appears moves no boundary but its own group's."""
    out: list[list[str]] = []
    group: list[str] = []
    acc = 0
    for c in small:
        boundary = hashlib.sha256(c.encode("utf-8", "surrogateescape")).digest()[0] < 32
        if group and (acc >= layer_bytes or (acc * 4 >= layer_bytes and boundary)):
            out.append(group)
            group, acc = [], 0
        group.append(c)
        acc += weights[c]
    if group:
        out.append(group)
    return out


WHITEOUT = ".wh."  # OCI's whiteout entries: .wh.NAME removes NAME from the layers below
OPAQUE = ".wh..wh..opq"  # and this one hides all of its directory's lower content


def whiteout_of(path: str) -> tuple[str, str | None]:
    """What the whiteout entry at ``path`` (its name starts with ``WHITEOUT``) removes from the
    layers below: its directory and the name there, or None for all of the directory's content
    (``OPAQUE``). The one reading of whiteouts (``verify``, ``ingest``, the hub); ValueError when
    the name is no entry of that directory ("", ".", "..")."""
    directory, _, name = path.rpartition("/")
    if name == OPAQUE:
        return directory, None
    target = name[len(WHITEOUT) :]
    if target in ("", ".", ".."):
        raise ValueError(f"{name!r} removes no entry of its folder")
    return directory, target


@dataclass(frozen=True)
class LayerTar:
    """A layer as a tar file (as a registry holds it) and the paths of its whiteout entries."""

    path: Path
    whiteouts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageTrees:
    """An image's trees, for the hub: each layer alone (a tree, or a tar from a registry); the hub
    makes each chain from the one below plus its layer. ``top_names``: the top-level names of the
    whole image (the flat root's scaffold fills in only the others); None: read from ``root``."""

    root: TreeSource | None
    layers: Sequence[TreeSource | LayerTar]
    top_names: frozenset[str] | None = None

    def names(self) -> frozenset[str]:
        if self.top_names is not None:
            return self.top_names
        assert self.root is not None, "an image's trees give its root or its top-level names"
        return frozenset(e.path.split("/", 1)[0] for e in self.root.entries() if e.path not in ("", "."))


class LayerView:
    """One layer of ``plan`` as a tree source (the hub publishes each layer unpacked); every view
    walks the tree's metadata once and reads only its own files."""

    def __init__(self, source: TreeSource, plan: LayerPlan, layer: int) -> None:
        self.source, self.plan, self.layer = source, plan, layer
        self.description = source.description

    def entries(self) -> Iterator[Entry]:
        return (e for k, e in self.plan.split_entries(self.source) if k == self.layer)

    def open(self, entry: Entry) -> BinaryIO:
        return self.source.open(entry)
