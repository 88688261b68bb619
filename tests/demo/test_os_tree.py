"""The demo OS tree: built from verified Debian packages, runnable, and applying user data safely."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cernvm_build.demo.os_tree import build_demo_os

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_os(tmp_path_factory.mktemp("demo") / "os").root


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            h.update(f"{p.relative_to(root)} {st.st_mode:o} {int(st.st_mtime)}".encode())
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            elif p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def test_tree_has_init_shell_and_sshd_that_run(tree: Path) -> None:
    assert os.readlink(tree / "sbin") == "usr/sbin"
    assert (tree / "usr/sbin/init").resolve() == (tree / "usr/bin/busybox").resolve()
    assert 'VERSION_ID="1"' in (tree / "etc/os-release").read_text()
    out = subprocess.run(["chroot", tree, "/usr/sbin/dropbear", "-V"], capture_output=True, text=True)
    assert "Dropbear v" in out.stdout + out.stderr
    sh = subprocess.run(["chroot", tree, "/bin/sh", "-c", "echo $((6*7))"], capture_output=True, text=True)
    assert sh.stdout.strip() == "42"
    # No password anywhere: accounts are key-only.
    for line in (tree / "etc/shadow").read_text().splitlines():
        assert line.split(":")[1] == "*"


def test_same_packages_give_the_same_tree(tree: Path, tmp_path: Path) -> None:
    again = build_demo_os(tmp_path / "os").root
    assert _digest(again) == _digest(tree)


def test_the_builders_umask_makes_no_other_tree(tree: Path, tmp_path: Path) -> None:
    # umask 077 made a 0700 /usr/bin and a 0600 /etc/os-release: another published tree, and one the
    # guest's own user could not run
    old = os.umask(0o077)
    try:
        again = build_demo_os(tmp_path / "os").root
    finally:
        os.umask(old)
    assert _digest(again) == _digest(tree)
    assert (again / "usr/bin").stat().st_mode & 0o7777 == 0o755
    assert (again / "etc/os-release").stat().st_mode & 0o7777 == 0o644
    assert (again / "etc/shadow").stat().st_mode & 0o7777 == 0o600


def _apply(tree: Path, userdata: str, tmp_path: Path) -> Path:
    ud = tmp_path / "user-data"
    ud.write_text(userdata)
    out = tmp_path / "out"
    out.mkdir()
    awk = tree / "usr/libexec/demo/apply-user-data.awk"
    subprocess.run([tree / "usr/bin/busybox", "awk", "-v", f"out={out}", "-f", awk, ud], check=True)
    return out


def test_user_data_in_mime_multipart_is_applied(tree: Path, tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    indented = "".join(f"    {line}\n" for line in pem.splitlines())
    userdata = (
        'Content-Type: multipart/mixed; boundary="XYZ"\nMIME-Version: 1.0\n\n'
        "--XYZ\nContent-Type: text/ucernvm\n\n[ucernvm-begin]\ncvmfs_tag=trunk\n[ucernvm-end]\n"
        "--XYZ\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: analysis-1\n"
        "ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE user@host\n"
        f"ssh_keys:\n  ed25519_private: |\n{indented}  ed25519_public: ssh-ed25519 AAAA x\n"
        "--XYZ--\n"
    )
    out = _apply(tree, userdata, tmp_path)
    assert (out / "hostname").read_text() == "analysis-1\n"
    assert (out / "authorized_keys").read_text() == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE user@host\n"
    assert (out / "hostkey_ed25519").read_text() == pem if pem.endswith("\n") else pem + "\n"
    # The guest's dropbear accepts the host key launch generated, so ssh can pin it.
    inside = tree / "run/hk"
    inside.write_text((out / "hostkey_ed25519").read_text())
    conv = subprocess.run(
        ["chroot", tree, "/usr/bin/dropbearconvert", "openssh", "dropbear", "/run/hk", "/run/hk.db"],
        capture_output=True,
        text=True,
    )
    assert conv.returncode == 0, conv.stderr
    pub = subprocess.run(
        ["chroot", tree, "/usr/bin/dropbearkey", "-y", "-f", "/run/hk.db"], capture_output=True
    )
    expected = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert expected.split()[1] in pub.stdout
    for p in (inside, tree / "run/hk.db"):
        p.unlink()


def test_hostile_values_stay_data(tree: Path, tmp_path: Path) -> None:
    out = _apply(
        tree,
        "#cloud-config\nhostname: $(reboot)\nssh_authorized_keys:\n  - ; rm -rf /\n"
        "ssh_keys:\n  ../../etc/passwd_private: |\n    evil\n",
        tmp_path,
    )
    assert sorted(p.name for p in out.iterdir()) == []
