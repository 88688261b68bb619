"""Fetch, once, the Debian packages the builds and tests use, so the test suite itself stays offline.

``make deps`` runs ``python -m cernvm_build.prefetch``: the demo OS and Debian 12 tree packages
(``$CERNVM_CACHE_DIR/debs``)
and the kernel the shipped profiles name (``$CERNVM_CACHE_DIR/kernel``, unpacked), each verified against
apt's index; as root also the Debian 12 tree (``osbuild.debian``, minutes). Later builds and the
tests find them there and touch no network.
"""

from __future__ import annotations

import os
import sys

from . import debpkg
from .bootloader.kernel import fetch_debian_kernel
from .demo.os_tree import DEFAULT_EPOCH
from .demo.os_tree import PACKAGES as DEMO_PACKAGES
from .errors import CernVMError
from .osbuild.debian import build_debian_tree, fetch_packages, select_packages
from .paths import cache_dir

KERNELS = ("linux-image-cloud-amd64",)


def main() -> int:
    cache = cache_dir("debs")
    try:
        for pkg in debpkg.fetch_many(list(DEMO_PACKAGES), cache):
            print(f"prefetch: {pkg.name} {pkg.version} sha256:{pkg.sha256[:16]}…", file=sys.stderr)
        debian = fetch_packages(select_packages("12"), cache)
        print(f"prefetch: debian12 tree: {len(debian)} packages", file=sys.stderr)
        for name in KERNELS:
            kernel = fetch_debian_kernel(name)
            print(
                f"prefetch: {kernel.package} {kernel.package_version} (kernel {kernel.version})",
                file=sys.stderr,
            )
        if os.geteuid() == 0:  # the tree the tests and `demo --os debian12` use (minutes, once)
            _debian_tree()
    except CernVMError as e:
        print(f"prefetch: error: {e}" + (f" (hint: {e.hint})" if e.hint else ""), file=sys.stderr)
        return e.exit_code
    return 0


def _debian_tree() -> None:
    """Build (or reuse) the Debian 12 tree. A failure here is a warning, not the set-up's end: only
    the Debian tree's own tests need it, and they build it themselves and say what failed."""
    try:
        tree = build_debian_tree("12", epoch=DEFAULT_EPOCH, kernel=fetch_debian_kernel(KERNELS[0]))
    except CernVMError as e:
        print(f"prefetch: warning: debian12 tree not built: {e}" + (f" (hint: {e.hint})" if e.hint else ""),
              file=sys.stderr)  # fmt: skip
        return
    print(f"prefetch: debian12 tree {'reused' if tree.reused else 'built'}: {tree.root}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
