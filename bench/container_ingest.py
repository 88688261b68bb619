"""Hub ingest: N images from a local registry into a CernVM-FS hub, next to skopeo copy + umoci.

A synthetic OS-like tree (quick: 120 packages, ~20 MB; full: 400 packages, ~80 MB) is built into N
images that differ in one package each (quick: 3, full: 6), pushed to Debian's docker-registry on
127.0.0.1. Measured in the same run:

- ours: ``hub ingest`` of the N images (pull; each image one revision of the hub with its layers
  read from their blobs, each chain copied from the one below plus its layer, the flat root, the
  podman store; shared layers and chains are published once);
- the reference: ``skopeo copy`` of each image to an OCI layout plus ``umoci raw unpack`` of it (what
  a hub that only keeps flat roots would at least do, without publishing).

Figures: images per minute for both (ours also writes a catalog per chain: DUCC's layout holds
layers 0..k for every k), and the bytes of the hub's object store next to the sum of the unpacked
trees (the hub stores each distinct file once).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, flags, print_table, timer
from bench.container_layers import CREATED, make_tree, write_package

HUB = "unpacked.bench.test"


def _registry(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (base / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {base / 'data'}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(base / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).read()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("the registry did not answer")


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def run(quick: bool) -> list[Result]:
    from cernvm_build.container.build import BuildRequest, build
    from cernvm_build.container.hub import publisher
    from cernvm_build.container.image import ImageSpec
    from cernvm_build.container.ingest import ingest
    from cernvm_build.container.registry import RegistryOptions, push
    from cernvm_build.container.source import LocalTree
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.publish import create_repository

    packages, images = (120, 3) if quick else (400, 6)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    proc, registry = _registry(work)
    try:
        tree = work / "tree"
        content = make_tree(tree, packages, 150_000)
        text, binary = b"x" * (1 << 20), bytes(range(256)) * 4096
        opts = RegistryOptions(tls_verify=False)
        for i in range(images):
            if i:
                write_package(tree, i, 150_000, text, binary, version=i)
            spec = ImageSpec(registry, "bench/os", f"v{i}", CREATED + i)
            build(
                BuildRequest(
                    LocalTree(tree),
                    spec,
                    ["oci"],
                    work / f"img{i}",
                    "os",
                    layer_bytes=max(1 << 20, content // 16),
                )
            )
            push(work / f"img{i}" / "os.oci", f"{registry}/bench/os:v{i}", opts=opts)
        keys = generate_keys(HUB)
        keys.save(work / "keys")
        create_repository(work / "hub", HUB, keys)
        publish = publisher(stratum=work / "hub", fqrn=HUB, keys_dir=work / "keys")
        with timer() as ours:
            ingest([f"{registry}/bench/os:v*"], publish, opts=opts, scratch=work)
        unpacked = 0
        with timer() as ref:
            for i in range(images):
                layout = work / f"ref{i}"
                src = f"docker://{registry}/bench/os:v{i}"
                copy = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", src, f"oci:{layout}:latest"]
                subprocess.run(copy, check=True)
                rootfs = str(work / f"rootfs{i}")
                subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:latest", rootfs],
                               check=True, capture_output=True)  # fmt: skip
        for i in range(images):
            unpacked += _du(work / f"rootfs{i}")
        store = _du(work / "hub" / "data")
        per_min, ref_per_min = images / ours["s"] * 60, images / ref["s"] * 60
        tag = f"{images} images of {packages} packages ({content / 1e6:.0f} MB), one package apart"
        return [
            Result("container.hub_ingest", "images per minute", per_min, "img/min",
                   reference="skopeo copy + umoci unpack", reference_value=ref_per_min,
                   aim=">= 1/3 of reference (ours also publishes layers, chains, flat, store)",
                   ok=per_min * 3 >= ref_per_min,
                   extra={"tree": tag, "seconds": round(ours["s"], 1), "ref_seconds": round(ref["s"], 1)}),
            Result("container.hub_ingest", "hub object store", store / 1e6, "MB",
                   reference="unpacked trees, summed", reference_value=unpacked / 1e6,
                   aim="< the unpacked trees (each file stored once)", ok=store < unpacked),
        ]  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    flags(__doc__, {"--quick": "a smaller run (fewer rounds or inputs)"})
    results = run(quick="--quick" in sys.argv)
    print_table(results)
    for r in results:
        if r.extra:
            print(f"  {r.bench} {r.metric}: {r.extra}")
