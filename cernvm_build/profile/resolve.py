"""Finding profiles and merging a profile with the ones it extends.

``extends:`` names parents (a name or a path). A name is looked up beside the profile that names it,
then on the search path: the project's ``profiles/`` and each folder of ``$CERNVM_PROFILE_PATH``.
All ancestors are put in one order (depth first, parents before children, each file once, so a
diamond does not append a shared parent's lists twice) and merged in that order: scalars override,
mappings merge, lists append, and a value tagged ``!replace`` replaces what it overrides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..errors import Location, ProfileError
from . import upgrade
from .settings import SETTINGS
from .yamlnodes import REPLACE_TAG, Node, Pos, display, load_file, location


def default_search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("CERNVM_PROFILE_PATH", "").split(os.pathsep) if p]
    return [paths.data_dir("profiles"), *extra]


def looks_like_path(name: str) -> bool:
    return "/" in name or name.endswith((".yaml", ".yml"))


def find(name: str, search_path: Sequence[Path], beside: Path | None = None) -> Path | None:
    """The file for a profile name or path; ``beside`` is the folder of the profile naming it."""
    if looks_like_path(name):
        candidate = Path(name).expanduser()
        if not candidate.is_absolute() and beside is not None:
            candidate = beside / candidate
        return candidate.resolve() if candidate.is_file() else None
    folders = ([beside] if beside is not None else []) + list(search_path)
    for folder in folders:
        for ext in (".yaml", ".yml"):
            candidate = folder / f"{name}{ext}"
            if candidate.is_file():
                return candidate.resolve()
    return None


@dataclass
class Layer:
    """One profile file, parsed: its own settings and the parents it names."""

    path: Path
    tree: Node
    extends: list[str]
    extends_pos: list[Pos | None]
    #: deprecated keys the file uses (read under their new names)
    warnings: list[ProfileError] = field(default_factory=list)


def read_layer(path: Path) -> Layer:
    """One file, upgraded to the current profile format."""
    tree, warnings = upgrade.upgrade(load_file(path))
    node = tree.value.get("extends")
    names: list[str] = []
    where: list[Pos | None] = []
    if node is not None:
        items = node.value if node.kind == "seq" else [node] if node.value is not None else []
        for item in items:
            if item.kind != "scalar" or not isinstance(item.value, str) or not item.value.strip():
                raise ProfileError(
                    "expected a profile name or path",
                    where=location(item.pos, "extends"),
                    hint="write 'extends: base' or 'extends: [base, other]'",
                )
            names.append(item.value)
            where.append(item.pos)
    return Layer(path, tree, names, where, warnings)


#: how many profiles one ``extends`` chain may pass through: the shipped ones use 2-3; each level is a
#: recursion (1,500 files of ``extends: next`` were a RecursionError traceback) and copies the chain
MAX_EXTENDS_DEPTH = 64


def linearize(path: Path, search_path: Sequence[Path], cache: dict[Path, Layer] | None = None) -> list[Layer]:
    """All layers of the profile at ``path``: parents first, each once, the profile itself last."""
    cache = {} if cache is None else cache
    order: list[Layer] = []
    done: set[Path] = set()

    def visit(p: Path, chain: list[Path]) -> None:
        if p in done:
            return
        layer = cache.get(p) or read_layer(p)
        cache[p] = layer
        named: set[Path] = set()
        for name, pos in zip(layer.extends, layer.extends_pos, strict=True):
            parent = find(name, search_path, beside=p.parent)
            if parent is None:
                where = " -> ".join(display(c) for c in [*chain, p])
                folders = ", ".join(display(f) for f in [p.parent, *search_path])
                raise ProfileError(
                    f"parent profile {name!r} not found (extends chain: {where})",
                    where=location(pos, "extends"),
                    hint=f"looked in {folders}; fix the name or add its folder to $CERNVM_PROFILE_PATH",
                )
            if parent in named:
                # merged once anyway: the second name is almost surely a typo for another parent
                raise ProfileError(
                    f"parent profile {name!r} is named twice",
                    where=location(pos, "extends"),
                    hint="name each parent once (did you mean another profile?)",
                )
            named.add(parent)
            if parent in chain or parent == p:
                cycle = " -> ".join(display(c) for c in [*chain, p, parent])
                raise ProfileError(
                    f"extends cycle: {cycle}",
                    where=location(pos, "extends"),
                    hint="a profile cannot extend itself, directly or through its parents",
                )
            if len(chain) + 1 >= MAX_EXTENDS_DEPTH:
                raise ProfileError(
                    f"extends chain deeper than {MAX_EXTENDS_DEPTH} profiles"
                    f" (from {display(chain[0] if chain else p)})",
                    where=location(pos, "extends"),
                    hint="platform profiles extend a few others (el9 -> base); merge some of these files",
                )
            visit(parent, [*chain, p])
        done.add(p)
        order.append(layer)

    visit(path, [])
    return order


def check_replace(node: Node, layer: Layer, key: str = "") -> None:
    """``!replace`` in a profile without parents has nothing to replace: almost surely a mistake."""
    if node.replace and not layer.extends:
        raise ProfileError(
            f"{REPLACE_TAG} but this profile extends nothing",
            where=location(node.pos, key or None),
            hint=f"{REPLACE_TAG} replaces a value inherited through 'extends:'; remove the tag",
        )
    if node.kind == "map":
        for k, child in node.value.items():
            check_replace(child, layer, f"{key}.{k}" if key else k)
    elif node.kind == "seq":
        for i, child in enumerate(node.value):
            check_replace(child, layer, f"{key}[{i}]")


NOT_INHERITED = tuple(s.key for s in SETTINGS if not s.inherit)


def merge(base: Node, over: Node) -> Node:
    """``over`` on top of ``base`` (neither is modified)."""
    if over.replace:
        return over.copy(replace=False)
    if base.kind == "map" and over.kind == "map":
        items = dict(base.value)
        for k, v in over.value.items():
            items[k] = merge(items[k], v) if k in items else v
        return over.copy(value=items)
    if base.kind == "seq" and over.kind == "seq":
        return over.copy(value=[*base.value, *over.value])
    return over


def merge_layers(layers: Sequence[Layer]) -> Node:
    """One tree from all layers (the last is the profile itself; its name/extends alone count)."""
    result = Node("map", {}, layers[-1].tree.pos)
    for i, layer in enumerate(layers):
        check_replace(layer.tree, layer)
        own = layer.tree
        if i < len(layers) - 1:
            own = own.copy(value={k: v for k, v in own.value.items() if k not in NOT_INHERITED})
        result = merge(result, own)
    return result


def where_file(path: Path) -> Location:
    return Location(file=display(path))
