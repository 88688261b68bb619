"""``cernvm-build``: build, verify and publish the CernVM platform."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from .. import __version__
from . import areas, extras
from .app import (
    EXIT_CODES_EPILOG,
    ArgumentParser,
    HelpFormatter,
    Output,
    asks_json,
    run,
    standard_streams,
    stopped_early,
)

#: Command areas, in the order ``--help`` lists them. Each is ``cernvm_build.cli.<name>``.
AREAS = list(areas.HELP)
#: Areas that need a pip extra as a whole; any other command names its extra when it first needs one.
#: (``image`` reads launch's settings table, which imports without the 'launch' extra: images build
#: without libvirt; tests/packaging/test_extras.py checks it.)
AREA_EXTRAS = {"site": "site", "mirror": "mirror"}

DESCRIPTION = """\
Build the CernVM platform from declarative profiles:

  cernvm-build profiles list                 the platforms this toolkit knows (EL4-EL9, Debian 12, demo)
  cernvm-build cvmfs publish REPO DIR        publish a tree into a CernVM-FS repository
  cernvm-build os debian12                   a Debian OS tree from verified packages
  cernvm-build image el9                     μCernVM boot images (iso, hdd, qcow2, ...)
  cernvm-build container el6 --format oci    reference containers from CernVM-FS
  cernvm-build hub ingest HOST/REPO:TAG      images from a registry, unpacked into a hub (DUCC)
  cernvm-build site build                    the cvmfs.io static site
  cernvm-build mirror yum SRC s3://b/p       verified, incremental package mirrors on S3
  cernvm-build release 2026.11-1             all of it, for one release
  cernvm-build demo                          the whole flow on a local demo repository

Every command has --help; data-producing commands take --json."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``cernvm-build`` parser; with a command line, only the area it runs is imported.

    Every area module imports its libraries at the top, and all of them cost ~0.8 CPU-s, more than a
    one-page site rebuild; so for ``argv`` the other areas are left out when it names an area, and get
    a stand-in parser with their help line when it names none (``--help`` still lists them all).
    Without ``argv`` (the CLI reference, tests) every area is loaded.
    """
    wanted = None if argv is None else _area_of(argv)
    parser = ArgumentParser(
        prog="cernvm-build",
        description=DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for area in AREAS:
        if argv is not None and area != wanted and wanted in areas.HELP:
            # The command line runs another area: this one is neither parsed nor listed (a parser
            # each, ~0.2 ms of argparse and gettext look-ups, 13 of them in every command's start).
            continue
        extra = AREA_EXTRAS.get(area)
        if extra and extras.missing_module(extra):
            _register_missing(sub, area, extra)
            continue
        if argv is not None and area != wanted:
            # Never parsed, only listed: the command line names no area (--help, --version) or a
            # word that is none (its error lists them all).
            sub.add_parser(area, help=areas.HELP[area], add_help=False)
            continue
        try:
            module = importlib.import_module(f"{__package__}.{area}")
        except ImportError as e:
            # A command module that imports its area's optional modules at the top: same answer.
            needed = extras.extra_for(e.name or "", prefer=area)
            if needed is None:
                raise
            _register_missing(sub, area, needed)
            continue
        module.register(sub)
    return parser


def _area_of(argv: Sequence[str]) -> str | None:
    """The area a command line runs: its first word that is not an option (the top level's options,
    --help and --version, take no value); None when --help comes first (it lists every area)."""
    for word in argv:
        if word == "-h" or (len(word) > 2 and "--help".startswith(word)):  # argparse takes --he, --hel
            return None
        if not word.startswith("-"):
            return word
    return None


def _register_missing(sub: argparse._SubParsersAction[ArgumentParser], area: str, extra: str) -> None:
    """``cernvm-build AREA ...`` (even ``--help``) says which extra to install, in one line."""
    command = f"cernvm-build {area}"
    # prefix_chars no argument starts with: every word after the area, options too, lands in `words`.
    p = sub.add_parser(
        area,
        help=f"(not installed: pip install '{extras.DISTRIBUTION}[{extra}]')",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("words", nargs="*")

    def fail(args: argparse.Namespace, out: Output) -> int:
        out.json_mode = asks_json(args.words)  # its flags are not parsed: --json is one of the words
        raise extras.error(command, extra)

    p.set_defaults(func=fail, command_name=command)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        standard_streams()
    words = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser(words)  # imports the area's modules: most of a command's start
    except KeyboardInterrupt:
        return stopped_early(words)
    # argv None: the process's own command line (the entry point), which a command may end at once
    return run(parser, words, own_process=argv is None)


def launch_main(argv: Sequence[str] | None = None) -> int:
    """``cernvm-launch``: the whole command needs the 'launch' extra (libvirt-python, paramiko)."""
    if argv is None:
        standard_streams()
    words = sys.argv[1:] if argv is None else list(argv)
    if extras.missing_module("launch"):
        if words in (["--version"], ["-v"]):  # what is installed is worth knowing before installing more
            sys.stdout.write(f"cernvm-launch {__version__}\n")
            return 0
        err = extras.error("cernvm-launch", "launch")
        Output(json_mode=asks_json(words)).error(err)
        return err.exit_code
    # Imported here, not at the top: without the extra this module could not even be loaded.
    try:
        launch: Any = importlib.import_module(f"{__package__}.launch")
    except KeyboardInterrupt:
        return stopped_early(words)
    return int(launch.main(argv))


if __name__ == "__main__":
    raise SystemExit(main())
