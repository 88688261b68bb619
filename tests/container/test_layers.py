"""Images in several layers: where the tree is cut, that the next snapshot reuses unchanged layers
byte for byte, and that the real consumers (umoci, skopeo, podman) accept and run the result."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from cernvm_build import profile
from cernvm_build.container.build import BuildRequest, build
from cernvm_build.container.from_profile import build_profile
from cernvm_build.container.image import ImageSpec
from cernvm_build.container.layering import BASE, plan_layers
from cernvm_build.container.source import Entry, LocalTree, TreeSource
from cernvm_build.container.verify import read_image
from cernvm_build.context import BuildContext
from cernvm_build.cvmfs.repository import SnapshotSpec
from cernvm_build.demo.repository import DemoRepository

from .podman import needs_podman, run, store
from .trees import describe, make_tree

__all__ = ["store"]  # the fixture

SPEC = ImageSpec(registry="registry.example.test", repository="cernvm/layers", tag="s1", created=1764000000)
KB = 1024
HUB = "unpacked.example.test"


def os_like(root: Path) -> Path:
    """``make_tree`` plus an OS-like bulk: usr/lib/<pkg>/ of ~40 KB each, a big usr/share."""
    make_tree(root)
    for i in range(12):
        d = root / "usr" / "lib" / f"pkg{i:02d}"
        d.mkdir(parents=True)
        for j in range(4):
            (d / f"lib{j}.so").write_bytes(bytes([i, j]) * 5 * KB)
    (root / "usr" / "lib" / "loose.so").write_bytes(b"L" * 3 * KB)
    share = root / "usr" / "share" / "doc"
    share.mkdir(parents=True)
    for i in range(30):
        (share / f"README{i}").write_text(f"doc {i}\n" * 200)
    return root


def image(tree: Path, out: Path, *, tag: str = "s1", layer_bytes: int = 64 * KB) -> dict[str, object]:
    spec = ImageSpec(SPEC.registry, SPEC.repository, tag, SPEC.created)
    res = build(
        BuildRequest(LocalTree(tree), spec, ["oci", "docker-archive"], out, "img", layer_bytes=layer_bytes)
    )
    assert res.parts is not None
    manifest: dict[str, object] = json.loads(res.parts.manifest)
    return manifest


def digests(manifest: dict[str, object]) -> list[str]:
    return [str(layer["digest"]) for layer in manifest["layers"]]  # type: ignore[attr-defined]


def tool(*argv: str | Path) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv[0]} failed: {proc.stderr.strip()[-2000:]}"
    return proc.stdout


def test_the_plan_cuts_heavy_directories_and_owns_every_path_once(tmp_path: Path) -> None:
    tree = LocalTree(os_like(tmp_path / "t"))
    plan = plan_layers(tree, layer_bytes=64 * KB)
    assert "usr" in plan.split and "usr/lib" in plan.split
    assert plan.keys[-1][-1] == BASE  # the base layer is the top one
    assert plan.layer_of("usr/lib/pkg03/lib1.so") == plan.layer_of("usr/lib/pkg03")
    assert plan.layer_of("usr/lib/pkg03") != plan.layer_of("usr/lib/pkg04")
    # a file directly in a split directory goes to that directory's rest layer, not the base
    assert plan.files_in("usr/lib") != plan.base
    owners: dict[str, int] = {}
    for layer, entry in plan.split_entries(tree):
        if entry.path in plan.split and layer != plan.base:
            assert (entry.mode, entry.uid, entry.mtime) == (0o755, 0, 0)  # a placeholder
            continue
        assert entry.path not in owners, f"{entry.path} in two layers"
        owners[entry.path] = layer
    assert set(owners) == {e.path for e in tree.entries()}
    # hard links never span layers
    assert owners["usr/bin/tool"] == owners["usr/bin/tool-hardlink"]
    # the same tree gives the same cut
    assert plan_layers(tree, layer_bytes=64 * KB) == plan


def test_hard_links_across_directories_merge_their_layers(tmp_path: Path) -> None:
    root = os_like(tmp_path / "t")
    os.link(root / "usr" / "lib" / "pkg01" / "lib0.so", root / "usr" / "lib" / "pkg07" / "same.so")
    plan = plan_layers(LocalTree(root), layer_bytes=64 * KB)
    assert plan.layer_of("usr/lib/pkg01") == plan.layer_of("usr/lib/pkg07")
    assert plan.layer_of("usr/lib/pkg01") != plan.layer_of("usr/lib/pkg02")


def test_next_snapshot_shares_every_unchanged_layer(tmp_path: Path) -> None:
    tree = os_like(tmp_path / "t")
    first = image(tree, tmp_path / "out1")
    again = image(tree, tmp_path / "out1b")
    assert digests(first) == digests(again)  # deterministic
    assert len(digests(first)) >= 5
    (tree / "usr" / "lib" / "pkg05" / "lib2.so").write_bytes(b"changed" * 1000)  # one package changed
    second = image(tree, tmp_path / "out2", tag="s2")
    a, b = digests(first), digests(second)
    assert len(a) == len(b)
    changed = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    assert len(changed) == 1
    # and the blob really is the same file, byte for byte, in both layouts
    same = a[0][7:]
    blobs = "img.oci/blobs/sha256/"
    assert (tmp_path / "out1" / blobs / same).read_bytes() == (tmp_path / "out2" / blobs / same).read_bytes()


def test_a_single_layer_when_the_tree_is_light(tmp_path: Path) -> None:
    manifest = image(make_tree(tmp_path / "t"), tmp_path / "out", layer_bytes=64 << 20)
    assert len(digests(manifest)) == 1


@pytest.mark.integration
def test_umoci_skopeo_and_verify_read_the_layers_file_for_file(tmp_path: Path) -> None:
    tree = os_like(tmp_path / "t")
    manifest = image(tree, tmp_path / "out")
    out = tmp_path / "out"
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    tool("umoci", "raw", "unpack", *rootless, "--image", f"{out / 'img.oci'}:s1", tmp_path / "rootfs")
    assert describe(tmp_path / "rootfs") == describe(tree)
    # the shared directories end with the tree's metadata (the base layer, on top, sets it)
    assert os.stat(tmp_path / "rootfs" / "usr").st_mode == os.stat(tree / "usr").st_mode
    info = json.loads(tool("skopeo", "inspect", f"oci-archive:{out / 'img.oci.tar'}"))
    assert info["Layers"] == digests(manifest)
    docker = json.loads(tool("skopeo", "inspect", "--config", f"docker-archive:{out / 'img.docker.tar'}"))
    assert len(docker["rootfs"]["diff_ids"]) == len(digests(manifest))
    for name in ("img.oci", "img.docker.tar"):
        contents = read_image(out / name)
        assert not contents.integrity
        assert set(contents.nodes) == {p for p in describe(tree)}


@pytest.mark.integration
@needs_podman
def test_podman_runs_the_multi_layer_demo_image(
    tmp_path: Path, store: Path, demo_repo: DemoRepository
) -> None:
    repo = demo_repo
    made = build_profile(
        profile.load("demo"),
        out_dir=tmp_path / "out",
        formats=["oci"],
        sources=[str(repo.stratum)],
        keys=[repo.public_key],
        snapshot=SnapshotSpec(tag="demo-1"),
        layer_bytes=256 * KB,
        ctx=BuildContext(epoch=0),
    )
    assert len(made.result.layers) > 1
    proc = run(store, f"oci-archive:{tmp_path / 'out' / 'demo.oci.tar'}", "cat", "/etc/os-release")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('NAME="CernVM demo OS"\n')
    # an image built on top of that one (a file changed, one removed: a delta layer with a whiteout)
    from cernvm_build.container.origin import open_origin

    prof = profile.load("demo")
    origin = open_origin([str(repo.stratum)], fqrn=prof.cvmfs.repository, path=prof.cvmfs.path,
                         public_keys=[repo.public_key], snapshot=SnapshotSpec(tag="demo-1"))  # fmt: skip
    try:
        edited = _Edited(origin.tree, "etc/os-release", b'NAME="edited"\n', gone="etc/cernvm-demo-release")
        req = BuildRequest(
            edited, made.spec, ["oci"], tmp_path / "child", "demo", parent=tmp_path / "out" / "demo.oci"
        )
        child = build(req)
    finally:
        origin.close()
    assert child.parent is not None and child.parent.used and len(child.layers) == len(made.result.layers) + 1
    script = "cat /etc/os-release; test -e /etc/cernvm-demo-release || echo gone"
    proc = run(store, f"oci-archive:{tmp_path / 'child' / 'demo.oci.tar'}", "sh", "-c", script)
    assert (proc.returncode, proc.stdout) == (0, 'NAME="edited"\ngone\n'), proc.stderr


class _Edited:
    """``source`` with one file's content replaced and one path left out."""

    def __init__(self, source: TreeSource, path: str, data: bytes, *, gone: str) -> None:
        self.source, self.path, self.data, self.gone = source, path, data, gone
        self.description = source.description

    def entries(self) -> Iterator[Entry]:
        for e in self.source.entries():
            if e.path == self.path:
                yield replace(e, size=len(self.data))
            elif e.path != self.gone:
                yield e

    def open(self, entry: Entry) -> BinaryIO:
        return io.BytesIO(self.data) if entry.path == self.path else self.source.open(entry)


def test_many_light_directories_are_grouped_and_one_change_moves_one_group(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for i in range(300):
        d = root / "usr" / "share" / "doc" / f"pkg{i:03d}"
        d.mkdir(parents=True)
        (d / "copyright").write_text(f"package {i}\n" * 60)
    first = image(root, tmp_path / "a", layer_bytes=64 * KB)
    assert len(digests(first)) >= 4  # not one layer for all, not one per directory
    assert len(digests(first)) < 100
    (root / "usr" / "share" / "doc" / "pkg150" / "copyright").write_text("changed\n")
    (root / "usr" / "share" / "doc" / "pkg150b").mkdir()  # a new package between two others
    second = image(root, tmp_path / "b", tag="s2", layer_bytes=64 * KB)
    new = [d for d in digests(second) if d not in digests(first)]
    assert len(new) <= 2, (len(new), len(digests(second)))


@pytest.mark.integration
def test_two_snapshots_of_a_repository_share_all_but_the_changed_package(tmp_path: Path) -> None:
    """The real source: two revisions of a CernVM-FS repository, one package changed between them
    (its files and the package list), a file and a folder removed. Cut along the tree, the layers
    holding those change; built on the first image (``parent``), the second is the first's layers
    plus one, which verify, umoci and the hub read as the second snapshot."""
    from cernvm_build.container.hub import publisher
    from cernvm_build.container.origin import open_origin, provenance
    from cernvm_build.container.provenance import verify_image
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.publish import create_repository, publish_tree
    from cernvm_build.cvmfs.repository import open_repository

    fqrn = "layers.example.test"
    tree = os_like(tmp_path / "t")
    (tree / "var" / "lib" / "dpkg").mkdir(parents=True)
    (tree / "var" / "lib" / "dpkg" / "status").write_text("Package: pkg05\nVersion: 1\n")
    keys = generate_keys(fqrn)
    keys.save(tmp_path / "keys")
    create_repository(tmp_path / "stratum", fqrn, keys)
    publish_tree(tmp_path / "stratum", fqrn, keys, tree, tag="s1")
    (tree / "usr" / "lib" / "pkg05" / "lib2.so").write_bytes(b"version 2" * 1000)
    (tree / "var" / "lib" / "dpkg" / "status").write_text("Package: pkg05\nVersion: 2\n")
    (tree / "usr" / "share" / "doc" / "README7").unlink()  # and a file and a folder removed
    shutil.rmtree(tree / "usr" / "lib" / "pkg09")
    publish_tree(tmp_path / "stratum", fqrn, keys, tree, tag="s2")
    key = tmp_path / "keys" / f"{fqrn}.pub"
    create_repository(tmp_path / "hub", HUB, keys_hub := generate_keys(HUB))
    keys_hub.save(tmp_path / "hub-keys")
    found = []
    for tag, parent in (("s1", None), ("s2", None), ("s2p", tmp_path / "s1" / "img.oci")):
        origin = open_origin([str(tmp_path / "stratum")], fqrn=fqrn, path="/", public_keys=[key],
                             snapshot=SnapshotSpec(tag=tag[:2]))  # fmt: skip
        try:
            spec = ImageSpec(
                SPEC.registry, SPEC.repository, tag, origin.repo.timestamp, labels=provenance(origin)
            )
            formats, hub = ["oci"], None
            if parent is not None:  # the child goes into a hub too: its chains apply the delta's whiteouts
                formats, hub = ["oci", "cvmfs"], publisher(stratum=tmp_path / "hub", fqrn=HUB,
                                                          keys_dir=tmp_path / "hub-keys")  # fmt: skip
            res = build(BuildRequest(origin.tree, spec, formats, tmp_path / tag, "img", layer_bytes=64 * KB,
                                     parent=parent, publish=hub))  # fmt: skip
        finally:
            origin.close()
        assert res.parts is not None
        found.append(digests(json.loads(res.parts.manifest)))
    first, second, child = found
    assert len(first) >= 5
    # cut along the tree: the package's layer, the one with the package list (var: a light top-level
    # directory), the removed file's, and the base layer (usr/lib is split and lost a folder: its own
    # entry's mtime changed); the removed folder's layer is gone
    assert len([d for d in second if d not in first]) == 4 and len(second) == len(first) - 1
    # built on the first image: all of its layers, and one more
    assert child[:-1] == first and len(child) == len(first) + 1
    check = verify_image(tmp_path / "s2p" / "img.oci", sources=[str(tmp_path / "stratum")], keys=[key])
    assert check.report.ok, check.report.differences[:5]
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    tool(
        "umoci",
        "raw",
        "unpack",
        *rootless,
        "--image",
        f"{tmp_path / 's2p' / 'img.oci'}:s2p",
        tmp_path / "rootfs",
    )
    assert describe(tmp_path / "rootfs") == describe(tree)
    meta = res.artifacts[-1].meta
    with open_repository(
        tmp_path / "hub", fqrn=HUB, public_keys=[tmp_path / "hub-keys" / f"{HUB}.pub"]
    ) as repo:
        top = str(meta["chains"][-1])  # type: ignore[index]
        assert repo.lookup(f"{top}/usr/share/doc/README7") is None
        assert repo.lookup(f"{top}/usr/lib/pkg09") is None
        assert repo.lookup(f"{top}/usr/lib/pkg08/lib0.so") is not None
        lib = repo.lookup(f"{top}/usr/lib/pkg05/lib2.so")
        assert lib is not None and repo.read_bytes(lib) == b"version 2" * 1000
        assert not [e.path for e in repo.walk(top) if e.name.startswith(".wh.")]
