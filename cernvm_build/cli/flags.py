"""Command-line flags generated from a settings table (``cernvm_build.table``).

A setting with a ``flag`` becomes an argparse option whose help, metavar and choices come from the
table. argparse keeps the text as typed: the value is converted by the table, like a value from a
file, so a bad ``--memory`` gets the same message as a bad ``memory=`` line, naming the flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from ..table import Kind, Setting, allowed_text, render


def dest(s: Setting) -> str:
    """The argparse attribute of a setting's flag."""
    return s.name


def _help(s: Setting) -> str:
    parts = [s.help.rstrip(".")]
    if not s.required and s.default not in (None, [], {}, ""):
        parts.append(f"default: {render(s, s.default)}")
    allowed = allowed_text(s, files=False).replace("`", "")
    if s.kind.is_list and s.example and s.example.startswith("[") and s.example.endswith("]"):
        # a flag takes one item at a time (repeatable): the file's YAML list '[URL]' is no example of
        # it, and where the pattern's words show the item already, a second e.g. only repeats it
        item = s.example[1:-1]
        shown = "" if f"e.g. {item}" in allowed else f"; e.g. {item}"
        allowed = allowed.replace(f"; e.g. {s.example}", shown)
    if allowed:
        parts.append(allowed)
    if s.kind.is_list:
        parts.append("repeatable")
    return "; ".join(parts).replace("%", "%%")


def _metavar(s: Setting) -> str:
    if s.metavar:
        return s.metavar
    if s.choices:
        return "{" + ",".join(s.choices) + "}"
    return {Kind.SIZE: "SIZE", Kind.DURATION: "SECONDS", Kind.BOOL: "on|off"}.get(s.kind.item, "VALUE")


def add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings: Iterable[Setting]) -> None:
    """An option for each setting that has a flag (lists are repeatable)."""
    for s in settings:
        if s.flag is None:
            continue
        parser.add_argument(
            s.flag,
            dest=dest(s),
            metavar=_metavar(s),
            action="append" if s.kind.is_list else "store",
            default=None,
            help=_help(s),
        )


def given(args: argparse.Namespace, settings: Iterable[Setting]) -> list[tuple[Setting, str | list[str]]]:
    """The settings given on the command line, with their text as typed."""
    out: list[tuple[Setting, str | list[str]]] = []
    for s in settings:
        if s.flag is not None:
            value = getattr(args, dest(s), None)
            if value is not None:
                out.append((s, value))
    return out
