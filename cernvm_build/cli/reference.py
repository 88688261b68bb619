"""The command-line reference for the site, walked from the real parsers (``generate: cli``).

It lives with the CLI because it reads the CLI: the site builder only knows generators it is handed
(``site.reference.GENERATORS`` plus these), so ``site`` never imports ``cli``, which imports ``site``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

from .. import paths
from ..fsutil import atomic_write, read_capped
from ..site import reference as site_reference
from ..site.reference import md_text
from . import extras
from . import main as main_cli


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
        out.append(f"{md_text(help_line.strip())}\n")
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
        rows.append(f"| {md_text(names)} | {md_text(_expand_help(parser, action))} |")
    if rows:
        out.append("| argument | meaning |\n|---|---|\n" + "\n".join(rows) + "\n")
    for name, sub_help, sub in _subcommands(parser):
        _command_md(f"{path} {name}", sub, sub_help, depth + 1, out)


def cli_markdown(prog: str, parser: argparse.ArgumentParser) -> str:
    out: list[str] = []
    _command_md(prog, parser, "", 2, out)
    return "\n".join(out)


def markdown() -> str:
    """Both entry points, ``cernvm-build`` and ``cernvm-launch``."""
    parts = [cli_markdown("cernvm-build", main_cli.build_parser())]
    try:
        # deliberate lazy import: cernvm-launch needs libvirt-python (the 'launch' extra)
        from . import launch as launch_cli
    except ImportError as e:
        # The heading stays, so links to #cernvm-launch resolve in a site built without the extra.
        parts.append(
            "## `cernvm-launch`\n\n"
            f'!!! warning "Not generated"\n    The `cernvm-launch` reference needs {e.name}: '
            "install the toolkit with its 'launch' extra.\n"
        )
    else:
        parts.append(cli_markdown("cernvm-launch", launch_cli.build_parser()))
    return "\n".join(parts)


@functools.cache
def code_key() -> str:
    """What every generated page depends on: the toolkit's code, Python (argparse's layout) and which
    extras are installed (an area without its extra is listed as not installed)."""
    h = hashlib.sha256(sys.version.encode())
    h.update(repr([extras.missing_module(extra) for extra in sorted(extras.EXTRAS)]).encode())
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:32]


#: the largest kept reference read back (the CLI's is ~0.2 MB): past it, generated again
MAX_KEPT = 16 << 20


def cached(name: str, generate: Callable[[], str]) -> Callable[[], str]:
    """``generate`` whose text is kept per ``code_key()``: the CLI reference imports every area (with
    paramiko, libvirt...), ~0.8 CPU-s that a site build would otherwise pay even when nothing changed.
    Hashing the code (~2 MB) costs ~10 ms."""

    def run() -> str:
        folder = paths.cache_dir("reference")
        path = folder / f"{name}-{code_key()}.md"
        try:
            text = read_capped(path, MAX_KEPT).decode("utf-8")
        except (OSError, UnicodeDecodeError):  # absent, or damaged (not UTF-8, a folder, a FIFO: hung)
            text = ""
        if text:  # (an empty one is damage too: no generator writes nothing)
            return text
        text = generate()
        try:
            for old in folder.glob(
                name + "-" + "?" * 32 + ".md"
            ):  # other versions of the code: never read again
                old.unlink(missing_ok=True)
            atomic_write(path, text.encode("utf-8"), durable=False)
        except OSError:
            pass  # a cache that cannot be written only costs the next build the time it saved
        return text

    return run


#: Every reference page the site can generate: the site's own and the CLI's.
GENERATORS: dict[str, Callable[[], str]] = {
    name: cached(name, generate) for name, generate in {**site_reference.GENERATORS, "cli": markdown}.items()
}
