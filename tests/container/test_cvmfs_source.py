"""Containers from the repository written by the real CernVM-FS server tools, and verify."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.container.apptainer import SCAFFOLD
from cernvm_build.container.origin import open_origin
from cernvm_build.cvmfs.repository import SnapshotSpec
from cernvm_build.errors import BuildError, CvmfsError

from .trees import describe

# the repository written by the real server tools, as the reader's tests keep it in the project
FIXTURE = Path(__file__).resolve().parents[1] / "cvmfs" / "data" / "fixture.cernvm.test"
if not FIXTURE.is_dir():
    FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "cvmfs" / "fixture.cernvm.test"
KEY = FIXTURE / "keys" / "fixture.cernvm.test.pub"

PROFILE = """\
extends: base
description: "SLC4 from the fixture repository"
os: {{release: 4, distribution: SLC}}
cvmfs:
  repository: fixture.cernvm.test
  path: /
  servers: !replace [http://127.0.0.1:9/cvmfs/@fqrn@]
  public_keys: !replace [{key}]
  snapshot: {{tag: slc4-frozen}}
bootloader: {{branch: fixture, cmdline: [vsyscall=emulate]}}
container:
  formats: !replace [oci]
  entrypoint: [/bin/sh]
  env: {{LANG: C}}
"""


def listing(revision: int) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads(
        (FIXTURE / f"listing-revision-{revision}.json").read_text()
    )
    return data


def check_against_listing(rootfs: Path, revision: int) -> None:
    """The unpacked tree is the published one: every path, type, mode, content and link target."""
    expected = listing(revision)
    found = {"/" + p: v for p, v in describe(rootfs).items()}
    assert sorted(found) == sorted(expected)
    for path, want in expected.items():
        kind, perm, data, _ = found[path]
        if want["type"] == "file":
            assert kind == "file" and perm == int(str(want["mode"]), 8), path
            assert hashlib.sha1((rootfs / path[1:]).read_bytes()).hexdigest() == want["sha1"], path
        elif want["type"] == "symlink":
            assert (kind, data) == ("symlink", want["target"]), path
        else:
            assert kind == "d" and perm == int(str(want["mode"]), 8), path


@pytest.fixture(scope="module")
def fixture_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("fx")
    prof = base / "slc4fx.yaml"
    prof.write_text(PROFILE.format(key=KEY))
    out = base / "out"
    rc = main(["container", str(prof), "--source", str(FIXTURE), "--out", str(out), "-q",
               "--format", "oci,docker-archive,apptainer,thin"])  # fmt: skip
    assert rc == 0
    return prof, out


def test_listing_keys_describe_what_we_compare() -> None:
    entry = listing(1)["/usr/bin/abslink"]
    assert entry["type"] == "symlink" and "target" in entry


@pytest.mark.integration
def test_oci_from_the_real_repository_unpacks_file_for_file(
    fixture_image: tuple[Path, Path], tmp_path: Path
) -> None:
    _, out = fixture_image
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    subprocess.run(["umoci", "raw", "unpack", *rootless, "--image", f"{out / 'slc4fx.oci'}:slc4-frozen",
                    str(tmp_path / "root")], check=True, capture_output=True)  # fmt: skip
    check_against_listing(tmp_path / "root", 1)
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{out / 'slc4fx.oci.tar'}"],
                                     check=True, capture_output=True, text=True).stdout)  # fmt: skip
    labels = info["Labels"]
    assert labels["cvmfs.repository"] == "fixture.cernvm.test"
    assert labels["cvmfs.tag"] == "slc4-frozen"
    assert labels["cvmfs.revision"] == "1"
    assert len(labels["cvmfs.root_hash"]) == 40
    assert labels["org.opencontainers.image.source"] == "cvmfs://fixture.cernvm.test/"
    assert info["Env"][-1] == "LANG=C"


def test_sandbox_from_the_real_repository(fixture_image: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = fixture_image
    sandbox = out / "slc4fx.sandbox"
    # the sandbox is the listing plus Apptainer's additions; move those aside and compare the rest
    view = tmp_path / "view"
    shutil.copytree(sandbox, view, symlinks=True)
    tops = {p.split("/")[1] for p in listing(1)}
    for name in SCAFFOLD - tops:
        target = view / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
    check_against_listing(view, 1)


def test_chunked_big_file_is_whole_in_the_docker_archive(fixture_image: tuple[Path, Path]) -> None:
    _, out = fixture_image
    with tarfile.open(out / "slc4fx.docker.tar") as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        found = False
        for name in manifest[0]["Layers"]:  # the image has several layers: the one that has it
            layer = outer.extractfile(name)
            assert layer is not None
            with tarfile.open(fileobj=layer, mode="r|") as inner:
                for m in inner:
                    if m.name == "opt/sw/big-data.txt":
                        f = inner.extractfile(m)
                        assert f is not None
                        h = hashlib.sha1()
                        while block := f.read(1 << 20):
                            h.update(block)
                        assert h.hexdigest() == listing(1)["/opt/sw/big-data.txt"]["sha1"]
                        found = True
        if not found:
            pytest.fail("big-data.txt missing")


@pytest.mark.parametrize("name", ["slc4fx.oci", "slc4fx.oci.tar", "slc4fx.docker.tar", "slc4fx.sandbox"])
def test_verify_accepts_each_untouched_image(fixture_image: tuple[Path, Path], name: str) -> None:
    _, out = fixture_image
    assert (
        main(["container", "verify", str(out / name), "--source", str(FIXTURE), "--key", str(KEY), "-q"]) == 0
    )


def test_verify_names_each_tampered_file(
    fixture_image: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = fixture_image
    sandbox = tmp_path / "sb"
    shutil.copytree(out / "slc4fx.sandbox", sandbox, symlinks=True)
    (sandbox / "etc" / "redhat-release").write_text("Not the frozen release\n")
    (sandbox / "usr" / "bin" / "tool3").chmod(0o777)
    (sandbox / "usr" / "bin" / "alias1").unlink()
    os.symlink("tool2", sandbox / "usr" / "bin" / "alias1")
    (sandbox / "usr" / "bin" / "tool9").unlink()
    (sandbox / "etc" / "extra").write_text("added")
    (sandbox / "home").mkdir(exist_ok=True)
    (sandbox / "home" / "hidden").write_text("inside a mount point is still extra")
    capsys.readouterr()
    rc = main(["container", "verify", str(sandbox), "--source", str(FIXTURE), "--key", str(KEY), "--json"])
    assert rc == 6
    report = json.loads(capsys.readouterr().out)
    found = {(d["path"], d["what"]) for d in report["differences"]}
    assert found == {
        ("etc/redhat-release", "size"),
        ("etc/redhat-release", "content"),
        ("usr/bin/tool3", "mode"),
        ("usr/bin/alias1", "target"),
        ("usr/bin/tool9", "missing"),
        ("etc/extra", "extra"),
        ("home/hidden", "extra"),
    }
    assert report["origin"]["cvmfs.tag"] == "slc4-frozen"


def test_verify_catches_a_tampered_oci_layer(fixture_image: tuple[Path, Path], tmp_path: Path) -> None:
    """A layer rewritten with one changed file: the blob digest and the file are both reported."""
    import gzip

    _, out = fixture_image
    oci = tmp_path / "oci"
    shutil.copytree(out / "slc4fx.oci", oci)
    index = json.loads((oci / "index.json").read_text())
    blobs = oci / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    # the layer that carries /etc/redhat-release
    for layer in manifest["layers"]:
        blob = blobs / layer["digest"][7:]
        raw = bytearray(gzip.decompress(blob.read_bytes()))
        at = raw.find(b"Scientific Linux")
        if at > 0:
            break
    assert at > 0
    raw[at : at + 10] = b"Tampered!!"
    blob.write_bytes(gzip.compress(bytes(raw), mtime=0))
    from cernvm_build.container.verify import compare, read_image

    origin = open_origin([str(FIXTURE)], fqrn="fixture.cernvm.test", path="/", public_keys=[KEY],
                         snapshot=SnapshotSpec(tag="slc4-frozen"))  # fmt: skip
    try:
        report = compare(read_image(oci), origin.tree, name="oci")
    finally:
        origin.close()
    whats = {(d.path, d.what) for d in report.differences}
    assert ("etc/redhat-release", "content") in whats
    assert any(w == "blob digest" for _, w in whats)
    assert any(w == "diff_id" for _, w in whats)


def test_path_missing_from_the_repository_is_a_clear_error() -> None:
    with pytest.raises(
        BuildError, match=r"fixture.cernvm.test@slc4-frozen: /no/such/dir does not exist"
    ) as e:
        open_origin([str(FIXTURE)], fqrn="fixture.cernvm.test", path="/no/such/dir", public_keys=[KEY],
                    snapshot=SnapshotSpec(tag="slc4-frozen"))  # fmt: skip
    assert e.value.hint


def test_unknown_tag_is_a_clear_error(
    fixture_image: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prof, out = fixture_image
    with pytest.raises(CvmfsError, match="no-such-tag"):
        open_origin([str(FIXTURE)], fqrn="fixture.cernvm.test", path="/", public_keys=[KEY],
                    snapshot=SnapshotSpec(tag="no-such-tag"))  # fmt: skip
    rc = main(
        ["container", str(prof), "--source", str(FIXTURE), "--out", str(out / "x"), "--tag", "no-such-tag"]
    )
    assert rc == 5
    err = capsys.readouterr().err
    assert "no-such-tag" in err and "Traceback" not in err
    assert not (out / "x").exists() or not any((out / "x").iterdir())


def test_second_revision_differs_where_the_listing_says(tmp_path: Path) -> None:
    from cernvm_build.container.build import BuildRequest, build
    from cernvm_build.container.image import ImageSpec

    origin = open_origin([str(FIXTURE)], fqrn="fixture.cernvm.test", path="/", public_keys=[KEY],
                         snapshot=SnapshotSpec(tag="slc4-update"))  # fmt: skip
    try:
        spec = ImageSpec("localhost", "fx", "2", created=0)
        build(BuildRequest(origin.tree, spec, ["apptainer"], tmp_path, "rev2"))
    finally:
        origin.close()
    paths = {"/" + p for p in describe(tmp_path / "rev2.sandbox")}
    assert "/etc/new-in-rev2" in paths and "/usr/bin/tool5" not in paths
    assert set(listing(2)) <= paths


def test_verify_of_a_thin_image_says_what_to_verify(
    fixture_image: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = fixture_image
    assert main(["container", "verify", str(out / "slc4fx.thin.oci"), "--source", str(FIXTURE)]) == 7
    assert "a thin image holds no files" in capsys.readouterr().err


def test_verify_image_is_a_library_call_with_a_typed_result(
    fixture_image: tuple[Path, Path], tmp_path: Path
) -> None:
    """``container.provenance.verify_image``: what the CLI prints comes from this result."""
    from cernvm_build.container.provenance import verify_image
    from cernvm_build.errors import IntegrityError

    _, out = fixture_image
    seen: list[tuple[int, int]] = []
    result = verify_image(
        out / "slc4fx.sandbox", sources=[str(FIXTURE)], keys=[KEY], progress=lambda d, t: seen.append((d, t))
    )
    assert result.ok and result.signatures_checked and result.report.checked > 0
    assert result.snapshot.startswith("fixture.cernvm.test/@")
    assert seen and seen[-1][0] == seen[-1][1]  # every byte of every file compared
    result.raise_for_differences()  # nothing to raise

    sandbox = tmp_path / "sb"
    shutil.copytree(out / "slc4fx.sandbox", sandbox, symlinks=True)
    (sandbox / "etc" / "redhat-release").write_text("Not the frozen release\n")
    unsigned = verify_image(sandbox, sources=[str(FIXTURE)])  # no key given, none in the profile
    assert not unsigned.ok and not unsigned.signatures_checked
    with pytest.raises(IntegrityError, match="difference"):
        unsigned.raise_for_differences()
