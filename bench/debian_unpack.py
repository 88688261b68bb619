"""The Debian tree's unpack step: every package of the debian12 closure put into an empty tree.

Ours: ``osbuild.debian._unpack`` (``dpkg-deb --fsys-tarfile`` read by Python, every member's path
resolved inside the tree with ``openat2(RESOLVE_IN_ROOT)``). The reference, in the same run: the
host-side pipeline it replaced, ``dpkg-deb --fsys-tarfile | tar -x --keep-directory-symlink`` per
package (fast, but it wrote through a package's symlinks out of the tree). Alternated A/B, the best
of the rounds; CPU seconds (this process + its children) are the figure that the other work on the
machine disturbs least. Needs root and the packages in the cache (``make deps``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, children_cpu, flags, print_table


def _cpu() -> float:
    """CPU seconds of this process and its ended children (dpkg-deb, tar)."""
    return time.process_time() + children_cpu()


def _reference(tree: Path, files: list[Path]) -> None:
    for link in ("bin", "sbin", "lib", "lib64"):
        (tree / "usr" / link).mkdir(parents=True, exist_ok=True)
        (tree / link).symlink_to(f"usr/{link}")
    for deb in files:
        script = 'dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2"'
        subprocess.run(["sh", "-ec", script, "unpack", deb, tree], check=True)


def run(quick: bool) -> list[Result]:
    from cernvm_build import debpkg
    from cernvm_build.osbuild import debian
    from cernvm_build.paths import cache_dir

    packages = debian.select_packages("12")
    debs = [
        debpkg.fetch_verified(p.name, p.version, p.arch, p.sha256, cache_dir("debs"), offline=True)
        for p in packages
    ]
    work = Path(tempfile.mkdtemp(prefix="bench-unpack-"))
    ways: dict[str, Callable[[Path], None]] = {
        "ours": lambda t: debian._unpack(t, debs),
        "reference": lambda t: _reference(t, [d.path for d in debs]),
    }
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    wall: dict[str, list[float]] = {k: [] for k in ways}
    try:
        for _ in range(1 if quick else 3):
            for name, way in ways.items():
                tree = work / name
                tree.mkdir()
                c0, w0 = _cpu(), time.perf_counter()
                way(tree)
                cpu[name].append(_cpu() - c0)
                wall[name].append(time.perf_counter() - w0)
                shutil.rmtree(tree)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours, ref = min(cpu["ours"]), min(cpu["reference"])
    return [
        Result("osbuild.unpack", "CPU seconds", round(ours, 2), "s", reference="dpkg-deb | tar -x (host)",
               reference_value=round(ref, 2), aim="<= 1.5x reference", ok=ours <= 1.5 * ref,
               extra={"packages": len(debs), "wall_ours": round(min(wall["ours"]), 2),
                      "wall_reference": round(min(wall["reference"]), 2), "rounds": len(cpu["ours"]),
                      "load_1min": round(os.getloadavg()[0], 1)}),
    ]  # fmt: skip


if __name__ == "__main__":
    flags(__doc__, {"--quick": "one round instead of three"})
    results = run(quick="--quick" in sys.argv)
    print_table(results)
    for r in results:
        print(f"  {r.bench} {r.metric}: {r.extra}")
