"""A run after a killed run: ``launchhome.sweep`` removes the domain and home a killed earlier run of
the suite left on the system libvirtd, and leaves alone what another live run holds or what is not
the suite's (another name, or disks outside the suite's homes)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.support import launchhome, runlock

pytestmark = pytest.mark.integration

XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/>
<target dev='vda' bus='virtio'/></disk></devices></domain>"""


@pytest.fixture
def conn(libvirtd: None) -> Iterator[libvirt.virConnect]:
    c = libvirt.open(launchhome.URI)
    try:
        yield c
    finally:
        c.close()


def test_the_sweep_takes_a_killed_runs_domain_and_home_only(
    conn: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders: list[Path] = []
    names: list[str] = []

    def define(name: str, prefix: str) -> Path:
        """A domain as a run leaves it: its disk in a fresh folder in /var/tmp, with the run's lock."""
        home = Path(tempfile.mkdtemp(prefix=prefix, dir=launchhome.HOMES))
        os.chmod(home, 0o711)  # the system daemon's qemu user opens the disk
        folders.append(home)
        (home / "disk.img").write_bytes(b"\0" * 4096)
        os.close(os.open(home / runlock.LOCK, os.O_CREAT | os.O_RDWR, 0o600))
        conn.defineXML(XML.format(name=name, disk=home / "disk.img"))
        names.append(name)
        return home

    try:
        dead = define("e2e-demo-aaaaa1", launchhome.PREFIX)  # the run that made it was killed…
        conn.lookupByName("e2e-demo-aaaaa1").create()  # …mid-test, its guest still running
        live = define("e2e-demo-aaaaa2", launchhome.PREFIX)  # another suite's, running now
        lock = runlock.hold(live)
        foreign = define("e2e-demo-aaaaa3", "someone-else-")  # our name, but not in our homes
        other = define("vm-aaaaa4", launchhome.PREFIX)  # not a name the suite makes
        try:  # what every e2e test's launch home does first
            with launchhome.launch_home(monkeypatch, launchhome.unique("e2e-demo")) as home:
                assert not runlock.abandoned(home)  # held while this run lives: never swept
        finally:
            os.close(lock)
        left = {d.name() for d in conn.listAllDomains(0)}
        assert "e2e-demo-aaaaa1" not in left and not dead.exists()
        assert {"e2e-demo-aaaaa2", "e2e-demo-aaaaa3", "vm-aaaaa4"} <= left
        assert live.exists() and foreign.exists() and other.exists()
    finally:
        for dom in conn.listAllDomains(0):
            if dom.name() in names:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
