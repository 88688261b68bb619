"""A private cernvm-launch home for e2e tests on the system libvirtd, and the domain removed after;
before, what a killed earlier run of the suite left there (``sweep``).

A run killed mid-test (CI timeout, SIGKILL) never reaches the ``finally`` below: its domain stays
defined — and running, a guest holding memory on a 2-core host — and its home stays in /var/tmp.
Each home is held (``tests.support.runlock``) for as long as the run that made it lives, so a home
nobody holds is a dead run's, whereas a home another suite on the same host is using right now is
left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest

from cernvm_build.launch import daemon
from tests.support import gpgagents, runlock

URI = "qemu:///system"
HOMES = Path("/var/tmp")
PREFIX = "launch-e2e-"
# the domain names ``unique`` makes for the e2e tests (tests/launch/test_e2e.py, tests/osbuild)
_OURS = re.compile(r"(e2e-demo|e2e-lib|e2e-debian)-[0-9a-f]{6}")


def _run() -> str:
    """This test run's token: the one ``gpgagents`` puts in the environment at ``pytest_configure``
    (before any test module is imported), so one run has one token."""
    return os.environ[gpgagents.VAR][:6]


def unique(stem: str) -> str:
    """``stem`` with this test run's token: domain names are global on the system libvirtd, and a
    second suite on the same host (or a domain a killed run left behind) must not collide with ours."""
    return f"{stem}-{_run()}"


@contextmanager
def launch_home(monkeypatch: pytest.MonkeyPatch, domain: str) -> Iterator[Path]:
    """``CERNVM_LAUNCH_HOME`` in /var/tmp (the system daemon's qemu user must reach it), no config
    file; afterwards ``domain`` is destroyed and undefined and the libvirtd this started stopped."""
    started = daemon.ensure()
    conn = libvirt.open(URI)
    try:
        sweep(conn)
    finally:
        conn.close()
    home = Path(tempfile.mkdtemp(prefix=PREFIX, dir=HOMES))
    os.chmod(home, 0o711)
    lock = runlock.hold(home)
    monkeypatch.setenv("CERNVM_LAUNCH_HOME", str(home))
    monkeypatch.setenv("CERNVM_LAUNCH_CONF", str(home / "absent.conf"))
    try:
        yield home
    finally:
        conn = libvirt.open(URI)
        for dom in conn.listAllDomains(0):
            if dom.name() == domain:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        conn.close()
        shutil.rmtree(home, ignore_errors=True)
        os.close(lock)
        daemon.stop(started)


def _home_of(dom: libvirt.virDomain) -> Path | None:
    """The suite's launch home a domain's disks are in, or None unless every disk is in one of the
    suite's folders in /var/tmp (the Debian test's ISO is in its image fixture's ``debian-e2e-``)."""
    sources = ET.fromstring(dom.XMLDesc(0)).iterfind("devices/disk/source")
    folders = [_suite_folder(Path(src.attrib["file"])) for src in sources if "file" in src.attrib]
    homes = {f for f in folders if f is not None and f.name.startswith(PREFIX)}
    return homes.pop() if len(homes) == 1 and None not in folders else None


def _suite_folder(file: Path) -> Path | None:
    parts = file.relative_to(HOMES).parts if file.is_relative_to(HOMES) else ()
    return HOMES / parts[0] if len(parts) > 1 and parts[0].startswith((PREFIX, "debian-e2e-")) else None


def sweep(conn: libvirt.virConnect) -> list[str]:
    """Destroy and undefine the domains a killed earlier run of this suite left, and remove their homes;
    returns their names. Only a domain named as ``unique`` names them, by another run, whose disks are
    all in one of the suite's launch homes, nobody holding it, is taken: anything else is not ours."""
    swept = []
    for dom in conn.listAllDomains(0):
        try:
            name = dom.name()
            if not _OURS.fullmatch(name) or name.endswith(f"-{_run()}"):
                continue
            home = _home_of(dom)
            if home is None or not runlock.abandoned(home):
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError:  # another run undefined it meanwhile, or is sweeping it too
            continue
        shutil.rmtree(home, ignore_errors=True)
        swept.append(name)
    return swept
