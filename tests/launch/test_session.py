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
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cernvm_build import accel
from tests.launch.support import PANIC_CONSOLE, boot_sector_guest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GREETING = b"session-test-guest"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: Path
    env: dict[str, str]
    wrapper: Path  # runs argv as the user (namespace for the interpreter, then runuser)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [str(self.wrapper), sys.executable, "-m", "cernvm_build.cli.launch", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _interpreter_hidden_root() -> Path | None:
    """The first folder above the interpreter that others cannot enter (e.g. /root), if any."""
    exe = Path(os.path.realpath(sys.executable))
    for parent in reversed(exe.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def _wrapper(path: Path, user: str, env: dict[str, str], hidden: Path | None, scratch: Path) -> Path:
    exports = " ".join(f"{k}={subprocess.list2cmdline([v])}" for k, v in env.items())
    lines = ["#!/bin/sh", "set -e"]
    if hidden is not None:
        # Keep the interpreter's tree reachable, the rest of the hidden folder out of sight.
        keep = Path(os.path.realpath(sys.executable)).relative_to(hidden).parts[0]
        lines += [
            "mount --make-rprivate /",
            f"mkdir -p {scratch}/keep",
            f"mount --bind {hidden / keep} {scratch}/keep",
            f"mount -t tmpfs -o mode=0755 tmpfs {hidden}",
            f"mkdir -p {hidden / keep}",
            f"mount --bind {scratch}/keep {hidden / keep}",
        ]
    lines.append(f'exec runuser -u {user} -- env -i {exports} "$@"')
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o700)
    if hidden is None:
        return path
    outer = path.with_name("as-user")
    outer.write_text(f'#!/bin/sh\nexec unshare -m {path} "$@"\n')
    os.chmod(outer, 0o700)
    return outer


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    if os.geteuid() != 0 or not shutil.which("runuser") or not shutil.which("useradd"):
        pytest.fail("the session-mode tests create a user: they need root, useradd and runuser")
    name = f"cvml{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="launch-session-", dir="/var/tmp"))
    os.chmod(scratch, 0o755)
    home = scratch / "home"
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", name], check=True)
    pw = pwd.getpwnam(name)
    runtime = scratch / "runtime"
    for d in (home, runtime):
        d.mkdir(mode=0o700)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    acc = accel.detect()
    if acc.name == "kvm":
        subprocess.run(["usermod", "-aG", "kvm", name], check=True)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(home),
        "USER": name,
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "PYTHONPATH": str(REPO),
        "LIBVIRT_LOG_OUTPUTS": "",
        "CERNVM_ACCEL": acc.name,
        "CERNVM_LAUNCH_CONF": str(home / "absent.conf"),
    }
    wrapper = _wrapper(scratch / "run-as", name, env, _interpreter_hidden_root(), scratch)
    try:
        yield User(name, pw.pw_uid, home, env, wrapper)
    finally:
        _end_processes_of(pw.pw_uid)
        subprocess.run(["userdel", name], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def _end_processes_of(uid: int) -> None:
    """The session libvirtd (and any QEMU left) this test's user started, by pid."""
    for _ in range(2):
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _uid_of(p) == uid]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(1.0)


def _uid_of(proc: Path) -> int:
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _guest(user: User, name: str, message: bytes) -> Path:
    path = boot_sector_guest(user.home.parent / name, message)
    return path


def test_session_life_cycle_as_an_unprivileged_user(user: User) -> None:
    image = _guest(user, "tiny.hdd", GREETING + b"\r\n")
    r = user.run("create", "--name", "s1", "--iso", str(image), "--memory", "256", "--disk", "100",
                 "--no-wait", "--yes")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Security driver" not in r.stderr
    folder = user.home / "data" / "cernvm-launch" / "run" / "s1"  # XDG_DATA_HOME
    assert (folder / "scratch.qcow2").exists() and folder.stat().st_uid == user.uid

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
