"""The reference containers run: podman starts the demo profile's image and the command's output and
exit code are the tree's (see ``podman.py`` for the configuration that works on this machine)."""

from __future__ import annotations

import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.container.from_profile import ProfileBuild, build_profile
from cernvm_build.context import BuildContext
from cernvm_build.cvmfs.repository import SnapshotSpec
from cernvm_build.demo.repository import DemoRepository

from .podman import needs_podman, run, store

__all__ = ["store"]  # the fixture

pytestmark = pytest.mark.integration


@dataclass
class Demo:
    repo: DemoRepository
    made: ProfileBuild
    out: Path


def build_demo(repo: DemoRepository, out: Path, tag: str, formats: list[str]) -> ProfileBuild:
    return build_profile(
        profile.load("demo"),
        out_dir=out,
        formats=formats,
        sources=[str(repo.stratum)],
        keys=[repo.public_key],
        snapshot=SnapshotSpec(tag=tag),
        ctx=BuildContext(epoch=0),
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_repo: DemoRepository) -> Demo:
    root = tmp_path_factory.mktemp("demo")
    repo = demo_repo
    out = root / "out"
    made = build_demo(repo, out, "demo-1", ["oci", "docker-archive", "apptainer"])
    return Demo(repo, made, out)


def config_of(oci: Path) -> dict[str, object]:
    index = json.loads((oci / "index.json").read_text())
    blobs = oci / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    cfg: dict[str, object] = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
    return cfg


def test_demo_image_has_no_entrypoint_and_the_trees_shell_as_command(demo: Demo) -> None:
    cfg = config_of(demo.out / "demo.oci")["config"]
    assert isinstance(cfg, dict)
    assert "Entrypoint" not in cfg
    assert cfg["Cmd"] == ["/bin/sh"]  # /bin -> usr/bin, usr/bin/sh -> busybox: followed in the tree


@needs_podman
@pytest.mark.parametrize("fmt", ["oci-archive", "docker-archive"])
def test_podman_runs_the_command_in_the_demo_tree(demo: Demo, fmt: str, store: Path) -> None:
    path = demo.out / ("demo.oci.tar" if fmt == "oci-archive" else "demo.docker.tar")
    done = run(store, f"{fmt}:{path}", "cat", "/etc/os-release")
    assert done.returncode == 0, done.stderr
    assert done.stdout == 'NAME="CernVM demo OS"\nID=cernvm-demo\nID_LIKE=cernvm\nVERSION_ID="1"\n' \
        'PRETTY_NAME="CernVM demo OS 1"\nHOME_URL="https://cvmfs.io/"\n'  # fmt: skip


@needs_podman
def test_podman_runs_the_default_command_and_passes_exit_codes(demo: Demo, store: Path) -> None:
    image = f"oci-archive:{demo.out / 'demo.oci.tar'}"
    done = run(store, image, "sh", "-c", "echo $CERNVM_PLATFORM; exit 7")
    assert (done.returncode, done.stdout) == (7, "demo\n")
    # no arguments: the default command, /bin/sh, reads its script from stdin (empty: exits 0)
    assert run(store, image).returncode == 0


def test_profile_entrypoint_and_cmd_are_the_images(demo: Demo, tmp_path: Path) -> None:
    prof = tmp_path / "p.yaml"
    prof.write_text("extends: demo\ncontainer: {entrypoint: [/bin/echo], cmd: [hello]}\n")
    made = build_profile(
        profile.load(str(prof)),
        out_dir=tmp_path / "out",
        formats=["oci", "apptainer"],
        sources=[str(demo.repo.stratum)],
        keys=[demo.repo.public_key],
        snapshot=SnapshotSpec(tag="demo-1"),
        ctx=BuildContext(epoch=0),
    )
    cfg = config_of(tmp_path / "out" / "p.oci")["config"]
    assert isinstance(cfg, dict)
    assert (cfg["Entrypoint"], cfg["Cmd"]) == (["/bin/echo"], ["hello"])
    assert made.spec.entrypoint == ("/bin/echo",)
    runscript = (tmp_path / "out" / "p.sandbox" / ".singularity.d" / "runscript").read_text()
    assert "exec /bin/echo hello" in runscript


def test_identity_is_the_snapshots_tag_and_time(demo: Demo, tmp_path: Path) -> None:
    from cernvm_build.cvmfs.repository import open_repository

    with open_repository(demo.repo.stratum, fqrn=demo.repo.fqrn, public_keys=[demo.repo.public_key]) as r:
        published = r.timestamp
    assert published > 86400 * 365 * 50  # a real date, not 1970
    oci = demo.out / "demo.oci"
    index = json.loads((oci / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == ["demo-1", "latest"]
    assert demo.made.spec.reference == "localhost/cernvm/demo:demo-1"
    cfg = config_of(oci)
    assert cfg["created"] == demo.made.spec.created_iso and demo.made.spec.created == published
    labels = cfg["config"]["Labels"]  # type: ignore[index]
    assert labels["cvmfs.tag"] == "demo-1"
    assert labels["org.opencontainers.image.revision"] == demo.repo.root_hash
    # the consumers find it by either name
    for tag in ("demo-1", "latest"):
        subprocess.run(["umoci", "unpack", "--image", f"{oci}:{tag}", str(tmp_path / tag)], check=True,
                       capture_output=True)  # fmt: skip
        assert (tmp_path / tag / "rootfs" / "etc" / "os-release").read_text().startswith('NAME="CernVM demo')
    with tarfile.open(demo.out / "demo.docker.tar") as t:
        f = t.extractfile("manifest.json")
        assert f is not None
        assert json.loads(f.read())[0]["RepoTags"] == [
            "localhost/cernvm/demo:demo-1",
            "localhost/cernvm/demo:latest",
        ]


def test_a_snapshot_opened_by_root_hash_keeps_the_tag_it_was_found_by(demo: Demo, tmp_path: Path) -> None:
    made = build_profile(
        profile.load("demo"),
        out_dir=tmp_path,
        formats=["oci"],
        sources=[str(demo.repo.stratum)],
        keys=[demo.repo.public_key],
        snapshot=SnapshotSpec(root_hash=demo.repo.root_hash),
        snapshot_tag="demo-1",  # what a release's index and notes call it
        ctx=BuildContext(epoch=0),
    )
    assert made.spec.tag == "demo-1" and made.spec.labels["cvmfs.tag"] == "demo-1"
    untagged = build_profile(
        profile.load("demo"),
        out_dir=tmp_path / "r",
        formats=["oci"],
        sources=[str(demo.repo.stratum)],
        keys=[demo.repo.public_key],
        snapshot=SnapshotSpec(root_hash=demo.repo.root_hash),
        ctx=BuildContext(epoch=0),
    )
    assert untagged.spec.tag == f"r{demo.repo.revision}"
