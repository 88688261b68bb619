"""YAML with positions: every value remembers the file, line and column it came from.

PyYAML composes a node graph with marks; we turn it into ``Node`` trees (not plain data) so that
merging and validation can still say where a value was written. Scalars keep both their YAML type
(``value``) and their text as written (``text``): string settings take the text, so ``2021.10`` stays
``"2021.10"`` and ``on`` stays ``"on"``. Timestamps are not resolved (dates are strings to us).
Duplicate keys, which PyYAML silently accepts, are errors here.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .. import yamlerror
from ..errors import Location, ProfileError
from ..fsutil import NotRegularFile, open_regular

REPLACE_TAG = "!replace"


@dataclass(frozen=True)
class Pos:
    file: Path  # for a command-line flag: the working directory's "<command line>" (paths resolve there)
    line: int  # 1-based
    column: int  # 1-based
    flag: str | None = None  # a value given on the command line: the flag, e.g. "--server"

    @classmethod
    def command_line(cls, flag: str) -> Pos:
        return cls(Path.cwd() / "<command line>", 0, 0, flag)


@dataclass
class Node:
    """A mapping (``value``: dict[str, Node]), sequence (list[Node]) or scalar."""

    kind: str  # "map", "seq" or "scalar"
    value: Any
    pos: Pos | None  # None: a default from the settings table
    text: str | None = None  # scalars: the text as written
    key_pos: Pos | None = None  # mapping values: where their key is
    replace: bool = False  # tagged !replace: replaces the parent's value instead of merging
    templated: bool = field(default=False)  # rendered from a jinja2 template

    def copy(self, **changes: Any) -> Node:
        return replace(self, **changes)

    def clone(self) -> Node:
        """A deep copy of the tree (positions, being immutable, are shared)."""
        value = self.value
        if self.kind == "map":
            value = {k: v.clone() for k, v in value.items()}
        elif self.kind == "seq":
            value = [v.clone() for v in value]
        return Node(self.kind, value, self.pos, self.text, self.key_pos, self.replace, self.templated)


def display(path: Path) -> str:
    """A path as users should see it in messages: relative to the working directory when inside it."""
    return _display(path, os.getcwd())


@functools.lru_cache(maxsize=1024)
def _display(path: Path, cwd: str) -> str:
    try:
        return str(path.resolve().relative_to(Path(cwd).resolve()))
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        return str(path)


def location(pos: Pos | None, key: str | None = None) -> Location:
    if pos is None:
        return Location(key=key)
    if pos.flag is not None:
        return Location(file=pos.flag, key=key)
    return Location(file=display(pos.file), line=pos.line, column=pos.column, key=key)


# libyaml's parser when PyYAML has it (several times faster); marks are the same either way.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader without timestamp resolution (``2019-06-30T00:00:00Z`` stays a string)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_STANDARD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


_CACHE: dict[tuple[Path, int, int], Node] = {}


def clear_cache() -> None:
    """Forget parsed files (benchmarks measure cold loads with it)."""
    _CACHE.clear()


def load_file(path: Path) -> Node:
    """Parse one YAML file into a ``Node`` mapping (an empty file is an empty mapping).

    Parsed files are cached by path, size and mtime: loading every profile reads ``base.yaml`` once.
    Callers must not modify the returned tree (``check`` renders templates in a deep copy).
    """
    try:
        st = path.stat()
        key = (path, st.st_size, st.st_mtime_ns)
        if key in _CACHE:
            return _CACHE[key]
        if st.st_size > MAX_FILE_BYTES:
            raise _too_big(path, st.st_size)
        # open_regular: a FIFO named *.yaml in a profile folder hung `profiles list` for ever (pr24b)
        with open_regular(path) as f:
            data = f.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
        if len(data) > MAX_FILE_BYTES:
            raise _too_big(path, len(data))
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ProfileError(
            "no such profile file", where=Location(file=display(path)), hint="check the path"
        ) from None
    except UnicodeDecodeError as e:
        line, column = _line_column(data[: e.start].decode("utf-8"))
        raise ProfileError(
            f"byte 0x{data[e.start]:02x} is not UTF-8",
            where=Location(file=display(path), line=line, column=column),
            hint="profiles are UTF-8 text files: save the file as UTF-8",
        ) from None
    except NotRegularFile:
        raise ProfileError(
            "not a regular file", where=Location(file=display(path)), hint="a profile is a YAML file"
        ) from None
    except OSError as e:
        raise ProfileError(
            f"cannot read: {e}", where=Location(file=display(path)), hint="profiles are UTF-8 text files"
        ) from None
    node = load_text(text, path)
    _CACHE[key] = node
    return node


def _line_column(before: str) -> tuple[int, int]:
    """The 1-based line and column of the character after ``before`` (the text up to it)."""
    return before.count("\n") + 1, len(before) - before.rfind("\n")


#: no profile comes near (the largest shipped one is under 2 KiB); parsing costs ~200 bytes of memory per
#: byte of YAML, so this also bounds what a file can make the parser allocate
MAX_FILE_BYTES = 256 * 1024


def _too_big(path: Path, size: int) -> ProfileError:
    return ProfileError(
        f"the file is {size} bytes; profiles are at most {MAX_FILE_BYTES} bytes",
        where=Location(file=display(path), line=1, column=1),
        hint="a profile is a short YAML file of settings: is this the right file?",
    )


def load_text(text: str, path: Path) -> Node:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        problem = yamlerror.describe(e)
        pos = Pos(path, problem.line, problem.column) if problem.line and problem.column else None
        raise ProfileError(
            f"YAML syntax error: {problem.what}",
            where=location(pos),
            hint="fix the YAML syntax (indentation, quotes, ':' after keys)",
        ) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (NUL, other controls)
        # libyaml (CSafeLoader) counts UTF-8 bytes, PyYAML's own reader characters
        c = _BaseLoader is not yaml.SafeLoader
        line, column = _line_column(
            text.encode()[: e.position].decode(errors="replace") if c else text[: e.position]
        )
        raise ProfileError(
            f"YAML syntax error: character {chr(e.character)!r} (#x{e.character:04x}) is not allowed in YAML",
            where=Location(file=display(path), line=line, column=column),
            hint='remove the control character (write it as an escape, e.g. "\\0", in a quoted string)',
        ) from None
    except yaml.YAMLError as e:
        raise ProfileError(
            f"YAML syntax error: {e}", where=Location(file=display(path)), hint="fix the YAML syntax"
        ) from None
    finally:
        loader.dispose()
    if root is None:
        return Node("map", {}, Pos(path, 1, 1))
    node = _convert(root, _Walk(path, loader))
    if node.kind != "map":
        raise ProfileError(
            "a profile must be a YAML mapping of settings",
            where=location(node.pos),
            hint="start the file with keys such as 'extends:', 'os:', 'cvmfs:'",
        )
    return node


def _pos(node: yaml.Node, path: Path) -> Pos:
    return Pos(path, node.start_mark.line + 1, node.start_mark.column + 1)


#: more values than any profile needs: what is left is an alias bomb ("billion laughs")
MAX_VALUES = 20_000
#: deeper than any profile needs (settings are at most 3 levels deep); the conversion recurses
MAX_DEPTH = 64


@dataclass
class _Walk:
    path: Path
    loader: Any
    count: int = 0
    active: set[int] = field(default_factory=set)  # ids of the collections being converted
    depth: int = 0


def _convert(node: yaml.Node, walk: _Walk, at: str = "") -> Node:
    pos = _pos(node, walk.path)
    walk.count += 1
    if walk.count > MAX_VALUES:
        raise ProfileError(
            f"more than {MAX_VALUES} values (aliases that expand without end?)",
            where=location(pos, at or None),
            hint="write the profile out plainly; YAML aliases (*name) are not needed in profiles",
        )
    replace_tag = node.tag == REPLACE_TAG
    if not replace_tag and node.tag not in _STANDARD_TAGS:
        raise ProfileError(
            f"unsupported YAML tag {node.tag}",
            where=location(pos, at or None),
            hint=f"profiles use plain YAML values; the only tag is {REPLACE_TAG} (on lists and mappings)",
        )
    if isinstance(node, yaml.CollectionNode):
        if id(node) in walk.active:
            raise ProfileError(
                "a YAML alias refers to the value that contains it",
                where=location(pos, at or None),
                hint="remove the recursive alias (*name inside &name)",
            )
        if walk.depth >= MAX_DEPTH:
            raise ProfileError(
                f"values nested more than {MAX_DEPTH} levels deep",
                where=location(pos, at or None),
                hint="profile settings are a few levels of mappings and lists",
            )
        walk.active.add(id(node))
        walk.depth += 1
        try:
            return _collection(node, walk, at, pos, replace_tag)
        finally:
            walk.active.discard(id(node))
            walk.depth -= 1
    assert isinstance(node, yaml.ScalarNode)
    if replace_tag:
        raise ProfileError(
            f"{REPLACE_TAG} applies to lists and mappings, not to a single value",
            where=location(pos, at or None),
            hint=f"a single value always replaces the parent's; remove {REPLACE_TAG}",
        )
    try:
        value = walk.loader.construct_object(node, deep=True)
    except ValueError as e:  # past Python's 4,300-digit int() limit; a date such as 2026-13-01
        shown = str(node.value) if len(str(node.value)) <= 24 else f"{str(node.value)[:20]}…"
        big = node.tag == "tag:yaml.org,2002:int"
        raise ProfileError(
            f"{shown!r} is too large a number" if big else f"{shown!r} cannot be read: {e}",
            where=location(pos, at or None),
            hint="write at most 18 digits" if big else "quote it to make it text",
        ) from None
    return Node("scalar", value, pos, text=str(node.value))


def _collection(node: yaml.CollectionNode, walk: _Walk, at: str, pos: Pos, replace_tag: bool) -> Node:
    if isinstance(node, yaml.SequenceNode):
        return Node("seq", [_convert(v, walk, at) for v in node.value], pos, replace=replace_tag)
    items: dict[str, Node] = {}
    for key_node, value_node in node.value:
        key_pos = _pos(key_node, walk.path)
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:null":
            raise ProfileError(
                "mapping keys must be plain names",
                where=location(key_pos, at or None),
                hint="write 'name: value'",
            )
        key = str(key_node.value)
        full = f"{at}.{key}" if at else key
        if key in items:
            first = items[key].key_pos
            line = f" (first at line {first.line})" if first else ""
            raise ProfileError(
                f"duplicate key {key!r}{line}",
                where=location(key_pos, full),
                hint="remove one of them: YAML would silently keep only the last",
            )
        child = _convert(value_node, walk, full)
        child.key_pos = key_pos
        items[key] = child
    return Node("map", items, pos, replace=replace_tag)


def to_plain(node: Node) -> Any:
    """The data as written (for ``profiles show`` without ``--resolved``)."""
    if node.kind == "map":
        return {k: to_plain(v) for k, v in node.value.items()}
    if node.kind == "seq":
        return [to_plain(v) for v in node.value]
    return node.value
