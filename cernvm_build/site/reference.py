"""Reference pages generated from the code: the single source of truth is the code itself.

A content page asks for one with ``generate: <name>`` in its front matter; the generated Markdown is
appended to the page's own text (and is part of its cache key, so a changed help text re-renders it).
Each generator imports its area lazily: an area not written yet yields a page that says so.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

GENERATORS: dict[str, Callable[[], str]] = {}


def _generator(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def wrap(fn: Callable[[], str]) -> Callable[[], str]:
        GENERATORS[name] = fn
        return fn

    return wrap


def _missing(what: str, module: str) -> str:
    return (
        f'!!! warning "Not generated"\n    {what} comes from `{module}`, which this build of the toolkit '
        "does not contain yet.\n"
    )


def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def generate(name: str) -> str:
    fn = GENERATORS.get(name)
    if fn is None:
        raise KeyError(name)
    return fn()


# -- CLI -----------------------------------------------------------------------------------------
def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    out: list[tuple[str, str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # aliases point at the same parser
                    continue
                seen.add(id(sub))
                out.append((name, helps.get(name, ""), sub))
    return out


def _expand_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    try:
        return str(parser._get_formatter()._expand_help(action))
    except (KeyError, TypeError, ValueError):
        return action.help


def _command_md(
    path: str, parser: argparse.ArgumentParser, help_line: str, depth: int, out: list[str]
) -> None:
    level = "#" * min(depth, 4)
    out.append(f"{level} `{path}`\n")
    if help_line:
        out.append(f"{help_line.strip()}\n")
    usage = parser.format_usage().strip()
    if usage.startswith("usage: "):
        usage = usage[len("usage: ") :]
    out.append(f"```console\n$ {' '.join(usage.split())}\n```\n")
    desc = (parser.description or "").strip()
    if desc and desc != help_line.strip():
        # descriptions hold example command lines; keep their layout
        out.append(f"```text\n{desc}\n```\n")
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.metavar or action.dest}`"
        if action.option_strings and action.nargs != 0:
            names += f" `{action.metavar or action.dest.upper()}`"
        rows.append(f"| {_md_cell(names)} | {_md_cell(_expand_help(parser, action))} |")
    if rows:
        out.append("| argument | meaning |\n|---|---|\n" + "\n".join(rows) + "\n")
    for name, sub_help, sub in _subcommands(parser):
        _command_md(f"{path} {name}", sub, sub_help, depth + 1, out)


def cli_markdown(prog: str, parser: argparse.ArgumentParser) -> str:
    out: list[str] = []
    _command_md(prog, parser, "", 2, out)
    return "\n".join(out)


@_generator("cli")
def _cli() -> str:
    parts = []
    try:
        main = importlib.import_module("cernvm_build.cli.main")
        parts.append(cli_markdown("cernvm-build", main.build_parser()))
    except ModuleNotFoundError:
        parts.append(_missing("The `cernvm-build` reference", "cernvm_build.cli.main"))
    try:
        launch: Any = importlib.import_module("cernvm_build.cli.launch")
        parts.append(cli_markdown("cernvm-launch", launch.build_parser()))
    except (ModuleNotFoundError, AttributeError):
        parts.append(_missing("The `cernvm-launch` reference", "cernvm_build.cli.launch"))
    return "\n".join(parts)


# -- profiles ------------------------------------------------------------------------------------
@_generator("profile-settings")
def _profile_settings() -> str:
    try:
        ref: Any = importlib.import_module("cernvm_build.profile.reference")
        return str(ref.markdown())
    except ModuleNotFoundError:
        pass
    try:
        settings: Any = importlib.import_module("cernvm_build.profile.settings")
    except ModuleNotFoundError:
        return _missing("The profile settings table", "cernvm_build.profile.settings")
    # The settings table alone still makes a complete reference.
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for s in settings.SETTINGS:
        default = "*required*" if s.required else f"`{s.default!r}`"
        kind = getattr(s.kind, "value", s.kind)
        rows.append(f"| `{s.key}` | {_md_cell(kind)} | {_md_cell(default)} | {_md_cell(s.help)} |")
    return "\n".join(rows) + "\n"


# -- bootloader user-data -----------------------------------------------------------------------------
@_generator("userdata-keys")
def _userdata() -> str:
    try:
        ud: Any = importlib.import_module("cernvm_build.bootloader.userdata")
    except ModuleNotFoundError:
        return _missing("The list of user-data keys", "cernvm_build.bootloader.userdata")
    rows = ["| key | meaning |", "|---|---|"]
    for name, text in sorted(ud.KEYS.items()):
        rows.append(f"| `{_md_cell(name)}` | {_md_cell(text)} |")
    return "\n".join(rows) + "\n"
