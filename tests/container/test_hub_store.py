"""The hub's ``.chains/`` (DUCC's chain ids) and ``podmanStore/`` (an additional image store that the
real podman runs an image from), for a multi-layer image of the demo OS."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.container.from_profile import HubOptions, build_profile
from cernvm_build.container.hub_store import big_data_name, chain_ids
from cernvm_build.container.materialize import materialize
from cernvm_build.container.source import CvmfsTree
from cernvm_build.context import BuildContext
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository
from cernvm_build.cvmfs.repository import SnapshotSpec, open_repository
from cernvm_build.demo.repository import publish_demo

from .podman import RUN, needs_podman, podman, store

__all__ = ["store"]  # the fixture

HUB = "unpacked.example.test"
KB = 1024


def test_chain_ids_follow_duccs_rule() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    first = "sha256:" + hashlib.sha256(a.encode()).hexdigest()
    assert chain_ids([a]) == [first]
    assert chain_ids([a, b]) == [first, "sha256:" + hashlib.sha256(f"{first} {b}".encode()).hexdigest()]
    assert chain_ids([b, a])[1] != chain_ids([a, b])[1]  # the order is part of a chain


def test_big_data_names_are_containers_storage_s() -> None:
    assert big_data_name("manifest") == "manifest"
    # what podman itself wrote for a config key (seen in a store made by `podman load`)
    key = "sha256:70b5ffbf0b5302dba098ed87810aa881448a044e18a28faf244267efc0c76436"
    assert big_data_name(key) == (
        "=c2hhMjU2OjcwYjVmZmJmMGI1MzAyZGJhMDk4ZWQ4NzgxMGFhODgxNDQ4YTA0NGUxOGEyOGZhZjI0NDI2N2VmYzBjNzY0MzY="
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object]]:
    base = tmp_path_factory.mktemp("hubstore")
    keys = generate_keys(HUB)
    keys.save(base / "keys")
    create_repository(base / "stratum", HUB, keys)
    repo = publish_demo(base / "repo", release="1")
    made = build_profile(
        profile.load("demo"),
        out_dir=base / "out",
        formats=["oci", "cvmfs"],
        sources=[str(repo.stratum)],
        keys=[repo.public_key],
        snapshot=SnapshotSpec(tag="demo-1"),
        layer_bytes=256 * KB,
        hub=HubOptions(fqrn=HUB, stratum=base / "stratum", keys_dir=base / "keys"),
        ctx=BuildContext(epoch=0),
    )
    meta = next(a.meta for a in made.result.artifacts if a.format == "cvmfs")
    return base / "stratum", base / "keys" / f"{HUB}.pub", meta


@pytest.mark.integration
def test_chains_hold_the_layers_applied_in_order(published: tuple[Path, Path, dict[str, object]]) -> None:
    stratum, key, meta = published
    layers, chains = list(meta["layers"]), list(meta["chains"])  # type: ignore[call-overload]
    assert len(layers) == len(chains) > 1
    with open_repository(stratum, fqrn=HUB, public_keys=[key]) as repo:

        def paths(top: str) -> set[str]:
            return {e.path[len(top) :] for e in repo.walk(top)} - {"", "/.cvmfscatalog"}

        union: set[str] = set()
        for layer, chain in zip(layers, chains, strict=True):
            union |= paths(str(layer))
            assert paths(str(chain)) == union  # chain k: layers 0..k
        assert union <= paths(str(meta["flat"]))  # the flat root: the tree plus Apptainer's files


@pytest.mark.integration
@needs_podman
def test_podman_runs_the_image_from_the_podman_store(
    published: tuple[Path, Path, dict[str, object]], tmp_path: Path, store: Path
) -> None:
    stratum, key, _ = published
    # the hub as a client sees it, read-only (here written out by the reader); podman uses its
    # /podmanStore, whose layer links to the image's flat root in the same repository
    hub = tmp_path / "hub"
    hub.mkdir()
    with open_repository(stratum, fqrn=HUB, public_keys=[key]) as repo:
        materialize(CvmfsTree(repo, "/"), hub, mtime=None)
    ro = hub / "podmanStore"
    images = json.loads((ro / "overlay-images" / "images.json").read_text())
    names = [n for i in images for n in i["names"]]
    assert "localhost/cernvm/demo:demo-1" in names, names
    ro.chmod(0o555)
    done = podman(
        store,
        "--storage-driver=overlay",
        "--storage-opt",
        f"additionalimagestore={ro}",
        *RUN,
        "localhost/cernvm/demo:demo-1",
        "cat",
        "/etc/os-release",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('NAME="CernVM demo OS"\n')
    # nothing was pulled into the test's own store: the image was used where it is
    listed = podman(
        store,
        "--storage-driver=overlay",
        "--storage-opt",
        f"additionalimagestore={ro}",
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ReadOnly}}",
    )
    assert "true" in listed.stdout, listed.stdout


def test_merged_keeps_going_over_a_damaged_image_list() -> None:
    """images.json is read back from the hub: entries of another shape are dropped, not a TypeError."""
    from cernvm_build.container.hub_store import merged

    existing = [{"id": "a", "names": 5}, {"id": "b", "names": ["x:1", 7, "y:1"]}, "junk"]
    out = json.loads(merged(existing, {"id": "c", "names": ["y:1"]}, names=True))
    assert out == [{"id": "a", "names": []}, {"id": "b", "names": ["x:1"]}, {"id": "c", "names": ["y:1"]}]
