"""The kernel that boots the image: a Debian kernel package fetched with apt, or a given vmlinuz tree.

A Debian package is downloaded once into the cache, checked against the SHA256 that apt's signed
index holds (``apt-cache show``) and unpacked with ``dpkg-deb -x``; later builds reuse the unpacked
tree. A metapackage (``linux-image-cloud-amd64``) is resolved to the versioned package it depends on,
so the manifest names the exact kernel that went in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import debpkg, jsonable
from ..errors import BuildError, ToolError
from ..fsutil import atomic_dir, held_lock, reclaim_stale_in, sha256_file
from ..paths import cache_dir


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to go into an image."""

    vmlinuz: Path
    modules: Path  # the lib/modules/<version> folder
    version: str  # uname -r
    origin: str  # "debian" or "tree"
    package: str | None = None
    package_version: str | None = None
    sha256: str | None = None  # of the .deb, or of vmlinuz for a given tree

    def to_json(self) -> dict[str, Any]:
        # local paths say nothing about the kernel: its content hash does
        return jsonable.to_json(self, omit=("vmlinuz", "modules"), vmlinuz_sha256=sha256_file(self.vmlinuz))


def _wait(holder: str) -> None:
    """(another build extracts the same kernel: this one waits for it, and uses its tree)"""


def fetch_debian_kernel(package: str, cache: Path | None = None) -> Kernel:
    """The Debian kernel ``package`` from the cache, fetched and verified on first use (``debpkg``)."""
    root = cache or cache_dir("kernel")
    try:
        deb = debpkg.fetch(debpkg.kernel_package(package), root)
    except ToolError as e:
        raise BuildError(
            f"cannot download kernel package {package}: {e.message}",
            hint="check the network to the Debian mirror (run make deps), or give a vmlinuz + modules tree",
        ) from e
    tree = root / f"{deb.name}_{deb.version}".replace(":", "%3a")
    stamp = tree / ".sha256"

    def extracted() -> bool:
        return stamp.exists() and stamp.read_text().strip() == deb.sha256

    if not extracted():
        # one extraction at a time, checked again once held: two builds on a cold cache both
        # extracted, and the second's swap took the first's tree from under its reads for a moment
        # (three at once collided on the swap's '.old' name)
        with held_lock(root / f".{tree.name}.lock", f"extraction of {deb.name}", _wait, remove=True):
            if not extracted():
                with atomic_dir(tree) as tmp:
                    debpkg.extract(deb, tmp)
                    (tmp / ".sha256").write_text(deb.sha256 + "\n")
        reclaim_stale_in(root)  # killed extractions of earlier kernels: no run reclaims them
    kernel = kernel_from_tree(tree)
    return Kernel(
        vmlinuz=kernel.vmlinuz,
        modules=kernel.modules,
        version=kernel.version,
        origin="debian",
        package=deb.name,
        package_version=deb.version,
        sha256=deb.sha256,
    )


def kernel_from_tree(root: Path, vmlinuz: Path | None = None) -> Kernel:
    """A kernel from an unpacked tree: ``boot/vmlinuz-<v>`` and ``lib/modules/<v>/`` below ``root``."""
    mods_root = root / "lib" / "modules"
    if not mods_root.is_dir() and (root / "usr" / "lib" / "modules").is_dir():
        mods_root = root / "usr" / "lib" / "modules"
    versions = sorted(p.name for p in mods_root.iterdir() if p.is_dir()) if mods_root.is_dir() else []
    if (root / "modules.builtin").exists() or (root / "kernel").is_dir():
        mods, version = root, root.name
    elif len(versions) == 1:
        mods, version = mods_root / versions[0], versions[0]
    else:
        raise BuildError(
            f"{root}: expected exactly one lib/modules/<version> folder, found {len(versions)}",
            hint="give the modules folder that holds modules.dep",
        )
    if not (mods / "kernel").is_dir():
        raise BuildError(f"{mods}: no kernel/ folder of modules", hint="give a lib/modules/<version> folder")
    if vmlinuz is None:
        vmlinuz = root / "boot" / f"vmlinuz-{version}"
    if not vmlinuz.is_file():
        raise BuildError(f"{vmlinuz}: kernel image not found", hint="pass the vmlinuz file explicitly")
    return Kernel(
        vmlinuz=vmlinuz,
        modules=mods,
        version=version,
        origin="tree",
        sha256=sha256_file(vmlinuz),
    )
