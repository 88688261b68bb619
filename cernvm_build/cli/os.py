"""``cernvm-build os``: operating-system trees for μCernVM, built from verified distribution packages."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from . import areas
from .app import Output, subparser
from .inputs import existing_file, existing_folder, profile_ref

DESCRIPTION = """\
Build an OS tree that μCernVM boots, from verified Debian packages: apt's signed InRelease (Debian
archive keyring) -> the Packages list's SHA256 -> each .deb's SHA256, installed by dpkg in a chroot
(maintainer scripts run, no service started) with the kernel's module tree in /usr/lib/modules.
Needs root. The tree is cached under the key of its inputs (packages, overlay, kernel, build time).

  cernvm-build os debian12                      build (or reuse) the tree; prints where it is
  cernvm-build os debian12 --out rootfs         ... and copy it to rootfs/, a new or empty folder
                                                (never replaced: remove an earlier copy first)
  cernvm-build cvmfs publish srv/demo.cernvm.test rootfs --keys keys/ --tag debian12

SOURCE_DATE_EPOCH (default 2026-01-01) is every file's time: same packages, same tree."""


def cmd_os(args: argparse.Namespace, out: Output) -> int:
    from ..osbuild.debian import out_folder

    # --out is checked and held before the build, which takes minutes (a second run is refused)
    with out_folder(args.out) if args.out else contextlib.nullcontext():
        return _build(args, out)


def _build(args: argparse.Namespace, out: Output) -> int:
    from ..bootloader.kernel import fetch_debian_kernel
    from ..context import env_epoch
    from ..demo.os_tree import DEFAULT_EPOCH
    from ..osbuild import aptindex
    from ..osbuild.debian import build_debian_tree, copy_tree, reading
    from ..profile import load

    prof = load(args.profile)
    if prof.os.family != "debian":
        from ..errors import UsageError

        raise UsageError(
            f"profile {prof.name} is an {prof.os.family} OS; only Debian trees can be built",
            hint="use a profile of the debian family, e.g. debian12",
        )
    kernel = None
    if prof.kernel.package and not args.no_modules:
        kernel = fetch_debian_kernel(prof.kernel.package)
    epoch = env_epoch()
    tree = build_debian_tree(
        str(prof.os.release),
        epoch=DEFAULT_EPOCH if epoch is None else epoch,
        kernel=kernel,
        offline=args.offline,
        lists=args.apt_lists or aptindex.LISTS,
        keyring=args.keyring or aptindex.KEYRING,
        say=out.info,
    )
    where = tree.root
    if args.out:
        with reading(tree.root, out.info):
            copy_tree(tree.root, args.out)
        where = args.out
    data: dict[str, Any] = {
        "profile": prof.name,
        "path": str(where),  # the key every command names what it wrote by
        "tree": str(where),  # (the same, its former name: until 2027)
        "key": tree.key,
        "reused": tree.reused,
        "kernel_modules": tree.kernel_version,
        "packages": [{"name": p.name, "version": p.version, "sha256": p.sha256} for p in tree.packages],
    }

    def render(_: Any) -> None:
        state = "reused" if tree.reused else "built"
        out.print(f"{prof.name}: {len(tree.packages)} packages, {state}: {where}", markup=False)

    out.data(data, render)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparser(
        sub,
        "os",
        help=areas.HELP["os"],
        description=DESCRIPTION,
        json=True,
        handler=cmd_os,
    )
    p.add_argument(
        "profile", metavar="PROFILE", type=profile_ref, help="a profile of the debian family (debian12)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="copy the tree to this new (or empty) folder; an existing copy is never replaced",
    )
    p.add_argument("--offline", action="store_true", help="use only packages already in the cache")
    p.add_argument("--no-modules", action="store_true", help="leave the kernel's modules out")
    p.add_argument(
        "--apt-lists", type=existing_folder, metavar="DIR", help="apt's lists (default /var/lib/apt/lists)"
    )
    p.add_argument(
        "--keyring", type=existing_file, metavar="FILE", help="the archive keyring (default Debian's)"
    )
