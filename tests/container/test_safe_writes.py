"""Every consumer that writes a tree, on a published repository with the dangerous cases (setuid,
xattrs, device node, socket, FIFO, hard links, a read-only directory), a canary folder beside the
output: ``cvmfs export DIR``, ``cvmfs export X.tar``, ``container`` (oci, docker-archive, apptainer).
Nothing beside the output changes; devices are opt-in; setuid/setgid and xattrs are kept and listed."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository, publish_tree
from cernvm_build.tree import SOCKET_REASON
from cernvm_build.treewrite import DEVICES_REASON
from tests.container.profiles import local_profile

FQRN = "safe.example.test"
ROOT = os.geteuid() == 0
T = 1_500_000_000


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(stratum, public key, profile)"""
    base = tmp_path_factory.mktemp("safe")
    tree = base / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "su").write_bytes(b"\x7fELF" + bytes(200))
    os.chmod(tree / "bin" / "su", 0o4755)
    (tree / "bin" / "tool").write_text("#!/bin/sh\n")
    os.link(tree / "bin" / "tool", tree / "bin" / "tool-link")
    (tree / "etc").mkdir()
    (tree / "etc" / "tagged").write_text("x\n")
    os.setxattr(tree / "etc" / "tagged", "user.origin", b"frozen")
    os.mkfifo(tree / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tree / "control.sock"))
    s.close()
    if ROOT:
        (tree / "dev").mkdir()
        os.mknod(tree / "dev" / "null", 0o20666, os.makedev(1, 3))
    (tree / "ro").mkdir()
    (tree / "ro" / "inside").write_text("in\n")
    os.chmod(tree / "ro", 0o555)
    keys = generate_keys(FQRN)
    keys.save(base / "keys")
    create_repository(base / "stratum", FQRN, keys)
    publish_tree(base / "stratum", FQRN, keys, tree, tag="frozen")
    prof = base / "safe.yaml"
    pub = base / "keys" / f"{FQRN}.pub"
    prof.write_text(local_profile(FQRN, pub, branch="safe", tag="frozen", description="dangerous files"))
    return base / "stratum", pub, prof


def _stat(p: Path) -> tuple[int, int, int]:
    st = os.lstat(p)
    return st.st_mode, st.st_mtime_ns, st.st_ctime_ns


@pytest.fixture
def beside(tmp_path: Path) -> Path:
    """A folder holding a canary folder; outputs go beside the canary. The canary and its contents
    must not change, nor the parent's mode."""
    parent = tmp_path / "parent"
    (parent / "canary").mkdir(parents=True)
    (parent / "canary" / "passwd").write_text("root:x:0:0\n")
    os.utime(parent / "canary" / "passwd", (T, T))
    os.utime(parent / "canary", (T, T))
    os.chmod(parent, 0o751)
    before = [_stat(parent / "canary"), _stat(parent / "canary" / "passwd")]
    yield parent
    assert [_stat(parent / "canary"), _stat(parent / "canary" / "passwd")] == before
    assert os.listdir(parent / "canary") == ["passwd"]
    assert stat.S_IMODE(os.stat(parent).st_mode) == 0o751


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[dict, str]:  # type: ignore[type-arg]
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "Traceback" not in out.err
    return json.loads(out.out), out.err


def expected_skips(devices_created: bool) -> list[dict[str, str]]:
    skips = [{"path": "control.sock", "reason": SOCKET_REASON}]
    if ROOT and not devices_created:
        skips.append({"path": "dev/null", "reason": DEVICES_REASON})
    return skips


def test_export_directory(
    repo: tuple[Path, Path, Path], beside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stratum, pub, _ = repo
    dest = beside / "out"
    doc, err = run(capsys, "cvmfs", "export", str(stratum), str(dest), "--key", str(pub), "--json")
    assert doc["skipped"] == expected_skips(False) and "control.sock: skipped" in err
    assert doc["setid"] == [{"path": "bin/su", "mode": "4755"}] and doc["setid_count"] == 1
    assert doc["xattrs"] == [{"path": "etc/tagged", "names": ["user.origin"]}]
    assert stat.S_IMODE(os.stat(dest / "bin" / "su").st_mode) == 0o4755
    assert os.getxattr(dest / "etc" / "tagged", "user.origin") == b"frozen"
    assert os.stat(dest / "bin" / "tool").st_ino == os.stat(dest / "bin" / "tool-link").st_ino
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    assert not os.path.lexists(dest / "control.sock") and not os.path.lexists(dest / "dev" / "null")
    assert (
        stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o555 and (dest / "ro" / "inside").read_text() == "in\n"
    )
    assert sorted(os.listdir(beside)) == ["canary", "out"]  # no temporary left behind
    # the human summary counts them
    capsys.readouterr()
    assert main(["cvmfs", "export", str(stratum), str(beside / "human"), "--key", str(pub)]) == 0
    assert "1 setuid/setgid kept, 1 with xattrs kept" in capsys.readouterr().out


@pytest.mark.skipif(not ROOT, reason="device nodes need root")
def test_export_directory_with_devices(
    repo: tuple[Path, Path, Path], beside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stratum, pub, _ = repo
    dest = beside / "out"
    doc, _ = run(capsys, "cvmfs", "export", str(stratum), str(dest), "--key", str(pub), "--devices", "--json")
    assert doc["skipped"] == expected_skips(True)
    st = os.lstat(dest / "dev" / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def test_export_tar_skips_sockets_and_carries_devices(
    repo: tuple[Path, Path, Path], beside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stratum, pub, _ = repo
    dest = beside / "root.tar"
    doc, _ = run(capsys, "cvmfs", "export", str(stratum), str(dest), "--key", str(pub), "--json")
    assert doc["skipped"] == [{"path": "control.sock", "reason": SOCKET_REASON}]  # no FIFO stand-in
    with tarfile.open(dest) as tar:
        m = {x.name: x for x in tar.getmembers()}
    assert "control.sock" not in m and m["fifo"].isfifo()
    assert m["bin/su"].mode == 0o4755 and "SCHILY.xattr.user.origin" in m["etc/tagged"].pax_headers
    if ROOT:
        assert m["dev/null"].ischr()
    listing = subprocess.run(["tar", "-tf", str(dest)], capture_output=True, text=True, check=True).stdout
    assert "bin/tool-link" in listing.splitlines()


@pytest.mark.integration
@pytest.mark.parametrize("devices", [False, True] if ROOT else [False])
def test_container_formats(
    repo: tuple[Path, Path, Path], beside: Path, capsys: pytest.CaptureFixture[str], devices: bool
) -> None:
    stratum, pub, prof = repo
    out = beside / "out"
    extra = ["--devices"] if devices else []
    doc, _ = run(capsys, "container", str(prof), "--source", str(stratum), "--out", str(out), "--json",
                   "--format", "oci,docker-archive,apptainer", *extra)  # fmt: skip
    # the layer carries the device; only the sandbox without --devices leaves it out
    assert doc["skipped"] == expected_skips(devices)
    assert doc["setid"] == [{"path": "bin/su", "mode": "4755"}]
    assert doc["xattrs"] == [{"path": "etc/tagged", "names": ["user.origin"]}]
    sandbox = out / "safe.sandbox"
    assert stat.S_IMODE(os.stat(sandbox / "bin" / "su").st_mode) == 0o4755
    assert os.path.lexists(sandbox / "dev" / "null") == (ROOT and devices)
    assert sorted(os.listdir(beside)) == ["canary", "out"]
    members: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(out / "safe.docker.tar") as outer:
        for layer_name in (n for n in outer.getnames() if n.endswith("/layer.tar")):  # every layer
            inner = outer.extractfile(layer_name)
            assert inner is not None
            with tarfile.open(fileobj=inner) as layer:
                members.update((m.name, m) for m in layer.getmembers())
    assert "control.sock" not in members and members["fifo"].isfifo()
    assert ("dev/null" in members) == ROOT
    info = subprocess.run(["skopeo", "inspect", f"docker-archive:{out / 'safe.docker.tar'}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(info.stdout)["Labels"]["cvmfs.skipped"] == "1"
    for image in ("safe.oci", "safe.docker.tar", "safe.sandbox"):
        assert (
            main(["container", "verify", str(out / image), "--source", str(stratum), "--key", str(pub), "-q"])
            == 0
        )


def test_sandbox_scaffold_never_follows_the_tree_s_symlinks(beside: Path) -> None:
    """A tree whose ``.singularity.d``, ``tmp`` and ``singularity`` are symlinks to the canary: the
    tree wins those names (they stay symlinks), nothing is written through them."""
    from cernvm_build.container.build import BuildRequest, build
    from cernvm_build.container.image import ImageSpec
    from cernvm_build.container.source import LocalTree

    tree = beside.parent / "hostile"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "sh").write_text("#!/bin/sh\n")
    for name in (".singularity.d", "tmp", "singularity", "environment"):
        os.symlink(beside / "canary", tree / name)
    spec = ImageSpec(registry="r.example.test", repository="x/y", tag="t", created=T)
    out = beside / "out"
    res = build(
        BuildRequest(source=LocalTree(tree), spec=spec, formats=["apptainer"], out_dir=out, basename="h")
    )
    sandbox = out / "h.sandbox"
    for name in (".singularity.d", "tmp", "singularity", "environment"):
        assert os.readlink(sandbox / name) == str(beside / "canary")
    assert (sandbox / "proc").is_dir() and not (sandbox / "proc").is_symlink()  # added where absent
    assert res.artifacts[0].format == "apptainer"
