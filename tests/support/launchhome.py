"""A private cernvm-launch home for e2e tests on the system libvirtd, and the domain removed after."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest

from cernvm_build.launch import daemon

URI = "qemu:///system"
_RUN = uuid.uuid4().hex[:6]


def unique(stem: str) -> str:
    """``stem`` with this test run's token: domain names are global on the system libvirtd, and a
    second suite on the same host (or a domain a killed run left behind) must not collide with ours."""
    return f"{stem}-{_RUN}"


@contextmanager
def launch_home(monkeypatch: pytest.MonkeyPatch, domain: str) -> Iterator[Path]:
    """``CERNVM_LAUNCH_HOME`` in /var/tmp (the system daemon's qemu user must reach it), no config
    file; afterwards ``domain`` is destroyed and undefined and the libvirtd this started stopped."""
    started = daemon.ensure()
    home = Path(tempfile.mkdtemp(prefix="launch-e2e-", dir="/var/tmp"))
    os.chmod(home, 0o711)
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
        daemon.stop(started)
