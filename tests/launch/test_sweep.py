"""A run after a killed run: ``launchhome.sweep`` removes the domain and home a killed earlier run of
the suite left on the system libvirtd, and leaves alone what another live run holds or what is not
the suite's (another name, or disks outside the suite's homes)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.support import gpgagents, launchhome, runlock

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


@pytest.mark.integration
def test_the_sweep_takes_a_killed_runs_domain_and_home_only(
    conn: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = uuid.uuid4().hex[:5]  # this test's own names: a killed run of it leaves none a later one meets
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
        dead = define(f"e2e-demo-{t}1", launchhome.PREFIX)  # the run that made it was killed…
        conn.lookupByName(f"e2e-demo-{t}1").create()  # …mid-test, its guest still running
        live = define(f"e2e-demo-{t}2", launchhome.PREFIX)  # another suite's, running now
        lock = runlock.hold(live)
        foreign = define(f"e2e-lib-{t}3", "someone-else-")  # our name, but not in our homes
        other = define(f"vm-{t}4", launchhome.PREFIX)  # not a name the suite makes
        try:  # what every e2e test's launch home does first
            with launchhome.launch_home(monkeypatch, launchhome.unique("e2e-demo")) as home:
                assert not runlock.abandoned(home)  # held while this run lives: never swept
        finally:
            os.close(lock)
        left = {d.name() for d in conn.listAllDomains(0)}
        assert f"e2e-demo-{t}1" not in left and not dead.exists()
        assert {f"e2e-demo-{t}2", f"e2e-lib-{t}3", f"vm-{t}4"} <= left
        assert live.exists() and foreign.exists() and other.exists()
    finally:
        for dom in conn.listAllDomains(0):
            if dom.name() in names:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


class _Gone:
    """A domain another run undefined between our listing and our look at it."""

    def __init__(self, name: str, fails: str) -> None:
        self._name, self._fails = name, fails

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int) -> str:
        if self._fails == "XMLDesc":
            raise libvirt.libvirtError("Domain not found")
        return XML.format(
            name=self._name, disk=launchhome.HOMES / f"{launchhome.PREFIX}{self._name}" / "disk.img"
        )

    def isActive(self) -> bool:
        return True

    def destroy(self) -> None:
        if self._fails == "destroy":
            raise libvirt.libvirtError("Domain not found")

    def undefineFlags(self, flags: int) -> None:
        pass


def test_a_domain_another_run_removes_meanwhile_does_not_fail_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launchhome, "HOMES", tmp_path)
    doms = [
        _Gone("e2e-demo-aaaaa1", "XMLDesc"),
        _Gone("e2e-demo-aaaaa2", "destroy"),
        _Gone("e2e-lib-aaaaa3", ""),
    ]
    for dom in doms:  # unheld homes, as a killed run leaves them
        (tmp_path / f"{launchhome.PREFIX}{dom.name()}").mkdir()
        (tmp_path / f"{launchhome.PREFIX}{dom.name()}" / runlock.LOCK).touch()

    class Conn:
        def listAllDomains(self, flags: int) -> list[_Gone]:
            return doms

    assert launchhome.sweep(Conn()) == ["e2e-lib-aaaaa3"]  # type: ignore[arg-type]
    assert (tmp_path / f"{launchhome.PREFIX}e2e-demo-aaaaa2").exists()  # not undefined: home kept


def test_a_lock_we_may_only_read_or_not_open_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's run (a non-root suite beside a root one): its 0600 lock is judged read-only, or
    not at all — held, never an error."""
    (tmp_path / runlock.LOCK).touch()
    real = os.open

    def readable_only(path: str, flags: int, *args: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(13, "Permission denied", path)
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", readable_only)
    assert runlock.abandoned(tmp_path)  # nobody holds it

    def unreadable(path: str, flags: int, *args: int) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "open", unreadable)
    assert not runlock.abandoned(tmp_path)


def test_one_token_per_run() -> None:
    """The domain names' token is the run token the gpg-agent check uses (one run, one token)."""
    assert launchhome.unique("e2e-demo") == f"e2e-demo-{os.environ[gpgagents.VAR][:6]}"
