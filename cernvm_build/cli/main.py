"""``cernvm-build``: build, verify and publish the CernVM platform."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from .. import __version__
from .app import EXIT_CODES_EPILOG, ArgumentParser, HelpFormatter, run

#: Command areas, in the order ``--help`` lists them. Each is ``cernvm_build.cli.<name>``.
AREAS = ["profiles", "cvmfs", "image", "container", "site", "mirror", "release", "demo"]

DESCRIPTION = """\
Build the CernVM platform from declarative profiles:

  cernvm-build profiles list                 the platforms this toolkit knows (EL4-EL9, demo)
  cernvm-build cvmfs publish REPO DIR        publish a tree into a CernVM-FS repository
  cernvm-build image el9                     μCernVM boot images (iso, hdd, qcow2, ...)
  cernvm-build container el6 --format oci    reference containers from CernVM-FS
  cernvm-build site build                    the cvmfs.io static site
  cernvm-build mirror yum SRC s3://b/p       verified, incremental package mirrors on S3
  cernvm-build release 2026.11-1             all of it, for one release
  cernvm-build demo                          the whole flow on a local demo repository

Every command has --help; data-producing commands take --json."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="cernvm-build",
        description=DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for area in AREAS:
        try:
            module = importlib.import_module(f"{__package__}.{area}")
        except ModuleNotFoundError as e:
            # An area not written yet is simply absent; a missing dependency inside one is a bug.
            if e.name != f"{__package__}.{area}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
