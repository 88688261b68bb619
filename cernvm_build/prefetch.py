"""Fetch, once, the Debian packages the builds and tests use, so the test suite itself stays offline.

``make deps`` runs ``python -m cernvm_build.prefetch``: the demo OS packages and the kernel packages the
shipped profiles name go into the package cache (``$CERNVM_CACHE_DIR/debs``), verified against apt's
index. Later builds find them there and touch no network.
"""

from __future__ import annotations

import sys

from . import debpkg
from .demo.os_tree import PACKAGES as DEMO_PACKAGES
from .errors import CernVMError
from .paths import cache_dir

KERNELS = ("linux-image-cloud-amd64",)


def main() -> int:
    cache = cache_dir("debs")
    try:
        specs = [*DEMO_PACKAGES, *(debpkg.kernel_package(k) for k in KERNELS)]
        for pkg in debpkg.fetch_many(specs, cache):
            print(f"prefetch: {pkg.name} {pkg.version} sha256:{pkg.sha256[:16]}…", file=sys.stderr)
    except CernVMError as e:
        print(f"prefetch: error: {e}" + (f" (hint: {e.hint})" if e.hint else ""), file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
