"""Cases the fixture repository lacks, published with the toolkit's own publisher: hard links,
xattrs, fifos, device nodes and sockets (which a layer cannot carry), and kept mtimes."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository, publish_tree
from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.tree import SOCKET_REASON
from cernvm_build.treewrite import DEVICES_REASON
from tests.container.profiles import local_profile

FQRN = "cases.example.test"
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cases")
    tree = base / "tree" / "sw"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "prog").write_text("#!/bin/sh\necho prog\n")
    (tree / "bin" / "prog").chmod(0o755)
    os.link(tree / "bin" / "prog", tree / "bin" / "prog-link")
    (tree / "data.txt").write_text("with an xattr\n")
    os.setxattr(tree / "data.txt", "user.origin", b"frozen 2026")
    os.utime(tree / "data.txt", (1500000000, 1500000000))
    os.mkfifo(tree / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tree / "control.sock"))
    s.close()
    if ROOT:
        os.mknod(tree / "null", 0o20666, os.makedev(1, 3))
    keys = generate_keys(FQRN)
    keys.save(base / "keys")
    create_repository(base / "stratum", FQRN, keys)
    publish_tree(base / "stratum", FQRN, keys, base / "tree", tag="frozen")
    prof = base / "cases.yaml"
    prof.write_text(
        local_profile(
            FQRN,
            base / "keys" / f"{FQRN}.pub",
            branch="cases",
            tag="frozen",
            path="/sw",
            description="special cases",
        )
    )
    return base, prof


def build(repo: tuple[Path, Path], out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:  # type: ignore[type-arg]
    base, prof = repo
    capsys.readouterr()
    rc = main(["container", str(prof), "--source", str(base / "stratum"), "--out", str(out), "--json",
               "--format", "oci,apptainer", *extra])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc: dict = json.loads(captured.out)  # type: ignore[type-arg]
    doc["stderr"] = captured.err
    return doc


@pytest.mark.integration
def test_links_xattrs_and_specials_from_a_repository(
    repo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = build(repo, tmp_path / "out", capsys)
    # the socket cannot be carried: skipped, warned about, listed, and counted in a label; the
    # layer carries the device node (a tar is data) but the sandbox only creates it when asked
    want = [{"path": "control.sock", "reason": SOCKET_REASON}]
    if ROOT:
        want.append({"path": "null", "reason": DEVICES_REASON})
    assert doc["skipped"] == want
    assert not os.path.lexists(tmp_path / "out" / "cases.sandbox" / "null")
    assert "control.sock: skipped" in doc["stderr"]
    assert sum(layer["hardlinks"] for layer in doc["layers"]) == 1
    rootfs = tmp_path / "rootfs"
    subprocess.run(["umoci", "raw", "unpack", *([] if ROOT else ["--rootless"]), "--image",
                    f"{tmp_path / 'out' / 'cases.oci'}:frozen", str(rootfs)], check=True)  # fmt: skip
    prog, link = os.stat(rootfs / "bin" / "prog"), os.stat(rootfs / "bin" / "prog-link")
    assert (prog.st_ino, prog.st_nlink) == (link.st_ino, 2)
    assert (rootfs / "fifo").is_fifo()
    assert not (rootfs / "control.sock").exists()
    if ROOT:
        assert (rootfs / "null").is_char_device() and os.stat(rootfs / "null").st_rdev == os.makedev(1, 3)
        assert os.getxattr(rootfs / "data.txt", "user.origin") == b"frozen 2026"
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{tmp_path / 'out' / 'cases.oci'}:frozen"],
                                     check=True, capture_output=True, text=True).stdout)  # fmt: skip
    assert info["Labels"]["cvmfs.skipped"] == "1"
    assert info["Labels"]["cvmfs.path"] == "/sw"
    # verify knows the socket was never carried, and checks the rest
    key = str(repo[0] / "keys" / f"{FQRN}.pub")
    for image in ("cases.oci", "cases.sandbox"):
        argv = ["container", "verify", str(tmp_path / "out" / image), "--source", str(repo[0] / "stratum")]
        assert main([*argv, "--key", key, "-q"]) == 0


@pytest.mark.integration
def test_keep_mtimes_keeps_the_repository_s_and_verify_checks_them(
    repo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    build(repo, out, capsys, "--keep-mtimes")
    rootfs = tmp_path / "rootfs"
    subprocess.run(["umoci", "raw", "unpack", *([] if ROOT else ["--rootless"]), "--image",
                    f"{out / 'cases.oci'}:frozen", str(rootfs)], check=True)  # fmt: skip
    assert int(os.stat(rootfs / "data.txt").st_mtime) == 1500000000
    assert int(os.stat(out / "cases.sandbox" / "data.txt").st_mtime) == 1500000000
    # a sandbox whose file got a new mtime no longer matches a kept-mtime image
    os.utime(out / "cases.sandbox" / "data.txt", (1600000000, 1600000000))
    capsys.readouterr()
    rc = main(["container", "verify", str(out / "cases.sandbox"), "--source", str(repo[0] / "stratum"),
               "--key", str(repo[0] / "keys" / f"{FQRN}.pub"), "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert rc == 6
    assert [(d["path"], d["what"]) for d in report["differences"]] == [("data.txt", "mtime")]


def test_created_is_the_revisions_time_and_mtimes_are_clamped_to_it(
    repo: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The image is the snapshot: dated when that revision was published, whatever the build's
    SOURCE_DATE_EPOCH (the same snapshot gives the same image on any day); files keep their own
    mtimes, none later than that date (so that an unchanged layer is the same in the next snapshot)."""
    base, _ = repo
    with open_repository(base / "stratum", fqrn=FQRN, public_keys=[base / "keys" / f"{FQRN}.pub"]) as r:
        published = r.timestamp
    iso = dt.datetime.fromtimestamp(published, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    build(repo, tmp_path / "out", capsys)
    sandbox = tmp_path / "out" / "cases.sandbox"
    assert int(os.stat(sandbox / "data.txt").st_mtime) == 1500000000
    assert 1500000000 < int(os.stat(sandbox / "bin" / "prog").st_mtime) <= published
    oci = tmp_path / "out" / "cases.oci"
    blob = oci / "blobs" / "sha256"
    manifest = json.loads(
        (blob / json.loads((oci / "index.json").read_text())["manifests"][0]["digest"][7:]).read_text()
    )
    config = json.loads((blob / manifest["config"]["digest"][7:]).read_text())
    assert config["created"] == iso
    assert config["config"]["Labels"]["org.opencontainers.image.created"] == iso
