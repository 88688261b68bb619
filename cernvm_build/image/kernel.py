"""The kernel that boots the image: a Debian kernel package fetched with apt, or a given vmlinuz tree.

A Debian package is downloaded once into the cache, checked against the SHA256 that apt's signed
index holds (``apt-cache show``) and unpacked with ``dpkg-deb -x``; later builds reuse the unpacked
tree. A metapackage (``linux-image-cloud-amd64``) is resolved to the versioned package it depends on,
so the manifest names the exact kernel that went in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError, IntegrityError, ToolError
from ..fsutil import atomic_dir, atomic_write, sha256_file
from ..paths import cache_dir
from ..proc import run


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

    def to_json(self) -> dict[str, str | None]:
        return {
            "origin": self.origin,
            "version": self.version,
            "package": self.package,
            "package_version": self.package_version,
            "sha256": self.sha256,
            "vmlinuz_sha256": sha256_file(self.vmlinuz),
        }


@dataclass(frozen=True)
class AptRecord:
    package: str
    version: str
    sha256: str
    size: int
    depends: str


def apt_record(package: str) -> AptRecord:
    """The candidate version of ``package`` as apt knows it (signed index), or a BuildError."""
    proc = run(["apt-cache", "show", "--no-all-versions", package], check=False)
    text = proc.stdout.decode(errors="replace")
    if proc.returncode != 0 or not text.strip():
        raise BuildError(
            f"kernel package '{package}' is not known to apt",
            hint="check the profile's kernel.package (e.g. linux-image-cloud-amd64) and run 'apt-get update'",
            where="kernel.package",
        )
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9-]+):\s*(.*)$", line)
        if m and m.group(1) not in fields:
            fields[m.group(1)] = m.group(2)
    if "SHA256" not in fields and "Depends" not in fields:
        raise BuildError(f"apt has no SHA256 for kernel package '{package}'", where="kernel.package")
    return AptRecord(
        package=fields.get("Package", package),
        version=fields.get("Version", ""),
        sha256=fields.get("SHA256", ""),
        size=int(fields.get("Size", "0") or 0),
        depends=fields.get("Depends", ""),
    )


def resolve_package(package: str) -> AptRecord:
    """Follow a kernel metapackage to the real ``linux-image-<abi>-<flavour>`` package."""
    rec = apt_record(package)
    for _ in range(3):
        m = re.search(r"(linux-image-\d[\w.+-]*)\s*\(=", rec.depends)
        if not m or m.group(1) == rec.package:
            return rec
        rec = apt_record(m.group(1))
    return rec


def _download(rec: AptRecord, dest: Path) -> Path:
    """Download the .deb into ``dest`` (atomically) and verify it against apt's SHA256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".apt-", dir=dest.parent) as tmp:
        try:
            run(["apt-get", "download", "-q", f"{rec.package}={rec.version}"], cwd=Path(tmp))
        except ToolError as e:
            raise BuildError(
                f"cannot download kernel package {rec.package}={rec.version}: {e.message}",
                hint="check the network to the Debian mirror, or give a vmlinuz + modules tree",
            ) from e
        debs = sorted(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise BuildError(f"apt-get download of {rec.package} produced {len(debs)} files")
        got = sha256_file(debs[0])
        if got != rec.sha256:
            raise IntegrityError(
                f"{rec.package}_{rec.version}.deb: sha256 {got} does not match apt's {rec.sha256}",
                hint="the download is corrupt or the mirror is tampered with; run 'apt-get update' and retry",
            )
        debs[0].replace(dest)
    return dest


def _apt_state() -> str:
    """Changes whenever apt's package index does (``apt-get update``): names, sizes, mtimes of the lists."""
    lists = Path("/var/lib/apt/lists")
    h = hashlib.sha256()
    for p in sorted(lists.glob("*")) if lists.is_dir() else []:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resolve_cached(package: str, cache: Path) -> AptRecord:
    """``resolve_package`` remembered per state of apt's index (asking apt takes seconds)."""
    memo = cache / "apt-records.json"
    key = f"{package}@{_apt_state()}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return AptRecord(**known[key])
    rec = resolve_package(package)
    known = {k: v for k, v in known.items() if k.endswith(key.split("@", 1)[1])}
    known[key] = dataclasses.asdict(rec)
    atomic_write(memo, json.dumps(known, indent=1, sort_keys=True).encode())
    return rec


def fetch_debian_kernel(package: str, cache: Path | None = None) -> Kernel:
    """The Debian kernel ``package`` from the cache, fetched and verified on first use."""
    root = cache or cache_dir("kernel")
    rec = resolve_cached(package, root)
    if not rec.sha256:
        raise BuildError(f"apt has no SHA256 for kernel package '{rec.package}'", where="kernel.package")
    stem = f"{rec.package}_{rec.version}".replace(":", "%3a")
    deb = root / f"{stem}.deb"
    if not deb.exists() or sha256_file(deb) != rec.sha256:
        _download(rec, deb)
    tree = root / stem
    stamp = tree / ".sha256"
    if not (stamp.exists() and stamp.read_text().strip() == rec.sha256):
        with atomic_dir(tree) as tmp:
            run(["dpkg-deb", "-x", deb, tmp])
            (tmp / ".sha256").write_text(rec.sha256 + "\n")
    kernel = kernel_from_tree(tree)
    return Kernel(
        vmlinuz=kernel.vmlinuz,
        modules=kernel.modules,
        version=kernel.version,
        origin="debian",
        package=rec.package,
        package_version=rec.version,
        sha256=rec.sha256,
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
