"""``cernvm-launch images``: the boot image cache (list, add, pull, remove)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import launch
from ..errors import UsageError
from ..launch.images import ImageCache
from .app import HelpFormatter, Output
from .launch_common import host_of, leaf, settings_of, show_help


def _cache(args: argparse.Namespace) -> ImageCache:
    s = settings_of(args)
    return launch.image_cache(s, launch.default_uri(s.connect))


def cmd_images_list(args: argparse.Namespace, out: Output) -> int:
    found = _cache(args).list()

    def render(rows: list[dict[str, Any]]) -> None:
        out.table(
            ["name", "format", "size", "profile", "sha256"],
            [
                [r["name"], r["format"], f"{r['size'] / 1e6:.1f} MB", r["profile"], r["sha256"][:16]]
                for r in rows
            ],
        )

    out.data([i.to_json() for i in found], render)
    return 0


def cmd_images_add(args: argparse.Namespace, out: Output) -> int:
    img = _cache(args).add(Path(args.path), profile=args.profile or "", name=args.as_name)
    out.info(f"added {img.name} ({img.format}, sha256 {img.sha256[:16]}…)")
    out.data(img.to_json(), lambda d: None)
    return 0


def cmd_images_pull(args: argparse.Namespace, out: Output) -> int:
    with out.progress(transfer=True) as bar:
        task = bar.add_task(Path(args.url).name, total=None)
        img = _cache(args).pull(
            args.url, profile=args.profile or "", progress=lambda d, t: bar.update(task, completed=d, total=t)
        )
    out.info(f"pulled {img.name} ({img.format}, sha256 verified)")
    out.data(img.to_json(), lambda d: None)
    return 0


def cmd_images_remove(args: argparse.Namespace, out: Output) -> int:
    s = settings_of(args)
    host = host_of(args, s)
    launch.remove_image(host, launch.image_cache(s, host.uri), args.name)
    out.info(f"removed {args.name}")
    return 0


def register(sub: Any) -> None:
    img = sub.add_parser(
        "images",
        help="boot images: list, add, pull, remove",
        formatter_class=HelpFormatter,
        description="The image cache in launchHomeFolder/images; every image is kept with "
        "its verified sha256.\n\n  cernvm-launch images add ucernvm-demo...iso --profile demo\n"
        "  cernvm-launch images pull https://example.org/ucernvm-prod...iso",
    )
    img.set_defaults(func=show_help(img, UsageError.exit_code))
    isub = img.add_subparsers(title="image operations", metavar="COMMAND")
    leaf(isub, "list", "cached images", "List cached images.", cmd_images_list, json=True)
    p = leaf(
        isub,
        "add",
        "add a local image (verified against its .sha256)",
        "Copy a local image into the cache; a .sha256 beside it is checked.",
        cmd_images_add,
        json=True,
    )
    p.add_argument("path", metavar="FILE")
    p.add_argument("--profile", metavar="NAME", help="the profile it was built from")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="name in the cache (default: file name)")
    p = leaf(
        isub,
        "pull",
        "download an image and its .sha256",
        "Download URL and URL.sha256; keep the image only if they match.",
        cmd_images_pull,
        json=True,
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("--profile", metavar="NAME")
    p = leaf(isub, "remove", "remove a cached image", "Remove a cached image.", cmd_images_remove)
    p.add_argument("name", metavar="NAME")
