"""Images built on top of an earlier image (``--parent``): the parent's layers byte for byte plus one
delta layer with the changes and OCI whiteouts; read back by umoci and ``verify``; wrong parents
refused; long chains and big deltas cut along the tree again."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from cernvm_build.container import delta as delta_mod
from cernvm_build.container.build import BuildRequest, BuildResult, build
from cernvm_build.container.image import LABEL_PATH, LABEL_REPOSITORY, ImageSpec, hex_of
from cernvm_build.container.source import Entry, LocalTree
from cernvm_build.container.verify import read_image
from cernvm_build.errors import BuildError

from .test_layers import KB, os_like, tool
from .trees import describe

LABELS = {LABEL_REPOSITORY: "layers.example.test", LABEL_PATH: "/"}


def spec(tag: str, **labels: str) -> ImageSpec:
    return ImageSpec("registry.example.test", "cernvm/parent", tag, 1764000000, labels={**LABELS, **labels})


def make(
    tree: Path,
    out: Path,
    tag: str,
    parent: Path | None = None,
    formats: tuple[str, ...] = ("oci",),
    progress: list[tuple[int, int]] | None = None,
) -> BuildResult:
    req = BuildRequest(
        LocalTree(tree), spec(tag), list(formats), out, "img", layer_bytes=64 * KB, parent=parent
    )
    return build(req, progress=None if progress is None else lambda *told: progress.append(told))


def layers(res: BuildResult) -> list[tuple[str, str]]:
    assert res.parts is not None
    manifest, config = json.loads(res.parts.manifest), json.loads(res.parts.config)
    return list(zip([d["digest"] for d in manifest["layers"]], config["rootfs"]["diff_ids"], strict=True))


def members(blob: Path) -> list[str]:
    with gzip.open(blob) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        return [m.name for m in tar]


def second_snapshot(tree: Path) -> None:
    """One package changed (its file and the package list), a file and a folder removed, a folder
    whose every entry was replaced, a file that became a folder, a new hard link."""
    (tree / "usr" / "lib" / "pkg05" / "lib2.so").write_bytes(b"version 2" * 1000)
    (tree / "var" / "lib" / "dpkg" / "status").write_text("Package: pkg05\nVersion: 2\n")
    (tree / "etc" / "empty.conf").unlink()
    shutil.rmtree(tree / "opt" / "dir with space")
    for old in (tree / "usr" / "lib" / "pkg07").iterdir():
        old.unlink()
    (tree / "usr" / "lib" / "pkg07" / "new.so").write_bytes(b"new" * 100)
    (tree / "usr" / "lib" / "loose.so").unlink()
    (tree / "usr" / "lib" / "loose.so").mkdir()
    (tree / "usr" / "lib" / "loose.so" / "inside").write_text("x")
    os.link(tree / "usr" / "share" / "doc" / "README3", tree / "usr" / "share" / "doc" / "README3-link")


@pytest.mark.integration
def test_the_child_is_the_parent_plus_one_delta_layer(tmp_path: Path) -> None:
    tree = os_like(tmp_path / "t")
    (tree / "var" / "lib" / "dpkg").mkdir(parents=True)
    (tree / "var" / "lib" / "dpkg" / "status").write_text("Package: pkg05\nVersion: 1\n")
    first = make(tree, tmp_path / "a", "s1")
    second_snapshot(tree)
    parent = tmp_path / "a" / "img.oci"
    child = make(tree, tmp_path / "b", "s2", parent=parent, formats=("oci", "docker-archive"))
    assert child.parent is not None and child.parent.used, child.parent
    a, b = layers(first), layers(child)
    assert len(a) >= 5
    assert b[:-1] == a and len(b) == len(a) + 1  # every layer of the parent (blob and diff_id), one more
    out = tmp_path / "b"
    blobs = out / "img.oci" / "blobs" / "sha256"
    for digest, _ in a:
        assert (blobs / hex_of(digest)).read_bytes() == (
            parent / "blobs" / "sha256" / hex_of(digest)
        ).read_bytes()
    names = members(blobs / hex_of(b[-1][0]))
    # removed: a file, a folder; replaced: a whole folder (opaque), a file that is a folder now
    for wh in ("etc/.wh.empty.conf", "opt/.wh.dir with space", "usr/lib/pkg07/.wh..wh..opq",
               "usr/lib/.wh.loose.so"):  # fmt: skip
        assert wh in names, names
    assert "usr/lib/pkg05/lib2.so" in names and "var/lib/dpkg/status" in names
    assert "usr/lib/pkg04/lib0.so" not in names and "usr/share/doc/README3" in names  # the link group, whole
    # the same inputs, the same bytes
    again = make(tree, tmp_path / "c", "s2", parent=parent)
    assert layers(again) == b
    # read bottom-up with the whiteouts: the second tree, file for file (OCI and docker-archive)
    expected = describe(tree)
    for name in ("img.oci", "img.docker.tar"):
        contents = read_image(out / name)
        assert not contents.integrity
        assert set(contents.nodes) == set(expected)
        assert contents.nodes["usr/share/doc/README3-link"].inode == "usr/share/doc/README3"
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    tool("umoci", "raw", "unpack", *rootless, "--image", f"{out / 'img.oci'}:s2", tmp_path / "rootfs")
    assert describe(tmp_path / "rootfs") == expected
    # a child of the child (an oci-archive parent) adds one more layer over the delta
    (tree / "etc" / "new.conf").write_text("3\n")
    third = make(tree, tmp_path / "d", "s3", parent=out / "img.oci.tar")
    assert layers(third)[:-1] == b


def test_against_the_parent_a_file_is_read_once_and_a_link_group_once(tmp_path: Path) -> None:
    tree = os_like(tmp_path / "t")
    doc = tree / "usr" / "share" / "doc"
    for i in range(3):
        os.link(doc / "README0", doc / f"README0-{i}")
    make(tree, tmp_path / "a", "s1")
    opened: list[str] = []

    class Counting(LocalTree):
        def open(self, entry: Entry) -> BinaryIO:
            opened.append(entry.path)
            return super().open(entry)

    req = BuildRequest(Counting(tree), spec("s2"), ["oci"], tmp_path / "b", "img", layer_bytes=64 * KB,
                       parent=tmp_path / "a" / "img.oci")  # fmt: skip
    res = build(req)
    assert res.parent is not None and res.parent.used and not res.parent.delta_bytes, res.parent
    assert opened and len(opened) == len(set(opened))
    assert len([p for p in opened if p.startswith("usr/share/doc/README0")]) == 1
    (doc / "README0").write_text("doc X\n" * 200)  # same size and mtime (clamped): the content differs
    changed = make(tree, tmp_path / "c", "s3", parent=tmp_path / "a" / "img.oci")
    assert changed.parent is not None and changed.parent.used and changed.parent.changed == 4, changed.parent


def test_a_wrong_parent_is_refused(tmp_path: Path) -> None:
    tree = os_like(tmp_path / "t")
    make(tree, tmp_path / "a", "s1")
    other = BuildRequest(LocalTree(tree), spec("o1", **{LABEL_REPOSITORY: "other.example.test"}), ["oci"],
                         tmp_path / "o", "img", layer_bytes=64 * KB)  # fmt: skip
    build(other)
    with pytest.raises(BuildError, match=r"image of cvmfs\.repository=other\.example\.test, not"):
        make(tree, tmp_path / "b", "s2", parent=tmp_path / "o" / "img.oci")
    blobs = tmp_path / "a" / "img.oci" / "blobs" / "sha256"
    manifest = json.loads((blobs / json.loads((tmp_path / "a" / "img.oci" / "index.json").read_text())
                           ["manifests"][0]["digest"][7:]).read_text())  # fmt: skip
    victim = blobs / hex_of(manifest["layers"][1]["digest"])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    with pytest.raises(BuildError, match="is damaged: blobs/sha256/") as err:
        make(tree, tmp_path / "b", "s2", parent=tmp_path / "a" / "img.oci")
    assert "\n" not in err.value.message and err.value.hint
    with pytest.raises(BuildError, match="does not exist"):
        make(tree, tmp_path / "b", "s2", parent=tmp_path / "nothing.oci")
    assert not (tmp_path / "b" / "img.oci").exists()


def test_long_chains_and_big_deltas_are_cut_along_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = os_like(tmp_path / "t")
    first = make(tree, tmp_path / "a", "s1")
    (tree / "etc" / "one").write_text("1\n")
    child = make(tree, tmp_path / "b", "s2", parent=tmp_path / "a" / "img.oci")
    assert child.parent is not None and child.parent.used
    monkeypatch.setattr(delta_mod, "MAX_DELTAS", 1)
    (tree / "etc" / "two").write_text("2\n")
    cut = make(tree, tmp_path / "c", "s3", parent=tmp_path / "b" / "img.oci")
    assert cut.parent is not None and not cut.parent.used
    assert "1 delta layers" in cut.parent.summary()
    assert len(set(layers(cut)) & set(layers(first))) >= len(layers(first)) - 1  # the tree cut's sharing
    monkeypatch.undo()
    for d in (tree / "usr" / "lib").iterdir():  # most of the tree changes: a fresh cut costs less
        for f in d.iterdir() if d.is_dir() else ():
            f.write_bytes(os.urandom(f.stat().st_size))
    os.link(tree / "etc" / "one", tree / "etc" / "one-link")  # a link group's content counts once
    seen: list[tuple[int, int]] = []
    big = make(tree, tmp_path / "d", "s4", parent=tmp_path / "a" / "img.oci", progress=seen)
    assert big.parent is not None and not big.parent.used and "over 25%" in big.parent.why
    # the delta's pass, then the tree cut's from 0 again: the count never runs past its total
    total = seen[0][1]
    assert total > 0 and all(d <= t == total for d, t in seen) and seen[-1] == (total, total)
    again = next(i for i in range(1, len(seen)) if seen[i][0] < seen[i - 1][0])
    assert seen[again - 1 : again + 1] == [(total, total), (0, total)]  # the delta's pass: every byte once


def test_a_parent_with_a_path_out_of_its_tree_is_refused(tmp_path: Path) -> None:
    """A parent's paths become whiteout names: one that is not a path in a tree ('etc/..') would make
    a whiteout of the folder above."""
    tree = os_like(tmp_path / "t")
    make(tree, tmp_path / "a", "s1")
    layout = tmp_path / "a" / "img.oci"
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / hex_of(index["manifests"][0]["digest"])).read_text())
    config = json.loads((blobs / hex_of(manifest["config"]["digest"])).read_text())
    raw = tarfile.TarInfo("etc/..")
    raw.type = tarfile.DIRTYPE
    data = raw.tobuf(tarfile.PAX_FORMAT) + b"\0" * 1024
    gz = gzip.compress(data, mtime=0)
    manifest["layers"].append({"mediaType": manifest["layers"][0]["mediaType"], "digest": put(blobs, gz),
                               "size": len(gz)})  # fmt: skip
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(data).hexdigest())
    manifest["config"]["digest"] = put(blobs, json.dumps(config).encode())
    manifest["config"]["size"] = len(json.dumps(config).encode())
    index["manifests"][0]["digest"] = put(blobs, json.dumps(manifest).encode())
    index["manifests"][0]["size"] = len(json.dumps(manifest).encode())
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(BuildError, match=r"has a member 'etc/\.\.' that is not a path in a tree"):
        make(tree, tmp_path / "b", "s2", parent=layout)


def put(blobs: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return "sha256:" + digest


def _rewritten(layout: Path, edit_manifest: Any, edit_config: Any) -> None:
    """The layout's manifest and config edited, every digest made to match again."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / hex_of(index["manifests"][0]["digest"])).read_text())
    config = json.loads((blobs / hex_of(manifest["config"]["digest"])).read_text())
    edit_manifest(manifest)
    edit_config(config)
    manifest["config"]["digest"] = put(blobs, json.dumps(config).encode())
    index["manifests"][0]["digest"] = put(blobs, json.dumps(manifest).encode())
    (layout / "index.json").write_text(json.dumps(index))


def _nothing(doc: dict[str, Any]) -> None:
    pass


@pytest.mark.parametrize(
    ("edit_manifest", "edit_config"),
    [
        (_nothing, lambda c: c.update(history=[5])),
        (_nothing, lambda c: c.update(history=7)),
        (lambda m: m["layers"][0].update(size="big"), _nothing),
        (lambda m: m["layers"][0].pop("size"), _nothing),
        (_nothing, lambda c: c["rootfs"]["diff_ids"].__setitem__(0, 5)),
    ],
    ids=["history-entry-int", "history-int", "size-text", "no-size", "diff-id-int"],
)
def test_a_parent_with_malformed_metadata_is_refused_in_one_line(
    tmp_path: Path, edit_manifest: Any, edit_config: Any
) -> None:
    """The parent's digests match (whoever edited it made them match): its history, layer sizes and
    diff_ids are still checked, one line (AttributeError, TypeError, KeyError, ValueError tracebacks)."""
    tree = os_like(tmp_path / "t")
    make(tree, tmp_path / "a", "s1")
    _rewritten(tmp_path / "a" / "img.oci", edit_manifest, edit_config)
    with pytest.raises(BuildError, match=r"^--parent .*img\.oci: ") as e:
        make(tree, tmp_path / "b", "s2", parent=tmp_path / "a" / "img.oci")
    assert "\n" not in e.value.message
    assert not (tmp_path / "b" / "img.oci").exists()
