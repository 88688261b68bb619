"""``container verify`` (and ``--parent``, which reads the parent the same way) of a hostile OCI layout
or docker-archive: every malformed index, manifest or config is one line naming the image and exit 7,
never a traceback (a RecursionError, a TypeError, a FileNotFoundError) or a file read outside the
image (a digest holding ``../``; one naming /dev/zero was read until memory ran out)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cli.main import main
from cernvm_build.container.verify import MAX_JSON
from tests.support import run_python

HEX = "cd" * 32
CONFIG = json.dumps({"rootfs": {"diff_ids": [f"sha256:{HEX}"]}}).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest(layers: Any, config: bytes = CONFIG) -> bytes:
    return json.dumps({"schemaVersion": 2, "config": {"digest": _digest(config)}, "layers": layers}).encode()


def _layout(root: Path, *, index: bytes | None = None, manifest: bytes = b"", config: bytes = CONFIG) -> Path:
    blobs = root / "img.oci" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "img.oci" / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for data in (manifest, config):
        (blobs / _digest(data)[7:]).write_bytes(data)
    if index is None:
        index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": _digest(manifest)}]}).encode()
    (root / "img.oci" / "index.json").write_bytes(index)
    return root / "img.oci"


def _index_of(digest: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "manifests": [{"digest": digest}]}).encode()


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda r: _layout(r, index=b"[" * 100_000), "index.json is nested too deeply"),
        (lambda r: _layout(r, index=b" " * MAX_JSON + _index_of(HEX)), "index.json is over"),
        (
            lambda r: _layout(r, index=_index_of("sha256:../../../outside.json")),
            "the manifest's digest 'sha256:../../../outside.json' is not sha256:<hex>",
        ),
        (lambda r: _layout(r, index=_index_of("abc")), "the manifest's digest 'abc' is not sha256:<hex>"),
        (lambda r: _layout(r, manifest=_manifest(["x"])), "malformed OCI metadata"),
        (lambda r: _layout(r, manifest=_manifest(5)), "the layers or the diff_ids are not a list"),
        (
            lambda r: _layout(r, manifest=_manifest([{"digest": "md5:abc"}])),
            "the layer's digest 'md5:abc' is not sha256:<hex>",
        ),
        (
            lambda r: _layout(r, manifest=_manifest([{"digest": f"sha256:{HEX}"}])),
            f"blobs/sha256/{HEX} cannot be read: No such file or directory",
        ),
        (
            lambda r: _layout(r, manifest=_manifest([], b"[" * 100_000), config=b"[" * 100_000),
            "(config) is nested too deeply",
        ),
        (
            lambda r: _layout(r, manifest=_manifest([], b"[1]"), config=b"[1]"),
            "malformed OCI metadata",
        ),
    ],
    ids=[
        "nested-index",
        "huge-index",
        "digest-out",
        "digest-no-algorithm",
        "layer-not-object",
        "layers-not-list",
        "layer-md5",
        "layer-missing",
        "nested-config",
        "config-list",
    ],
)
def test_a_hostile_oci_layout_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, said: str
) -> None:
    (tmp_path / "outside.json").write_bytes(_manifest([]))
    image = make(tmp_path)
    assert main(["container", "verify", str(image)]) == 7
    err = capsys.readouterr().err
    assert said in err and f"error: {image}: " in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 2  # the error and its hint


def _docker_archive(path: Path, manifest: Any, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as t:
        for name, data in {"manifest.json": json.dumps(manifest).encode(), **members}.items():
            m = tarfile.TarInfo(name)
            m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("manifest", "members", "said"),
    [
        ([{"Config": 5, "Layers": []}], {}, "Config is not a name"),
        ([{"Config": "c.json", "Layers": [7]}], {"c.json": CONFIG}, "a layer is not a name"),
        ([{"Config": "c.json", "Layers": []}], {"c.json": b"[" * 100_000}, "c.json is nested too deeply"),
        ([{"Config": "c.json", "Layers": []}], {"c.json": b"[]"}, "malformed docker-archive metadata"),
    ],
    ids=["config-int", "layer-int", "nested-config", "config-list"],
)
def test_a_hostile_docker_archive_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: Any, members: dict[str, bytes], said: str
) -> None:
    image = _docker_archive(tmp_path / "img.docker.tar", manifest, members)
    assert main(["container", "verify", str(image)]) == 7
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        (b"[1, 2]", "labels.json is not an object of text labels"),  # AttributeError
        (b"[" * 100_000, "labels.json is nested too deeply"),  # RecursionError
        (b'{"cvmfs.server": 5}', "labels.json is not an object of text labels"),
        (b" " * MAX_JSON + b"{}", "labels.json is over"),
        (None, "labels.json cannot be read: No such file or directory"),
    ],
    ids=["list", "nested", "number", "huge", "missing"],
)
def test_a_hostile_sandbox_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], labels: bytes | None, said: str
) -> None:
    image = tmp_path / "img.sandbox"
    (image / ".singularity.d").mkdir(parents=True)
    if labels is not None:
        (image / ".singularity.d" / "labels.json").write_bytes(labels)
    assert main(["container", "verify", str(image)]) == 7
    err = capsys.readouterr().err
    assert f"error: {image}: .singularity.d/{said}" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("fifo", "argv"),
    [
        ("img.oci/index.json", ["container", "verify"]),
        (f"img.oci/blobs/sha256/{HEX}", ["container", "verify"]),
        ("img.sandbox/.singularity.d/labels.json", ["container", "verify"]),
        ("img.oci/index.json", ["container", "push", "--no-tls-verify"]),
    ],
    ids=["verify-index", "verify-layer", "verify-sandbox", "push-index"],
)
def test_a_fifo_in_an_image_is_refused_not_waited_on(tmp_path: Path, fifo: str, argv: list[str]) -> None:
    """A FIFO where a file of the image should be (an untrusted layout unpacked as it came) was opened
    and waited on for ever."""
    _layout(tmp_path, manifest=_manifest([{"digest": f"sha256:{HEX}"}]))
    (tmp_path / "img.sandbox" / ".singularity.d").mkdir(parents=True)
    (tmp_path / fifo).unlink(missing_ok=True)
    os.mkfifo(tmp_path / fifo)
    image = tmp_path / fifo.split("/")[0]
    extra = ["127.0.0.1:9/x/y:1"] if "push" in argv else []
    words = [*argv[:2], str(image), *extra, *argv[2:]]
    code = f"from cernvm_build.cli.main import main; raise SystemExit(main({words!r}))"
    proc = run_python(code, blocked=f"{' '.join(argv[:2])} waited on the FIFO {fifo}", timeout=30)
    assert proc.returncode == 7 and "not a regular file" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("links", "member"),
    [
        ({"index.json": "/etc/passwd"}, "index.json"),  # a symbolic link to no member: KeyError
        ({"index.json": "a", "a": "index.json"}, "index.json"),  # a loop: RecursionError
        ({"manifest.json": "../../etc/passwd"}, "manifest.json"),
    ],
    ids=["oci-out", "oci-loop", "docker-out"],
)
def test_an_archive_member_linking_to_no_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], links: dict[str, str], member: str
) -> None:
    """pr21 N6: tarfile follows a link member to the member it names; to none, or in a loop, it was
    a KeyError or RecursionError traceback."""
    image = tmp_path / "img.tar"
    with tarfile.open(image, "w") as t:
        if "index.json" in links:
            m = tarfile.TarInfo("oci-layout")
            m.size = 2
            t.addfile(m, io.BytesIO(b"{}"))
        for name, target in links.items():
            m = tarfile.TarInfo(name)
            m.type, m.linkname = tarfile.SYMTYPE, target
            t.addfile(m)
    assert main(["container", "verify", str(image)]) == 7
    err = capsys.readouterr().err
    assert f"error: {image}: {member} links to no file of the archive" in err and "Traceback" not in err, err


def test_an_image_that_is_a_device_is_named_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    """pr21 N15: ``container verify /dev/null`` said 'image does not exist: /dev/null'."""
    assert main(["container", "verify", "/dev/null"]) == 7
    assert "error: /dev/null: is neither a folder nor a regular file" in capsys.readouterr().err


def test_an_image_of_more_layers_than_docker_takes_is_refused_before_any_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr21 N18: the layer count was not bounded: one blob listed 100,000 times (a manifest of 4 MB)
    was read and hashed 100,000 times."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        m = tarfile.TarInfo("f")
        m.size = 1 << 20
        t.addfile(m, io.BytesIO(bytes(m.size)))
    diff = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps({"rootfs": {"diff_ids": [diff] * 1000}}).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": cfg_name, "Layers": ["l.tar"] * 1000}]
    image = _docker_archive(
        tmp_path / "img.docker.tar", manifest, {cfg_name: config, "l.tar": layer.getvalue()}
    )
    assert main(["container", "verify", str(image)]) == 7
    assert f"error: {image}: has 1000 layers (an image has at most 127)" in capsys.readouterr().err
