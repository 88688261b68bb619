"""Acceptance (issue 13): the Debian 12 tree that cernvm-build makes boots through μCernVM as a real
systemd OS, driven only through ``cernvm-launch`` under a real libvirtd — one boot.

The tree is published into a demo-keyed repository served on 127.0.0.1, the debian12 image is built
against it; the instance: systemd reaches running (or degraded, with the failed units printed), the
login works with the host key pinned from the user data (cloud-init applied it), writes land on the
overlay, a module the initrd does not carry loads, and ``systemctl poweroff`` ends cleanly through the
initramfs hand-back (the console says the scratch disk is clean; no wait on the FUSE daemon).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from cernvm_build import profile
from cernvm_build.bootloader.kernel import fetch_debian_kernel
from cernvm_build.cli.launch import main
from cernvm_build.cvmfs.serve import Server, serve
from cernvm_build.demo.repository import publish_debian
from tests.support import launchhome

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(os.geteuid() != 0, reason="the Debian tree is built with dpkg in a chroot (root)"),
    # One boot of a systemd OS with cloud-init under TCG takes many minutes: more than the whole
    # suite's budget allows (make test stays within CI's limit). Run it on purpose.
    pytest.mark.skipif(
        not os.environ.get("CERNVM_DEBIAN_E2E"), reason="the Debian acceptance boot: set CERNVM_DEBIAN_E2E=1"
    ),
]
URI = "qemu:///system"
NAME = "e2e-debian"


@pytest.fixture(scope="module")
def debian_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Server]]:
    from cernvm_build.context import BuildContext
    from cernvm_build.image.build import build_image

    work = tmp_path_factory.mktemp("debian-e2e")
    prof = profile.load("debian12")
    kernel = fetch_debian_kernel(prof.kernel.package or "linux-image-cloud-amd64")
    publish_debian(work / "repo", kernel=kernel, offline=True)
    srv = serve(work / "repo")
    try:
        # no_timer_check: under TCG on a loaded host the IO-APIC timer check panics at random;
        # systemd's unit status on the console says where a failed boot stopped
        cmdline = [*prof.bootloader.cmdline, "no_timer_check", "systemd.show_status=1"]
        boot = dataclasses.replace(prof.bootloader, cmdline=cmdline)
        prof = dataclasses.replace(
            prof, cvmfs=dataclasses.replace(prof.cvmfs, servers=[srv.repo_url()]), bootloader=boot
        )
        build_image(prof, work / "images", formats=["iso"], ctx=BuildContext.from_environment())
        built = next((work / "images").glob("*.iso"))
        home = Path(tempfile.mkdtemp(prefix="debian-e2e-", dir="/var/tmp"))
        os.chmod(home, 0o711)
        image = home / built.name  # readable by the system daemon's qemu user
        shutil.copyfile(built, image)
        os.chmod(image, 0o644)
        yield image, srv
        shutil.rmtree(home, ignore_errors=True)
    finally:
        srv.close()


@pytest.fixture
def launch_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with launchhome.launch_home(monkeypatch, NAME) as home:
        yield home


def _say(capfd: pytest.CaptureFixture[str], text: str) -> None:
    with capfd.disabled():  # the figures and reasons belong in the run's output
        print(text, flush=True)


def _ssh(capfd: pytest.CaptureFixture[str], command: str) -> tuple[int, str]:
    capfd.readouterr()
    code = main(["--connect", URI, "ssh", "-n", NAME, "--", command])
    return code, capfd.readouterr().out


def test_debian_boots_as_a_systemd_os(
    debian_image: tuple[Path, Server], launch_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    image, srv = debian_image
    args = ["--connect", URI]
    assert main([*args, "images", "add", str(image), "--profile", "debian12"]) == 0
    started = time.monotonic()
    code = main([*args, "create", "--name", NAME, "--profile", "debian12", "--memory", "1024", "--yes",
                 "--cvmfs-server", f"10.0.2.2:{srv.port}", "--timeout", "1500"])  # fmt: skip
    err = capfd.readouterr().err
    console = launch_home / "run" / NAME / "console.log"
    assert code == 0, err + (console.read_text(errors="replace")[-4000:] if console.exists() else "")
    _say(
        capfd,
        f"\ndebian12: create -> SSH answers with the pinned host key: {time.monotonic() - started:.0f} s",
    )

    code, state = _ssh(capfd, "systemctl is-system-running --wait; systemctl --failed --no-legend --plain")
    lines = state.split()
    _say(capfd, f"debian12: systemctl is-system-running: {state.strip()}")
    assert lines and lines[0] in ("running", "degraded"), state
    if lines[0] == "degraded":
        code, why = _ssh(capfd, "systemctl --failed --no-legend --plain | awk '{print $1}' | "
                                "xargs -r -n1 journalctl -b -o cat -n 5 -u")  # fmt: skip
        _say(capfd, f"debian12: degraded because:\n{why}")

    code, out = _ssh(capfd, "cloud-init status; hostname; findmnt -n -o FSTYPE /")
    if out.split()[:2] != ["status:", "done"]:
        _code, why = _ssh(capfd, "cloud-init status --long; grep -E 'WARNING|ERROR|Traceback|Error' "
                                 "/var/log/cloud-init.log | tail -n 30")  # fmt: skip
        _say(capfd, f"debian12: cloud-init:\n{why}")
    cloud_init = out.split()  # checked at the end: what else works is worth knowing first
    code, out = _ssh(
        capfd, "echo on-the-overlay > /root/marker && cat /root/marker && grep -c . /proc/mounts"
    )
    assert code == 0 and out.startswith("on-the-overlay\n"), out
    # a module the initrd does not carry, from the OS's own /lib/modules/<kver>
    code, out = _ssh(capfd, "modprobe autofs4 && modprobe binfmt_misc && lsmod | awk '{print $1}'")
    assert code == 0 and {"autofs4", "binfmt_misc"} <= set(out.split()), out
    code, out = _ssh(capfd, "ls /mnt/.rw/cache | wc -l")
    assert code == 0 and int(out.strip()) > 0, "the object cache lives on the scratch disk"

    # clean shutdown through /run/initramfs/shutdown: seconds, no wait on the FUSE daemon
    conn = libvirt.open(URI)
    dom = conn.lookupByName(NAME)
    asked = time.monotonic()
    _ssh(capfd, "systemctl poweroff")
    deadline = asked + 600
    while dom.isActive() and time.monotonic() < deadline:
        time.sleep(1)
    if dom.isActive():
        pytest.fail("the guest did not power off within 600 s")
    _say(capfd, f"debian12: systemctl poweroff -> powered off: {time.monotonic() - asked:.0f} s")
    conn.close()
    console = (launch_home / "run" / NAME / "console.log").read_text(errors="replace")
    assert "ucernvm-shutdown: scratch disk clean (read-only)" in console, console[-3000:]
    assert "Waiting for process" not in console, console[-3000:]
    assert cloud_init == ["status:", "done", NAME, "overlay"], cloud_init
