"""Acceptance (issue 13): the Debian 12 tree that cernvm-build makes boots through μCernVM as a real
systemd OS, driven only through ``cernvm-launch`` under a real libvirtd — one instance, two boots.

The tree is published into a demo-keyed repository served on 127.0.0.1, the debian12 image is built
against it. First boot: systemd reaches running with no failed unit, the login works with the host key
pinned from the user data, cloud-init is done, writes land on the overlay, a module the initrd does not
carry loads, the objects are cached on the scratch disk; ``systemctl poweroff`` ends cleanly through
the initramfs hand-back (the scratch disk clean, no wait on the FUSE daemon). Then a new revision moves
the tag; the second boot stays on the pinned snapshot, finds the scratch disk clean (no journal
replay), keeps the writes and fetches no object it has again. A boot with the server stopped is
tests/image/test_e2e.py's (the same initrd and cache; a third Debian boot is beyond make test's budget);
the down-server panic through ``cernvm-launch create`` is tests/launch/test_e2e.py's.
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
from cernvm_build.cvmfs.publish import publish_tree
from cernvm_build.cvmfs.serve import Server, serve
from cernvm_build.demo.repository import DemoRepository, demo_keys, publish_debian
from cernvm_build.errors import CernVMError
from tests.support import launchhome
from tests.support.servers import object_requests_served

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(os.geteuid() != 0, reason="the Debian tree is built with dpkg in a chroot (root)"),
]
URI = "qemu:///system"
NAME = launchhome.unique("e2e-debian")


@dataclasses.dataclass
class Debian:
    image: Path
    server: Server
    repo: DemoRepository  # the published tree: its snapshot is the one the instance pins


@pytest.fixture(scope="module")
def debian_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Debian]:
    from cernvm_build.context import BuildContext
    from cernvm_build.image.build import build_image

    work = tmp_path_factory.mktemp("debian-e2e")
    prof = profile.load("debian12")
    try:  # offline: make deps fetched the packages and built the tree (a warning there if it could not)
        kernel = fetch_debian_kernel(prof.kernel.package or "linux-image-cloud-amd64")
        published = publish_debian(work / "repo", kernel=kernel, offline=True)
    except CernVMError as e:
        pytest.fail(f"the Debian 12 tree cannot be built: {e} (hint: {e.hint or ''}; 'make deps' as root "
                    "with network access fetches its packages and builds it once)")  # fmt: skip
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
        try:  # removed however the tests end (a killed run's is left: not held, not swept)
            image = home / built.name  # readable by the system daemon's qemu user
            shutil.copyfile(built, image)
            os.chmod(image, 0o644)
            yield Debian(image, srv, published)
        finally:
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


class Guest:
    """The instance through cernvm-launch, and its console log since the last start."""

    def __init__(self, home: Path, capfd: pytest.CaptureFixture[str]) -> None:
        self.console_path = home / "run" / NAME / "console.log"
        self.capfd, self.mark = capfd, 0

    def console(self) -> str:
        """What the console said since the current boot began."""
        data = self.console_path.read_bytes() if self.console_path.exists() else b""
        return data[self.mark if len(data) >= self.mark else 0 :].decode(errors="replace")

    def ssh(self, command: str) -> tuple[int, str]:
        return _ssh(self.capfd, command)

    def start(self) -> float:
        """Start the powered-off instance and wait for SSH: seconds."""
        self.mark = self.console_path.stat().st_size if self.console_path.exists() else 0
        started = time.monotonic()
        self.capfd.readouterr()
        code = main(["--connect", URI, "start", NAME, "--wait", "--timeout", "1500"])
        assert code == 0, self.capfd.readouterr().err + self.console()[-4000:]
        return time.monotonic() - started

    def poweroff(self) -> float:
        """``systemctl poweroff`` until the domain is off: seconds; the shutdown left the disk clean."""
        conn = libvirt.open(URI)
        try:
            dom = conn.lookupByName(NAME)
            asked = time.monotonic()
            self.ssh("systemctl poweroff")
            while dom.isActive() and time.monotonic() < asked + 600:
                time.sleep(0.5)
            if dom.isActive():
                pytest.fail("the guest did not power off within 600 s")
            took = time.monotonic() - asked
        finally:
            conn.close()
        console = self.console()
        assert "ucernvm-shutdown: scratch disk clean (read-only)" in console, console[-3000:]
        assert "Waiting for process" not in console, console[-3000:]
        return took

    def running(self) -> None:
        """systemd reached running: no failed unit (the failed units' journals shown otherwise)."""
        _code, state = self.ssh("systemctl is-system-running --wait")
        if state.strip() != "running":
            _code, why = self.ssh("systemctl --failed --no-legend --plain | awk '{print $1}' | "
                                  "xargs -r -n1 journalctl -b -o cat -n 5 -u")  # fmt: skip
            pytest.fail(f"systemctl is-system-running: {state.strip()}\n{why}")


def test_debian_boots_as_a_systemd_os(
    debian_image: Debian, launch_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    deb, args = debian_image, ["--connect", URI]
    guest = Guest(launch_home, capfd)
    assert main([*args, "images", "add", str(deb.image), "--profile", "debian12"]) == 0
    started = time.monotonic()
    with object_requests_served() as fetched_first:  # the whole first boot, up to its poweroff
        code = main([*args, "create", "--name", NAME, "--profile", "debian12", "--memory", "1024", "--yes",
                     "--cvmfs-server", f"10.0.2.2:{deb.server.port}", "--timeout", "1500"])  # fmt: skip
        err = capfd.readouterr().err
        assert code == 0, err + guest.console()[-4000:]
        took = time.monotonic() - started
        _say(capfd, f"\ndebian12: create -> SSH answers with the pinned host key: {took:.0f} s")
        guest.running()
        assert f"root {deb.repo.root_hash}" in guest.console(), guest.console()[-4000:]
        # the blank scratch disk cernvm-launch named (its serial): made without the late drivers
        assert "first boot: partitioned the empty disk named by cernvm-launch (/dev/vda)" in guest.console()
        assert "more loaded for the disks and CD-ROMs" not in guest.console(), guest.console()[-4000:]

        code, out = guest.ssh("cloud-init status; hostname; findmnt -n -o FSTYPE /")
        if out.split()[:2] != ["status:", "done"]:
            _code, why = guest.ssh("cloud-init status --long; grep -E 'WARNING|ERROR|Traceback|Error' "
                                   "/var/log/cloud-init.log | tail -n 30")  # fmt: skip
            _say(capfd, f"debian12: cloud-init:\n{why}")
        assert out.split() == ["status:", "done", NAME, "overlay"], out
        code, out = guest.ssh("echo on-the-overlay > /root/marker && cat /root/marker")
        assert code == 0 and out == "on-the-overlay\n", out
        # a module the initrd does not carry, from the OS's own /lib/modules/<kver>; the boot CD's
        # drivers, which the initrd leaves to udev when its disks are virtio ones (01-modules.sh @late)
        code, out = guest.ssh("modprobe autofs4 && modprobe binfmt_misc && udevadm settle && "
                              "test -b /dev/sr0 && lsmod | awk '{print $1}'")  # fmt: skip
        assert code == 0 and {"autofs4", "binfmt_misc", "sr_mod", "ata_piix"} <= set(out.split()), out
        # what the OS read is cached on the scratch disk (the initramfs holds no cache of its own)
        code, out = guest.ssh("find /mnt/.rw/cache -type f | wc -l")
        assert code == 0 and int(out.strip()) >= len(fetched_first) > 0, out
        _say(capfd, f"debian12: systemctl poweroff -> powered off: {guest.poweroff():.0f} s")
    _say(capfd, f"debian12: first boot fetched {len(fetched_first)} objects")

    # A new revision moves the tag to a tree that is no OS at all: a boot that followed it could not start.
    moved = deb.repo.root.parent / "moved"
    (moved / "etc").mkdir(parents=True)
    (moved / "etc" / "moved").write_text("a new revision\n")
    r2 = publish_tree(deb.repo.stratum, deb.repo.fqrn, demo_keys(), moved, tag=deb.repo.tag, move_tag=True)
    with object_requests_served() as fetched:
        took = guest.start()
        guest.running()
    _say(capfd, f"debian12: reboot -> SSH {took:.0f} s; objects fetched: {len(fetched)}")
    console = guest.console()
    assert f"root {deb.repo.root_hash}" in console and "pinned since" in console, console[-4000:]
    assert f"root {r2.root_hash}" not in console
    assert "ucernvm: devices: e2fsck: UROOT: clean" in console, console[-4000:]
    assert "recovering journal" not in console
    # the reboot found UROOT and the context drive on virtio disks: no IDE/SATA/SCSI driver loaded
    reboot = console.rsplit("Welcome to micro-CernVM", 1)[-1]
    assert "ucernvm: modules: " in reboot and "more loaded for the disks" not in reboot, reboot[-4000:]
    # nothing the cache has is fetched again (new are the new revision's tag database, in which the
    # pin's tag is looked up, and what this boot reads for the first time)
    assert not set(fetched) & set(fetched_first), sorted(set(fetched) & set(fetched_first))[:20]
    code, out = guest.ssh("cat /root/marker")
    assert out == "on-the-overlay\n", "the first boot's writes persist"
    _say(capfd, f"debian12: systemctl poweroff -> powered off: {guest.poweroff():.0f} s")
