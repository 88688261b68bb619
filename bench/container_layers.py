"""Shared layers: the bytes the image of the next snapshot reuses, next to the one-layer image.

A synthetic OS-like tree (full: 1,000 packages, ~300 MB; quick: 200 packages, ~60 MB): each package
has files in ``usr/lib/<pkg>/`` and ``usr/share/doc/<pkg>/``, plus ``etc`` and a dpkg-like status
file. The next snapshot changes 1 % of the packages (new content for their files, a new status file).
Both snapshots are exported as OCI images twice, in the same run:

- ours: cut into layers (``--layer-size`` = tree / 32, about 30 layers);
- ours on a parent: the second image built on top of the first (``--parent``): the first's layers
  plus one delta layer;
- the reference: the same build with one layer (what images were before).

Measured: the compressed bytes of the second image whose blobs the first image already has (what a
registry or the hub does not store or transfer again), and the export throughput of the layered build
next to ``tar -c | gzip -6`` of the same tree (content MB over wall-clock seconds).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, cores, flags, print_table, timer

CREATED = 1_764_000_000
MTIME = CREATED - 86_400


def make_tree(root: Path, packages: int, per_package: int, seed: int = 19) -> int:
    rnd = random.Random(seed)
    words = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 9))) for _ in range(3000)]
    text = b" ".join(rnd.choices(words, k=400_000))
    binary = rnd.randbytes(1 << 20)
    total = 0
    for p in range(packages):
        total += write_package(root, p, per_package, text, binary, version=0)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "os-release").write_text('NAME="bench"\n')
    write_status(root, packages, changed=set())
    return total


def write_package(root: Path, p: int, size: int, text: bytes, binary: bytes, *, version: int) -> int:
    rnd = random.Random(p * 1000 + version)
    lib, doc = root / "usr" / "lib" / f"pkg{p:04d}", root / "usr" / "share" / "doc" / f"pkg{p:04d}"
    lib.mkdir(parents=True, exist_ok=True)
    doc.mkdir(parents=True, exist_ok=True)
    written = 0
    for i in range(4):
        src = binary if i % 2 == 0 else text
        n = size // 5
        off = rnd.randrange(0, len(src) - n)
        (lib / f"lib{i}.so").write_bytes(src[off : off + n])
        written += n
    (doc / "copyright").write_bytes(text[: size // 5])
    written += size // 5
    for f in (*lib.iterdir(), *doc.iterdir(), lib, doc):
        os.utime(f, (MTIME + version, MTIME + version))
    return written


def write_status(root: Path, packages: int, changed: set[int]) -> None:
    status = root / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text(
        "".join(f"Package: pkg{p:04d}\nVersion: {2 if p in changed else 1}\n\n" for p in range(packages))
    )


def build_image(tree: Path, out: Path, layer_bytes: int, parent: Path | None = None) -> dict[str, int]:
    """Blob digest -> compressed size of the layers of an OCI image of ``tree``."""
    from cernvm_build.container.build import BuildRequest, build
    from cernvm_build.container.image import LABEL_PATH, LABEL_REPOSITORY, ImageSpec
    from cernvm_build.container.source import LocalTree

    labels = {LABEL_REPOSITORY: "bench.example.test", LABEL_PATH: "/"}
    spec = ImageSpec("registry.example.test", "bench/layers", "s", CREATED, labels=labels)
    req = BuildRequest(LocalTree(tree), spec, ["oci"], out, "img", layer_bytes=layer_bytes, parent=parent)
    res = build(req)
    assert res.parts is not None
    assert parent is None or (res.parent is not None and res.parent.used), res.parent
    manifest = json.loads(res.parts.manifest)
    return {layer["digest"]: layer["size"] for layer in manifest["layers"]}


def tar_gzip(tree: Path, out: Path) -> float:
    with timer() as t, open(out, "wb") as f:
        tar = subprocess.Popen(["tar", "-c", "-C", str(tree), "--sort=name", "."], stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-6", "-n"], stdin=tar.stdout, stdout=f, check=True)
        assert tar.stdout is not None
        tar.stdout.close()
        assert tar.wait() == 0
    return t["s"]


def run(quick: bool) -> list[Result]:
    packages, per_package = (200, 300_000) if quick else (1000, 300_000)
    work = Path(tempfile.mkdtemp(prefix="bench-layers-"))
    try:
        tree = work / "tree"
        content = make_tree(tree, packages, per_package)
        layer_bytes = max(1 << 20, content // 32)
        one_layer = 1 << 50
        first_layers, first_one = (
            build_image(tree, work / "a", layer_bytes),
            build_image(tree, work / "a1", one_layer),
        )
        # throughput: the layered export next to tar | gzip, alternately, best of two
        ours, limit = [], []
        for _ in range(2):
            shutil.rmtree(work / "t", ignore_errors=True)
            with timer() as t:
                build_image(tree, work / "t", layer_bytes)
            ours.append(t["s"])
            limit.append(tar_gzip(tree, work / "limit.tar.gz"))
        # the next snapshot: 1 % of the packages changed
        rnd = random.Random(7)
        changed = set(rnd.sample(range(packages), max(1, packages // 100)))
        text, binary = random.Random(1).randbytes(1 << 20), random.Random(2).randbytes(1 << 20)
        for p in changed:
            write_package(tree, p, per_package, text, binary, version=1)
        write_status(tree, packages, changed)
        with timer() as tc:
            second_layers = build_image(tree, work / "b", layer_bytes)
        second_one = build_image(tree, work / "b1", one_layer)
        with timer() as tp:
            second_parent = build_image(tree, work / "bp", layer_bytes, parent=work / "a" / "img.oci")
        upload_parent = sum(size for d, size in second_parent.items() if d not in first_layers)
        new_parent = len(set(second_parent) - set(first_layers))
        total = sum(second_layers.values())
        shared = sum(size for d, size in second_layers.items() if d in first_layers)
        total_one = sum(second_one.values())
        shared_one = sum(size for d, size in second_one.items() if d in first_one)
        upload, upload_one = total - shared, total_one - shared_one
        new_layers = sum(1 for d in second_layers if d not in first_layers)
        limit_gz = (work / "limit.tar.gz").stat().st_size
        # throughput as content MB per second: the same tree for both sides
        ours_mbs, lim_mbs = content / min(ours) / 1e6, content / min(limit) / 1e6
        tag = f"{packages} packages, {content / 1e6:.0f} MB, {len(changed)} changed, {cores()} cores"
        return [
            Result("container.layers", "shared bytes (2nd snapshot)", 100 * shared / total, "%",
                   reference="one layer", reference_value=100 * shared_one / total_one if shared_one else 0.0,
                   aim=">= 90 % shared", ok=shared >= 0.9 * total,
                   extra={"tree": tag, "layers": len(second_layers), "changed_layers": new_layers,
                          "shared_bytes": shared,
                       "image_bytes": total, "one_layer_shared_bytes": shared_one,
                       "one_layer_image_bytes": total_one}),
            Result("container.layers", "bytes to upload (2nd)", upload / 1e6, "MB",
                   reference="one layer", reference_value=upload_one / 1e6,
                   aim="<= 10 % of the one-layer image", ok=upload <= 0.1 * upload_one),
            Result("container.layers", "bytes to upload (2nd, --parent)", upload_parent / 1e6, "MB",
                   reference="tree cut", reference_value=upload / 1e6,
                   aim="one new layer, < tree cut", ok=upload_parent < upload,
                   extra={"layers": len(second_parent), "new_layers": new_parent,
                          "one_layer_upload_mb": round(upload_one / 1e6, 2), "seconds": round(tp["s"], 2),
                          "tree_cut_seconds": round(tc["s"], 2)}),
            Result("container.layers", "export throughput", ours_mbs, "MB/s",
                   reference="tar -c | gzip -6", reference_value=lim_mbs, aim=">= 1.0x reference",
                   ok=ours_mbs >= lim_mbs,
                   extra={"seconds": round(min(ours), 2), "limit_seconds": round(min(limit), 2),
                          "gzip_bytes_layers": total, "gzip_bytes_limit": limit_gz}),
        ]  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    flags(__doc__, {"--quick": "a smaller run (fewer rounds or inputs)"})
    results = run(quick="--quick" in sys.argv)
    print_table(results)
    for r in results:
        if r.extra:
            print(f"  {r.bench} {r.metric}: {r.extra}")
