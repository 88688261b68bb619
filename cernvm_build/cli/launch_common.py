"""What the ``cernvm-launch`` commands share: questions, settings from flags and files, the host."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import launch
from ..errors import UsageError
from ..launch import config
from . import flags
from .app import HelpFormatter, Output, add_common

# a string: launch.Host would load the host module (libvirt) when the CLI is imported, for --help too
Connect = Callable[[str | None], "launch.Host"]


def ask(question: str, flag: str, default: str = "") -> str:
    """Ask on a terminal; elsewhere fail, naming the flag that answers."""
    if not sys.stdin.isatty():
        raise UsageError(f"cannot ask {question.strip()!r}: stdin is not a terminal", hint=f"pass {flag}")
    answer = input(question).strip()
    return answer or default


def settings_of(args: argparse.Namespace, *keys: str) -> config.Settings:
    """The settings after precedence: the flags of ``keys`` given > config files > defaults.

    Flag values go through the settings table, so a bad one fails here, before libvirt is contacted.
    """
    cli = config.from_flags(flags.given(args, [config.BY_KEY[k] for k in keys]))
    cli["connect"] = getattr(args, "connect", None)
    create_file = getattr(args, "configuration_file", None)
    return config.resolve(cli, Path(create_file) if create_file else None)


def host_of(args: argparse.Namespace, settings: config.Settings | None = None) -> launch.Host:
    """The libvirt host: --connect, else the config files' ``connect=``, else the default URI."""
    connect: Connect = args.open_host
    return connect((settings or settings_of(args)).connect)


def leaf(sub: Any, name: str, help: str, description: str, handler: Any, *, json: bool = False) -> Any:
    p = sub.add_parser(name, help=help, description=description, formatter_class=HelpFormatter)
    add_common(p, json=json)
    p.add_argument("--connect", metavar="URI", default=argparse.SUPPRESS, help="libvirt URI (see --help)")
    p.set_defaults(func=handler)
    return p


def show_help(parser: argparse.ArgumentParser, code: int) -> Any:
    def show(args: argparse.Namespace, out: Output) -> int:
        parser.print_help(sys.stderr if code else sys.stdout)
        return code

    return show
