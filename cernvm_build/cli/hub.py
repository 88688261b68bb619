"""``cernvm-build hub``: the DUCC-style hub of unpacked images (``hub ingest`` from registries)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..container.registry import QUERY_TIMEOUT, QUERY_TIMEOUT_FLAG
from ..cvmfs.limits import MAX_TAR_BYTES, MAX_TAR_ENTRIES
from . import areas
from .app import HelpFormatter, Output, group_handler, size, subparser, whole_number
from .container import registry_options, registry_opts
from .inputs import existing_folder

INGEST_DESCRIPTION = """\
Pull images from a registry (skopeo) and publish them unpacked into a CernVM-FS hub in DUCC's
layout: each layer (.layers/), each chain of layers (.chains/), the flat root (.flat/), the podman
additional image store (podmanStore/), the public name and its manifest. A tag may hold wildcards
(* ? [..]) matched against the registry's tags. Layers, chains and flat roots already in the hub are
not written again; an image already there writes nothing. --policy checks signatures on the way.

examples:
  cernvm-build hub ingest 127.0.0.1:5000/cernvm/demo:demo-1 --hub-stratum srv/hub --hub-keys keys/
  cernvm-build hub ingest 'registry.example/library/python:3.*' --hub-stratum srv/hub --hub-keys keys/"""


def _layer_entries(text: str) -> int:
    """``--max-layer-entries``: a count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a count of at least 1")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("hub", help=areas.HELP["hub"],
                           formatter_class=HelpFormatter)  # fmt: skip
    group.set_defaults(func=group_handler(group))
    inner = group.add_subparsers(title="commands", metavar="COMMAND")
    i = subparser(inner, "ingest", help="publish images from a registry into the hub",
                  description=INGEST_DESCRIPTION, json=True, handler=_ingest)  # fmt: skip
    i.add_argument(
        "images", nargs="+", metavar="IMAGE", help="host[:port]/repository:tag (tag may be a glob)"
    )
    i.add_argument(
        "--hub-stratum", type=existing_folder, required=True, help="local Stratum-0 folder of the hub"
    )
    i.add_argument("--hub-keys", type=existing_folder, required=True, help="folder with the hub's keys")
    i.add_argument(
        "--hub-fqrn", default="unpacked.cern.ch", help="hub repository name (default: %(default)s)"
    )
    i.add_argument(
        "--max-layer-bytes",
        type=size,  # (0 or -5 refused every layer, after its pull)
        default=MAX_TAR_BYTES,
        metavar="SIZE",
        help="refuse a layer whose tar holds more (default: 64G; a hostile 1 MB layer can inflate to 1 GB)",
    )
    i.add_argument(
        "--max-layer-entries",
        type=_layer_entries,
        default=MAX_TAR_ENTRIES,
        metavar="N",
        help="refuse a layer of more members (default: %(default)s)",
    )
    i.add_argument(
        QUERY_TIMEOUT_FLAG,
        type=whole_number(1, 86400),
        default=QUERY_TIMEOUT,
        metavar="SECONDS",
        help="time a manifest or a repository's whole tag list (every page) may take to read "
        "(default: %(default)s; a registry trickling its answers is given up on after it)",
    )
    registry_options(i)


def _ingest(args: argparse.Namespace, out: Output) -> int:
    from ..container.hub import publisher
    from ..container.ingest import ingest
    from ..cvmfs.tar_limits import TarLimits

    publish = publisher(stratum=args.hub_stratum, fqrn=args.hub_fqrn, keys_dir=args.hub_keys)
    limits = TarLimits(max_bytes=args.max_layer_bytes, max_entries=args.max_layer_entries)
    opts = dataclasses.replace(registry_opts(args), query_timeout=args.registry_timeout)
    made = ingest(args.images, publish, opts=opts, limits=limits)
    doc = {"images": [a.to_json() for a in made]}

    def render(d: dict[str, Any]) -> None:
        for a in made:
            state = "unchanged" if a.meta.get("unchanged") else f"revision {a.meta.get('revision')}"
            out.print(f"{a.meta.get('public_path')} ({state})")

    out.data(doc, render)
    return 0
