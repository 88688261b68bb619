"""Every output format, checked with the real tools (umoci, skopeo) and unpacked file for file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from cernvm_build.container.apptainer import SCAFFOLD
from cernvm_build.container.build import BuildRequest, build
from cernvm_build.container.image import ImageSpec
from cernvm_build.container.source import Entry, LocalTree
from cernvm_build.errors import BuildError

from .trees import describe, make_tree

SPEC = ImageSpec(
    registry="registry.example.test",
    repository="cernvm/slc4",
    tag="2026.11-1",
    created=1764000000,
    entrypoint=("/bin/sh", "-c"),
    cmd=("echo hello",),
    env={"PATH": "/usr/bin:/bin", "GREETING": 'it\'s "quoted" $HOME'},
    labels={"org.opencontainers.image.title": "SLC4 reference", "cvmfs.repository": "sft.example.test"},
)


def tool(*argv: str | Path) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv[0]} failed: {proc.stderr.strip()[-2000:]}"
    return proc.stdout


def unpack(image: str, dest: Path) -> Path:
    """Unpack with umoci as the real consumer would; returns the root file system."""
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    tool("umoci", "raw", "unpack", *rootless, "--image", image, dest)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("formats")
    tree = make_tree(base / "tree")
    out = base / "out"
    build(
        BuildRequest(
            source=LocalTree(tree),
            spec=SPEC,
            formats=["oci", "docker-archive", "apptainer", "thin"],
            out_dir=out,
            basename="slc4",
        )
    )
    return tree, out


@pytest.mark.integration
def test_umoci_unpacks_the_oci_layout_file_for_file(built: tuple[Path, Path], tmp_path: Path) -> None:
    tree, out = built
    rootfs = unpack(f"{out / 'slc4.oci'}:{SPEC.tag}", tmp_path / "rootfs")
    assert describe(rootfs) == describe(tree)


@pytest.mark.integration
def test_skopeo_reads_layout_archive_and_docker_archive(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = built
    for ref in (f"oci:{out / 'slc4.oci'}:{SPEC.tag}", f"oci-archive:{out / 'slc4.oci.tar'}"):
        info = json.loads(tool("skopeo", "inspect", ref))
        assert info["Labels"]["cvmfs.repository"] == "sft.example.test"
        assert info["Labels"]["cvmfs.mtimes"] == "clamped"
        assert info["Env"] == ["PATH=/usr/bin:/bin", 'GREETING=it\'s "quoted" $HOME']
        assert info["Created"] == "2025-11-24T16:00:00Z"
    config = json.loads(tool("skopeo", "inspect", "--config", f"docker-archive:{out / 'slc4.docker.tar'}"))
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c"]
    manifest = json.loads(tool("tar", "-xOf", out / "slc4.docker.tar", "manifest.json"))
    assert manifest[0]["RepoTags"] == [SPEC.reference, f"{SPEC.name}:latest"]


@pytest.mark.integration
def test_docker_archive_carries_the_same_tree(built: tuple[Path, Path], tmp_path: Path) -> None:
    tree, out = built
    # skopeo turns the archive back into an OCI layout; its layer must unpack to the tree
    tool("skopeo", "copy", f"docker-archive:{out / 'slc4.docker.tar'}", f"oci:{tmp_path / 'back'}:x")
    rootfs = unpack(f"{tmp_path / 'back'}:x", tmp_path / "rootfs")
    assert describe(rootfs) == describe(tree)
    # and skopeo can write a docker-archive from our layout
    tool("skopeo", "copy", f"oci:{out / 'slc4.oci'}:{SPEC.tag}", f"docker-archive:{tmp_path / 'd.tar'}")


@pytest.mark.integration
def test_same_inputs_give_byte_identical_outputs(built: tuple[Path, Path], tmp_path: Path) -> None:
    tree, out = built
    build(
        BuildRequest(
            source=LocalTree(tree),
            spec=SPEC,
            formats=["oci", "docker-archive", "thin"],
            out_dir=tmp_path,
            basename="slc4",
        )
    )
    for name in ("slc4.oci.tar", "slc4.docker.tar"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    for d in ("slc4.oci", "slc4.thin.oci"):
        files = sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(out / d) for p in (out / d).rglob("*") if p.is_file())
        for f in files:
            assert (tmp_path / d / f).read_bytes() == (out / d / f).read_bytes(), f


def test_apptainer_sandbox_is_the_tree_plus_singularity_d(built: tuple[Path, Path]) -> None:
    tree, out = built
    sandbox = out / "slc4.sandbox"
    added = SCAFFOLD - set(os.listdir(tree))  # mount points the tree already has stay its own
    assert describe(sandbox, ignore=frozenset(added)) == describe(tree)
    assert {"dev", "proc", "sys", ".singularity.d"} <= set(os.listdir(sandbox))
    sd = sandbox / ".singularity.d"
    env = (sd / "env" / "90-environment.sh").read_text()
    assert "export GREETING='it'\"'\"'s \"quoted\" $HOME'" in env
    # the environment script, sourced by a shell, gives back the exact value
    value = subprocess.run(
        ["sh", "-c", f'. {sd / "env" / "90-environment.sh"} && printf %s "$GREETING"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert value == SPEC.env["GREETING"]
    labels = json.loads((sd / "labels.json").read_text())
    assert labels["cvmfs.repository"] == "sft.example.test"
    assert os.access(sd / "runscript", os.X_OK)
    assert os.readlink(sandbox / "singularity") == ".singularity.d/runscript"
    for script in [sd / "runscript", *sorted((sd / "actions").iterdir())]:
        subprocess.run(["sh", "-n", script], check=True)


def test_thin_image_points_at_the_layer_in_the_hub(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = built
    index = json.loads((out / "slc4.oci" / "index.json").read_text())
    blobs = out / "slc4.oci" / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    layer_hex = manifest["layers"][0]["digest"][7:]
    tool("umoci", "raw", "unpack", *([] if os.geteuid() == 0 else ["--rootless"]),
         "--image", f"{out / 'slc4.thin.oci'}:{SPEC.tag}-thin", tmp_path / "thin")  # fmt: skip
    thin = json.loads((tmp_path / "thin" / "thin.json").read_text())
    assert thin["layers"] == [
        {"digest": layer_hex, "url": f"cvmfs://unpacked.cern.ch/.layers/{layer_hex[:2]}/{layer_hex}/layerfs"}
    ]
    assert thin["origin"] == SPEC.reference


def test_failed_build_leaves_old_outputs_and_no_half_written_ones(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "out"
    build(BuildRequest(source=LocalTree(tree), spec=SPEC, formats=["oci"], out_dir=out, basename="x"))
    before = (out / "x.oci.tar").read_bytes()

    class Broken(LocalTree):
        def open(self, entry: Entry):  # type: ignore[no-untyped-def]
            if entry.path == "usr/bin/su-like":
                raise BuildError("object missing")
            return super().open(entry)

    with pytest.raises(BuildError):
        build(
            BuildRequest(
                source=Broken(tree), spec=SPEC, formats=["oci", "docker-archive"], out_dir=out, basename="x"
            )
        )
    assert (out / "x.oci.tar").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["x.oci", "x.oci.tar"]


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="unknown container format 'sif'") as e:
        build(
            BuildRequest(
                source=LocalTree(tmp_path), spec=SPEC, formats=["sif"], out_dir=tmp_path, basename="x"
            )
        )
    assert e.value.hint and "oci" in e.value.hint


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="podman's vfs image mount needs root (CI runs as root)")
def test_podman_loads_both_archives_file_for_file(built: tuple[Path, Path], tmp_path: Path) -> None:
    tree, out = built
    runroot = Path(tempfile.mkdtemp(prefix="pm-"))  # podman wants a runroot under 50 characters
    podman = ["podman", "--root", str(tmp_path / "root"), "--runroot", str(runroot),
              "--storage-driver", "vfs"]  # fmt: skip
    try:
        for archive in ("slc4.docker.tar", "slc4.oci.tar"):
            loaded = tool(*podman, "load", "-i", out / archive)
            assert SPEC.reference.split("/", 1)[1] in loaded
            rootfs = Path(tool(*podman, "image", "mount", SPEC.reference).strip())
            assert describe(rootfs) == describe(tree), archive
            tool(*podman, "image", "unmount", SPEC.reference)
            tool(*podman, "rmi", SPEC.reference)
    finally:
        subprocess.run([*podman, "system", "reset", "--force"], capture_output=True)
        shutil.rmtree(runroot, ignore_errors=True)


def test_sandbox_artifact_hash_follows_the_tree(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", fifo=False)
    hashes = []
    for run in ("a", "b", "c"):
        if run == "c":
            (tree / "etc" / "empty.conf").write_text("changed")
        res = build(BuildRequest(LocalTree(tree), SPEC, ["apptainer"], tmp_path / run, "s"))
        hashes.append(res.artifacts[0].sha256)
    assert len(hashes[0]) == 64 and hashes[0] == hashes[1] != hashes[2]
