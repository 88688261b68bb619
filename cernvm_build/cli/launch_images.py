"""``cernvm-launch images``: the boot image cache (list, add, pull, remove)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import launch
from ..errors import UsageError
from ..launch import catalog
from .app import HelpFormatter, Output
from .inputs import present
from .launch_common import host_of, leaf, settings_of, show_help

if TYPE_CHECKING:
    from ..launch.images import ImageCache

_URLISH = re.compile(r"[:/]")


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
    img = _cache(args).add(
        Path(args.path),
        profile=args.profile or "",
        name=args.as_name,
        waiting=lambda holder: out.info(f"waiting for {holder} to finish"),
    )
    out.info(f"added {img.name} ({img.format}, sha256 {img.sha256[:16]}…)")
    out.data(img.to_json(), lambda d: None)
    return 0


def cmd_images_pull(args: argparse.Namespace, out: Output) -> int:
    """A URL is pulled with its .sha256; a name (``el9``, ``demo``) is looked up in the release indexes."""
    s = settings_of(args)
    url, sha256, size, profile, how = args.url, None, None, args.profile or "", "sha256 verified"
    if not _URLISH.search(args.url):  # a name: el9, demo, ucernvm-prod...iso
        indexes = args.index or list(s.image_indexes)
        keys = [Path(k) for k in (args.key or s.release_keys)]
        found = catalog.find(args.url, indexes, keys, fmt=args.format)
        url, sha256, size, profile = found.url, found.sha256, found.size or None, profile or found.profile
        how = f"release {found.release}, signed by {found.signed.signer[-16:]}, sha256 verified"
        out.detail(f"{args.url}: {found.name} from {url}")
        if warning := found.signed.expiry_warning(found.release):
            out.warn(warning)
    with out.progress(transfer=True) as bar:
        task = bar.add_task(Path(url).name, total=None)
        img = launch.image_cache(s, launch.default_uri(s.connect)).pull(
            url,
            profile=profile,
            sha256=sha256,
            size=size,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
            waiting=lambda holder: out.info(f"waiting for {holder} to finish"),
        )
    out.info(f"pulled {img.name} ({img.format}, {how})")
    out.data(img.to_json(), lambda d: None)
    return 0


def cmd_images_remove(args: argparse.Namespace, out: Output) -> int:
    s = settings_of(args)
    host = host_of(args, s)
    launch.remove_image(host, launch.image_cache(s, host.uri), args.name, pool=s.storage_pool)
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
    p.add_argument("path", type=present, metavar="FILE")
    p.add_argument("--profile", metavar="NAME", help="the profile it was built from")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="name in the cache (default: file name)")
    p = leaf(
        isub,
        "pull",
        "download an image by URL (with its .sha256) or by name from a release index",
        "Download URL and URL.sha256 and keep the image only if they match; or look NAME (a\n"
        "profile such as el9, or an image file name) up in the release indexes (imageIndexes, or\n"
        "--index), check the release's signed SHA256SUMS with releaseKeys (or --key), and pull it.\n"
        "Of a release's images, the hdd one (a read-only virtio disk: under TCG its boot loader\n"
        "reads the kernel faster than from the iso's emulated CD-ROM), else the iso, else qcow2;\n"
        "--format picks one.\n\n"
        "  cernvm-launch images pull el9\n"
        "  cernvm-launch images pull demo --index http://127.0.0.1:8000/2026.11-1/index.json --key k.asc",
        cmd_images_pull,
        json=True,
    )
    p.add_argument("url", metavar="URL|NAME")
    p.add_argument(
        "--profile", metavar="NAME", help="record the image as built from this profile (a pull by URL)"
    )
    p.add_argument("--index", action="append", metavar="URL", help="a release index.json (repeatable)")
    p.add_argument(
        "--key", action="append", type=present, metavar="FILE", help="a release signing key (repeatable)"
    )
    p.add_argument(
        "--format",
        choices=catalog.FORMATS,
        help="which image of the release (default: hdd, else iso, else qcow2)",
    )
    p = leaf(isub, "remove", "remove a cached image", "Remove a cached image.", cmd_images_remove)
    p.add_argument("name", metavar="NAME")
