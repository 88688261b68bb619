"""From a merged node tree to typed values, driven by the settings table.

Checks what the table declares: known keys (with a "did you mean"), types, allowed values, patterns,
ranges, required settings. Errors are collected, not raised, so ``profiles validate`` reports every
problem in a file at once; each names file:line:column and the key path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import table
from ..errors import ProfileError
from ..table import Kind, Setting, suggest
from .settings import BY_KEY, SECTIONS, SETTINGS, children, default_of
from .yamlnodes import Node, Pos, location


@dataclass
class Values:
    """Typed values by dotted key, and the node each came from (None: the default)."""

    leaf: Path | None = None  # the profile file itself (not a parent)
    values: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, Node | None] = field(default_factory=dict)
    errors: list[ProfileError] = field(default_factory=list)

    def pos(self, key: str) -> Pos | None:
        node = self.nodes.get(key)
        return node.pos if node is not None else None

    def blame(self, *keys: str) -> str:
        """Of ``keys``, the first one written in the profile itself, else the first one written at all."""
        written = [k for k in keys if self.nodes.get(k) is not None]
        for k in written:
            pos = self.pos(k)
            if pos is not None and pos.file == self.leaf:
                return k
        return written[0] if written else keys[0]

    def explicit(self, key: str) -> bool:
        node = self.nodes.get(key)
        return node is not None and not (node.kind == "scalar" and node.value is None)


def _fail(errors: list[ProfileError], pos: Pos | None, key: str, message: str, hint: str) -> None:
    errors.append(ProfileError(message, where=location(pos, key), hint=hint))


def leaves(tree: Node, errors: list[ProfileError]) -> dict[str, Node]:
    """The nodes of known settings by dotted key; unknown keys and misplaced sections are errors."""
    found: dict[str, Node] = {}

    def walk(node: Node, section: str) -> None:
        for key, child in node.value.items():
            full = f"{section}.{key}" if section else key
            if "." in key:  # never a setting: a dotted key would otherwise match the table
                head, _, rest = key.partition(".")
                _fail(
                    errors,
                    child.key_pos or child.pos,
                    full,
                    f"unknown setting (dotted keys are not expanded: write '{head}:' with '{rest}:' "
                    "indented below it)",
                    "see 'cernvm-build profiles reference'",
                )
            elif full in BY_KEY:
                found[full] = child
            elif full in SECTIONS:
                if child.kind == "map":
                    walk(child, full)
                elif not (child.kind == "scalar" and child.value is None):
                    _fail(
                        errors,
                        child.pos,
                        full,
                        f"expected a mapping of settings, got {_kind_name(child)}",
                        f"write '{key}:' followed by indented settings such as "
                        f"{', '.join(children(full)[:3])}",
                    )
            else:
                options = children(section)
                hint = suggest(key, options)
                elsewhere = [s.key for s in SETTINGS if s.key.rsplit(".", 1)[-1] == key]
                if "did you mean" not in hint and elsewhere:
                    hint += f" (did you mean {elsewhere[0]!r}?)"
                where = f"under '{section}'" if section else "at the top level"
                _fail(
                    errors,
                    child.key_pos or child.pos,
                    full,
                    f"unknown setting{hint}",
                    f"known settings {where}: {', '.join(options)} (see 'cernvm-build profiles reference')",
                )

    walk(tree, "")
    return found


def _kind_name(node: Node) -> str:
    if node.kind == "map":
        return "a mapping"
    if node.kind == "seq":
        return "a list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({node.text})"
    if isinstance(v, int | float):
        return f"a number ({node.text})"
    return f"a string ({node.text!r})"


def _text(node: Node) -> str | None:
    """A scalar's text as a string setting sees it; None for non-scalars."""
    if node.kind != "scalar" or node.value is None:
        return None
    return node.value if isinstance(node.value, str) else (node.text or "")


def _check(errors: list[ProfileError], s: Setting, value: str | int | bool, pos: Pos | None, key: str) -> Any:
    """The table's conversion of one scalar; None (and an error) when the setting refuses it."""
    try:
        return table.scalar(s, value)
    except table.Invalid as e:
        _fail(errors, pos, key, e.message, e.hint)
        return None


def resolve_path(text: str, pos: Pos | None) -> Path:
    p = Path(text).expanduser()
    if not p.is_absolute() and pos is not None:
        p = pos.file.parent / p
    return p.resolve()


def convert_one(s: Setting, node: Node, errors: list[ProfileError]) -> Any:
    """The typed value of ``node`` for setting ``s``; appends errors and returns None when invalid."""
    key, pos = s.key, node.pos
    n_errors = len(errors)
    if node.kind == "scalar" and node.value is None:
        if s.nullable or not s.required:
            return None if s.nullable else default_of(s)
        _fail(errors, pos, key, "must not be null", "give it a value")
        return None

    def wrong(expected: str, example: str | None = None) -> None:
        ex = example or s.example
        hint = f"write e.g. '{key.rsplit('.', 1)[-1]}: {ex}'" if ex else f"give {expected}"
        _fail(errors, pos, key, f"expected {expected}, got {_kind_name(node)}", hint)

    if s.kind.is_text and not s.kind.is_list and s.kind is not Kind.DICT_STR:
        text = _text(node)
        if text is None:
            wrong(f"a {s.kind.item.value}" if s.kind is Kind.URL else "a string")
            return None
        if _check(errors, s, text, pos, key) is None:
            return None
        return resolve_path(text, pos) if s.kind is Kind.PATH else text
    if s.kind in (Kind.INT, Kind.SIZE, Kind.DURATION):
        v = node.value
        if node.kind == "scalar" and node.templated and isinstance(v, str) and re.fullmatch(r"-?\d+", v):
            v = int(v)
        text_ok = s.kind is not Kind.INT and node.kind == "scalar" and isinstance(v, str)  # "4G", "15m"
        if not text_ok and (node.kind != "scalar" or isinstance(v, bool) or not isinstance(v, int)):
            wrong("an integer" if s.kind is Kind.INT else f"a {s.kind.value}")
            return None
        return _check(errors, s, v, pos, key)
    if s.kind is Kind.BOOL:
        if node.kind != "scalar" or not isinstance(node.value, bool):
            wrong("true or false", "true")
            return None
        return node.value
    if s.kind.is_list:
        if s.single_ok and node.kind == "scalar":
            node = node.copy(kind="seq", value=[node])
        if node.kind != "seq":
            wrong("a list", f"[{node.text}]" if node.kind == "scalar" else None)
            return None
        items: list[Any] = []
        for item in node.value:
            text = _text(item)
            if text is None:
                _fail(
                    errors,
                    item.pos,
                    key,
                    f"list items must be strings, got {_kind_name(item)}",
                    "write each item as a plain value",
                )
                continue
            if _check(errors, s, text, item.pos, key) is not None:
                value: Any = resolve_path(text, item.pos) if s.kind is Kind.LIST_PATH else text
                if not (s.unique and value in items):
                    items.append(value)
        return items if len(errors) == n_errors else None
    if s.kind is Kind.DICT_STR:
        if node.kind != "map":
            wrong("a mapping of names to strings")
            return None
        result: dict[str, str] = {}
        for name, item in node.value.items():
            if s.pattern and not re.fullmatch(s.pattern, name):
                _fail(
                    errors,
                    item.key_pos,
                    f"{key}.{name}",
                    f"invalid name {name!r}",
                    f"expected {s.pattern_help or s.pattern}",
                )
                continue
            text = _text(item)
            if text is None:
                _fail(
                    errors,
                    item.pos,
                    f"{key}.{name}",
                    f"expected a string, got {_kind_name(item)}",
                    'quote the value, e.g. "on"',
                )
                continue
            result[name] = text
        return result if len(errors) == n_errors else None
    raise AssertionError(s.kind)


def _missing(found: dict[str, Node], leaf_file: Path, errors: list[ProfileError]) -> None:
    for s in SETTINGS:
        node = found.get(s.key)
        if s.required and (node is None or (node.kind == "scalar" and node.value is None)):
            _fail(
                errors,
                Pos(leaf_file, 1, 1) if node is None else node.pos,
                s.key,
                "required setting is missing",
                f"set it in this profile or in a parent it extends (e.g. {s.key}: {s.example or '...'})",
            )


def missing_or_unknown(tree: Node, leaf_file: Path) -> list[ProfileError]:
    """Unknown keys, misplaced sections and missing required settings: what to report before templates."""
    errors: list[ProfileError] = []
    _missing(leaves(tree, errors), leaf_file, errors)
    return errors


def convert(tree: Node, leaf_file: Path) -> Values:
    """Typed values of every setting (defaults filled in), with all errors found."""
    out = Values(leaf=leaf_file)
    found = leaves(tree, out.errors)
    _missing(found, leaf_file, out.errors)
    for s in SETTINGS:
        node = found.get(s.key)
        out.nodes[s.key] = node
        if node is None:
            out.values[s.key] = None if s.required else default_of(s)
        elif s.required and node.kind == "scalar" and node.value is None:
            out.values[s.key] = None
        else:
            out.values[s.key] = convert_one(s, node, out.errors)
    return out
