"""Profile format versions: reading files written for older formats, refusing newer ones.

Each profile file says which format it is written in (``format: 1``); a file without the key is
format 1, the first one. When a format changes, ``FORMAT`` (in ``settings.py``) goes up by one and
``STEPS`` gains the function that turns a tree of the old format into the new one (renaming or
transforming keys; nodes keep their positions, so errors and ``profiles show --origins`` still point
at the line the user wrote). Every file is upgraded on its own before it is merged, so a profile may
extend parents written for older formats. Renamed settings also keep their old key as an alias in the
table (``Setting.aliases``): read with a warning naming the new key.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ProfileError
from .settings import ALIASES, FORMAT
from .yamlnodes import Node, location

#: format N -> the function that upgrades a tree of format N to format N + 1 (none yet: format 1 is current)
STEPS: dict[int, Callable[[Node], Node]] = {}


def file_format(tree: Node) -> int:
    """The format a file is written in; raises for one newer than this cernvm-build reads.

    A ``format`` that is no integer is left to the settings table to report (read as current here).
    """
    node = tree.value.get("format")
    if node is None or node.value is None:
        return 1
    version: object = node.value
    if node.kind != "scalar" or isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return FORMAT
    if version > FORMAT:
        raise ProfileError(
            f"written for profile format {version} by a newer cernvm-build "
            f"(this one reads formats 1..{FORMAT})",
            where=location(node.pos, "format"),
            hint="upgrade cernvm-build, or use a version of the profile written for this one",
        )
    return version


def upgrade(tree: Node) -> tuple[Node, list[ProfileError]]:
    """``tree`` in the current format, and a warning for each deprecated key it used."""
    for version in range(file_format(tree), FORMAT):
        tree = STEPS[version](tree)
    warnings: list[ProfileError] = []
    for old, new in ALIASES.items():
        node = get(tree, old)
        if node is None:
            continue
        if get(tree, new) is not None:
            raise ProfileError(
                f"both {old!r} (deprecated) and {new!r} are set",
                where=location(node.key_pos or node.pos, old),
                hint=f"remove {old!r}",
            )
        warnings.append(
            ProfileError(
                f"{old!r} is deprecated: it was renamed to {new!r}",
                where=location(node.key_pos or node.pos, old),
                hint=f"write {new!r} instead (the value is read as {new!r} meanwhile)",
            )
        )
        tree = rename(tree, old, new)
    return tree, warnings


def get(tree: Node, key: str) -> Node | None:
    """The node at dotted ``key``, or None."""
    node: Node | None = tree
    for part in key.split("."):
        if node is None or node.kind != "map":
            return None
        node = node.value.get(part)
    return node


def rename(tree: Node, old: str, new: str) -> Node:
    """A copy of ``tree`` with the value at ``old`` moved to ``new`` (its node, so its position, kept)."""
    moved = get(tree, old)
    if moved is None:
        return tree
    return put(_remove(tree, old.split(".")), new, moved)


def put(tree: Node, key: str, value: Node) -> Node:
    """A copy of ``tree`` with ``value`` at dotted ``key`` (mappings on the way made as needed)."""
    return _set(tree, key.split("."), value)


def _remove(node: Node, parts: list[str]) -> Node:
    items = dict(node.value)
    if len(parts) == 1:
        items.pop(parts[0], None)
    else:
        items[parts[0]] = _remove(items[parts[0]], parts[1:])
    return node.copy(value=items)


def _set(node: Node, parts: list[str], value: Node) -> Node:
    items = dict(node.value)
    if len(parts) == 1:
        items[parts[0]] = value
    else:
        child = items.get(parts[0])
        if child is None or child.kind != "map":
            child = Node("map", {}, value.pos, key_pos=value.key_pos)
        items[parts[0]] = _set(child, parts[1:], value)
    return node.copy(value=items)
