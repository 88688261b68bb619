"""Publishing into a CernVM-FS hub in DUCC's layout, read back with the reader."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cernvm_build.container.build import BuildRequest, build
from cernvm_build.container.hub import link_target, publisher
from cernvm_build.container.image import ImageSpec
from cernvm_build.container.origin import open_origin
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository
from cernvm_build.cvmfs.repository import SnapshotSpec, open_repository
from cernvm_build.errors import BuildError

from .test_cvmfs_source import FIXTURE, KEY, listing

HUB = "unpacked.example.test"
SPEC = ImageSpec("registry.example.test", "sft/slc4", "frozen", created=1764000000, entrypoint=("/bin/sh",))


def objects(stratum: Path) -> set[str]:
    return {str(p.relative_to(stratum)) for p in (stratum / "data").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("hub")
    keys = generate_keys(HUB)
    keys.save(base / "keys")
    create_repository(base / "stratum", HUB, keys)
    return base / "stratum", base / "keys"


def publish(hub: tuple[Path, Path], spec: ImageSpec, out: Path) -> dict[str, object]:
    stratum, keys = hub
    origin = open_origin([str(FIXTURE)], fqrn="fixture.cernvm.test", path="/", public_keys=[KEY],
                         snapshot=SnapshotSpec(tag="slc4-frozen"))  # fmt: skip
    try:
        req = BuildRequest(origin.tree, spec, ["cvmfs"], out, "img",
                           publish=publisher(stratum=stratum, fqrn=HUB, keys_dir=keys))  # fmt: skip
        res = build(req)
    finally:
        origin.close()
    return res.artifacts[0].meta


@pytest.mark.integration
def test_image_lands_in_ducc_layout_and_republishing_writes_nothing(
    hub: tuple[Path, Path], tmp_path: Path
) -> None:
    stratum, _ = hub
    meta = publish(hub, SPEC, tmp_path)
    assert meta["unchanged"] is False
    with open_repository(stratum, fqrn=HUB, public_keys=[(hub[1] / f"{HUB}.pub")]) as repo:
        link = repo.stat("/registry.example.test/sft/slc4:frozen")
        flat = str(meta["flat"])
        assert link.is_symlink and link.symlink == "../../" + flat.lstrip("/")
        # the layer, unpacked, is the repository tree plus the nested-catalog marker
        # the layers, unpacked, are the repository tree, each with its nested-catalog marker
        found: set[str] = set()
        for layerfs in map(str, meta["layers"]):  # type: ignore[call-overload]
            found |= {e.path[len(layerfs) :] for e in repo.walk(layerfs)} - {""}
            assert repo.stat(layerfs + "/.cvmfscatalog").is_file
        assert found == set(listing(1)) | {"/.cvmfscatalog"}
        # DUCC's chains: chain k holds layers 0..k applied in order, the last one the whole tree
        union: set[str] = set()
        for layerfs, chain in zip(map(str, meta["layers"]), map(str, meta["chains"]), strict=True):  # type: ignore[call-overload]
            union |= {e.path[len(layerfs) :] for e in repo.walk(layerfs)}
            assert {e.path[len(chain) :] for e in repo.walk(chain)} == union
        big = repo.stat(flat + "/opt/sw/big-data.txt")
        assert big.size == listing(1)["/opt/sw/big-data.txt"]["size"]
        assert repo.read_bytes(flat + "/etc/redhat-release").startswith(b"Scientific Linux")
        layer_dir = layerfs.rsplit("/", 1)[0]
        origins = json.loads(repo.read_bytes(layer_dir + "/.metadata/origin.json"))["origin"]
        layers = json.loads(repo.read_bytes(layer_dir + "/.metadata/layers.json"))
        assert layers[0]["compressed-diff-digest"] == "sha256:" + layer_dir.rsplit("/", 1)[1]
        # the flat root for Apptainer: tree + .singularity.d + /dev
        assert repo.stat(flat + "/.singularity.d/runscript").is_file
        assert repo.stat(flat + "/dev").is_dir
        assert repo.stat(flat + "/usr/bin/tool1").is_file
        marker = json.loads(repo.read_bytes("/.metadata/registry.example.test/sft/slc4:frozen/manifest.json"))
        assert origins == [marker["config"]["digest"]]
        assert flat.endswith(marker["config"]["digest"][7:])
        revision = repo.revision
    before = objects(stratum)
    published = (stratum / ".cvmfspublished").read_bytes()
    again = publish(hub, SPEC, tmp_path)
    assert again["unchanged"] is True and again["published"] == []
    assert (stratum / ".cvmfspublished").read_bytes() == published
    assert objects(stratum) == before
    assert again["revision"] == revision


@pytest.mark.integration
def test_second_image_shares_the_layer(hub: tuple[Path, Path], tmp_path: Path) -> None:
    stratum, _ = hub
    first = publish(hub, SPEC, tmp_path)
    other = replace(SPEC, tag="relabelled", labels={"org.opencontainers.image.title": "another"})
    meta = publish(hub, other, tmp_path)
    assert meta["layers"] == first["layers"]
    layer = str(first["layers"][0])  # type: ignore[index]
    published = [str(p) for p in meta["published"]]  # type: ignore[attr-defined]
    assert not any(p.endswith("/" + layer.split("/")[3]) for p in published)
    with open_repository(stratum, fqrn=HUB, public_keys=[(hub[1] / f"{HUB}.pub")]) as repo:
        layer_dir = layer.rsplit("/", 1)[0]
        origins = json.loads(repo.read_bytes(layer_dir + "/.metadata/origin.json"))["origin"]
        assert len(origins) == 2
        assert repo.stat("/registry.example.test/sft/slc4:frozen").is_symlink  # the first is kept
        assert repo.stat("/registry.example.test/sft/slc4:relabelled").is_symlink


def test_link_target_depth() -> None:
    class P:
        spec = ImageSpec("registry.hub.docker.com", "library/centos", "centos7", created=0)
        config_digest = "sha256:" + "ab" * 32

    assert link_target(P()) == "../../.flat/ab/" + "ab" * 32  # type: ignore[arg-type]


def test_hub_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    """pr19d finding 17: a hub whose folder does not exist either (`--hub-stratum ./hub/unpacked.cern.ch`
    before `cvmfs create`) was a FileNotFoundError traceback from the scratch folder beside it, after
    the whole image was read; and the hint's `cvmfs create FQRN STRATUM` is not create's syntax."""
    keys = generate_keys(HUB)
    keys.save(tmp_path / "keys")
    for stratum in (tmp_path / "nothing", tmp_path / "no" / "such" / HUB):
        with pytest.raises(BuildError, match="cannot open the hub repository") as e:
            publisher(stratum=stratum, fqrn=HUB, keys_dir=tmp_path / "keys")
        assert e.value.hint and f"cernvm-build cvmfs create {stratum} --fqrn {HUB} --keys DIR" in e.value.hint
    assert not (tmp_path / "no").exists()
