"""Fixtures for launch tests: a fresh libvirt test driver per test, a tiny boot image, a launch home."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from cernvm_build.launch import daemon
from tests.support.hypervisor import NamespaceHypervisor, namespace_hypervisor

DRIVER_XML = """<node>
  <cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>
  <active>2</active></cpu>
  <memory>16777216</memory>
</node>
"""


@pytest.fixture
def launch_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolate launch from the user's config and folders."""
    home = tmp_path / "home"
    monkeypatch.setenv("CERNVM_LAUNCH_HOME", str(home))
    monkeypatch.setenv("CERNVM_LAUNCH_CONF", str(tmp_path / "absent.conf"))
    monkeypatch.setenv("CERNVM_ACCEL", "tcg")
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    return home


@pytest.fixture
def driver_uri(tmp_path: Path) -> str:
    """A test:/// URI whose every open() starts from an empty node (no shared state between tests)."""
    path = tmp_path / "driver.xml"
    path.write_text(DRIVER_XML)
    return f"test://{path}"


@pytest.fixture
def conn(driver_uri: str) -> Iterator[Any]:
    c = libvirt.open(driver_uri)
    yield c
    c.close()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 1 MiB raw 'hdd' image with its .sha256, as the image builder publishes them."""
    path = tmp_path / "ucernvm-test.2026.11-1.cernvm.x86_64.hdd"
    data = (b"\xeb\x3c".ljust(510, b"\0") + b"\x55\xaa").ljust(1 << 20, b"\0")  # a boot sector
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return path


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[None]:
    """The real system daemon (started here when not running, stopped when this session started it)."""
    started = daemon.ensure()
    yield
    daemon.stop(started)


@pytest.fixture
def system_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A launch home the system daemon's qemu user can reach (pytest's tmp_path is 0700)."""
    home = Path(tempfile.mkdtemp(prefix="launch-test-", dir="/var/tmp"))
    os.chmod(home, 0o711)
    monkeypatch.setenv("CERNVM_LAUNCH_HOME", str(home))
    monkeypatch.setenv("CERNVM_LAUNCH_CONF", str(home / "absent.conf"))
    monkeypatch.setenv("CERNVM_ACCEL", "tcg")
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def namespace_host() -> Iterator[NamespaceHypervisor]:
    """A second libvirt host of the session's own (tests/support/hypervisor.py): its own libvirtd,
    storage and sshd in a network namespace, reached only as qemu+ssh://root@10.254.N.2/system."""
    scratch = Path(tempfile.mkdtemp(prefix="launch-nshost-", dir="/var/tmp"))
    try:
        with namespace_hypervisor(scratch / "host", f"lv{os.urandom(3).hex()}") as host:
            yield host
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
