"""Where the toolkit finds its data and keeps its caches.

The data the toolkit ships (profiles, init fragments and boot menus, launch templates, the cvmfs.io
site, the demo OS overlay) lives inside the package under ``cernvm_build/data/<area>`` and is found with
``importlib.resources``, so a checkout, an editable install and a wheel read the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The areas under ``cernvm_build/data/``.
DATA_AREAS = ("profiles", "bootloader", "launch", "site", "demo", "os")


def package_dir() -> Path:
    """The directory of the ``cernvm_build`` package (the initrd copies its modules from here)."""
    return Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped data of one area: ``profiles``, ``bootloader``, ``launch``, ``site`` or ``demo``."""
    if name not in DATA_AREAS:
        raise ValueError(f"unknown data area {name!r} (one of {', '.join(DATA_AREAS)})")
    from importlib import resources  # here: most commands are given their data's folder (--site …)

    root = resources.files("cernvm_build").joinpath("data", name)
    # Builders copy trees and hand directories to jinja2 and cpio, so the data must be real files.
    # Wheels are always unpacked; only a zipped install (zipimport) would land here.
    if not isinstance(root, Path):
        raise RuntimeError(f"cernvm_build is installed as a zip ({root}); install it unpacked (pip/pipx do)")
    return root


def cache_dir(*parts: str) -> Path:
    """The cache root: ``$CERNVM_CACHE_DIR``, else ``$XDG_CACHE_HOME/cernvm-build``."""
    root = os.environ.get("CERNVM_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(xdg):
            # the XDG base directory spec: a relative one is invalid and ignored (it was used, and
            # the cache landed in ./rel/cernvm-build of whatever folder the command ran in)
            xdg = str(Path.home() / ".cache")
        base = Path(xdg) / "cernvm-build"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
