"""The SOURCE options every ``cernvm-build cvmfs`` reading command shares, and opening the repository
they name (keys found by ``cvmfs.trust``, the snapshot from --tag/--date/--root-hash)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cvmfs import blacklist as blacklist_mod
from ..cvmfs.repository import Repository, SnapshotSpec, open_repository
from ..cvmfs.trust import keys_to_verify
from .app import retries, seconds
from .inputs import existing_file

KEYS_HELP = """master public key (repeatable). Default: for a local SOURCE dir, <fqrn>.pub or *.pub in
<dir>/../keys/ (the fixture layout), <dir>/keys/, or <dir>/..; else $CVMFS_KEYS_DIR/<fqrn>.pub and
/etc/cvmfs/keys/<fqrn>.pub"""

BLACKLIST_HELP = """certificate blacklist (repeatable, the files add up): fingerprints of revoked certificates
and '<REPOSITORY N' revision floors, as the real client reads (CVMFS_BLACKLIST). Default:
/etc/cvmfs/blacklist when it exists"""


def add_blacklist(g: argparse._ActionsContainer) -> None:
    g.add_argument(
        "--blacklist", action="append", default=[], type=existing_file, metavar="FILE", help=BLACKLIST_HELP
    )


def blacklist_from_args(args: argparse.Namespace) -> blacklist_mod.Blacklist:
    """The blacklist ``--blacklist`` names, else the system's (read now: a bad file is one line
    before anything is fetched)."""
    return blacklist_mod.resolve(args.blacklist)


def add_source(p: argparse.ArgumentParser, *, snapshot: bool = True) -> None:
    p.add_argument("source", metavar="SOURCE", help="Stratum URL or local Stratum directory")
    g = p.add_argument_group("repository")
    g.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="URL",
        help="extra URL for fail-over (@fqrn@ in a URL stands for the repository name)",
    )
    g.add_argument("--key", action="append", default=[], type=existing_file, metavar="PATH", help=KEYS_HELP)
    add_blacklist(g)
    g.add_argument("--fqrn", help="repository name (default: from the URL or the directory name)")
    g.add_argument(
        "--cache", type=Path, metavar="DIR", help="object cache (default: none, fetch into memory)"
    )
    g.add_argument("--proxy", metavar="P", help="HTTP proxy URL(s), '|'/';' separated; DIRECT for none")
    g.add_argument("--timeout", type=seconds, default=10.0, help="HTTP timeout in seconds (default: 10)")
    g.add_argument("--retries", type=retries, default=2, help="retries per server (default: 2)")
    g.add_argument(
        "--no-verify", action="store_true", help="skip the signature chain (object hashes are always checked)"
    )
    if snapshot:
        s = p.add_argument_group("snapshot (default: trunk)").add_mutually_exclusive_group()
        s.add_argument("--tag", help="a named tag")
        s.add_argument("--date", help="newest tag at or before YYYY-MM-DDTHH:MM:SSZ")
        s.add_argument("--root-hash", help="exactly this root catalog hash")


def open_from_args(args: argparse.Namespace, snapshot: SnapshotSpec | None = None) -> Repository:
    sources = [args.source, *args.server]
    verify = not args.no_verify
    keys = keys_to_verify(args.source, args.fqrn, args.key, verify=verify)
    if snapshot is None:
        snapshot = SnapshotSpec(
            tag=getattr(args, "tag", None),
            date=getattr(args, "date", None),
            root_hash=getattr(args, "root_hash", None),
        )
    return open_repository(
        sources[0] if len(sources) == 1 else sources,
        fqrn=args.fqrn,
        public_keys=keys,
        cache_dir=args.cache,
        proxy=args.proxy,
        snapshot=snapshot,
        verify=verify,
        timeout=args.timeout,
        retries=args.retries,
        blacklist=blacklist_from_args(args),
    )
