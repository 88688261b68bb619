"""cernvm-launch as a laptop user: an unprivileged account made here, on its own ``qemu:///session``
daemon (libvirt starts it for the user), with its files under its XDG folders.

The account is created for the test session and removed afterwards with the processes it ran (the
session libvirtd, found by its uid). The toolkit's interpreter may live under a folder the account
cannot enter (pyenv under ``/root``): the command then runs in a private mount namespace where that
folder is a world-readable tmpfs holding only the interpreter's tree (bind-mounted), which changes
nothing outside the test. /dev/kvm is given to the account only when the KVM probe says KVM works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.launch.support import PANIC_CONSOLE, boot_sector_guest
from tests.support.hypervisor import User, session_user

pytestmark = pytest.mark.integration
GREETING = b"session-test-guest"


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    if os.geteuid() != 0 or not shutil.which("runuser") or not shutil.which("useradd"):
        pytest.fail("the session-mode tests create a user: they need root, useradd and runuser")
    with session_user() as u:
        yield u


def _guest(user: User, name: str, message: bytes) -> Path:
    path = boot_sector_guest(user.home.parent / name, message)
    return path


def test_session_life_cycle_as_an_unprivileged_user(user: User) -> None:
    image = _guest(user, "tiny.hdd", GREETING + b"\r\n")
    # a seed (create --seed) private to the user: the session daemon's QEMU is the user
    seed = user.home / "seed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(seed), "64M"], check=True)
    os.chown(seed, user.uid, -1)
    seed.chmod(0o600)
    r = user.run("create", "--name", "s1", "--iso", str(image), "--memory", "256", "--disk", "100",
                 "--seed", str(seed), "--no-wait", "--yes")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Security driver" not in r.stderr
    folder = user.home / "data" / "cernvm-launch" / "run" / "s1"  # XDG_DATA_HOME
    assert (folder / "scratch.qcow2").exists() and folder.stat().st_uid == user.uid
    info = subprocess.run(["qemu-img", "info", "-U", "--output", "json", str(folder / "scratch.qcow2")],
                          capture_output=True, check=True).stdout  # fmt: skip
    assert json.loads(info)["backing-filename"] == str(seed)

    r = user.run("list", "--json")
    assert r.returncode == 0, r.stderr
    (entry,) = json.loads(r.stdout)
    assert entry["name"] == "s1" and entry["state"] == "running"

    deadline = time.monotonic() + 60
    while GREETING not in (folder / "console.log").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.5)
    r = user.run("console", "s1", "--log")
    assert GREETING.decode() in r.stdout

    r = user.run("forward", "s1", f"{entry['ssh_port'] + 1}:80")
    assert r.returncode == 0, r.stderr

    assert user.run("stop", "--force", "s1").returncode == 0
    r = user.run("destroy", "s1")
    assert r.returncode == 0, r.stderr
    assert not folder.exists()
    assert json.loads(user.run("list", "--json").stdout) == []
    assert seed.stat().st_uid == user.uid and seed.stat().st_mode & 0o777 == 0o600  # left as it was


def test_a_panicking_guest_fails_create_fast_in_session_mode(user: User) -> None:
    image = _guest(user, "panic.hdd", PANIC_CONSOLE)
    started = time.monotonic()
    r = user.run("create", "--name", "p1", "--iso", str(image), "--memory", "256", "--disk", "100", "--yes",
                 "--rm-on-failure")  # fmt: skip
    elapsed = time.monotonic() - started
    assert r.returncode == 8, r.stderr
    assert "failed to boot: CernVM-FS mount of demo.cern.ch failed" in r.stderr
    assert "--cvmfs-server 10.0.2.2:PORT" in r.stderr and "Traceback" not in r.stderr
    print(f"session: panic -> exit {elapsed:.1f} s")
    assert json.loads(user.run("list", "--json").stdout) == []
