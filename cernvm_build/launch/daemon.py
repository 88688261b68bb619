"""A libvirt daemon for machines without systemd (containers, CI): start it when missing, stop what
we started, nothing else.

Debian 12 ships the monolithic ``libvirtd`` (plus ``virtlogd`` for console logs). Without udev,
``/dev/kvm`` stays ``root:root 0600``; libvirt then finds KVM "no longer available" to its qemu user
on every call and re-probes QEMU's capabilities each time (about a minute per ``define``), so the
device gets Debian's usual ``root:kvm 0660``. Which accelerator a guest uses is still decided by
``cernvm_build.accel.detect()``.
"""

from __future__ import annotations

import contextlib
import grp
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import proc
from ..errors import ConnectError

PIDFILES = {"virtlogd": Path("/run/virtlogd.pid"), "libvirtd": Path("/run/libvirtd.pid")}
SOCKET = Path("/run/libvirt/libvirt-sock")


@dataclass
class Started:
    """The daemons this process started (and so may stop)."""

    pids: dict[str, int] = field(default_factory=dict)


def _pid_alive(name: str) -> int | None:
    try:
        pid = int(PIDFILES[name].read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm == name else None


def running() -> bool:
    return _pid_alive("libvirtd") is not None and SOCKET.exists()


def fix_kvm_group() -> None:
    dev = Path("/dev/kvm")
    try:
        st = dev.stat()
        gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        return
    if st.st_gid != gid or st.st_mode & 0o060 != 0o060:
        with contextlib.suppress(OSError):
            os.chown(dev, -1, gid)
            os.chmod(dev, 0o660)


def ensure(timeout: float = 30.0) -> Started:
    """Start virtlogd and libvirtd (as root) unless they run; return what was started here."""
    started = Started()
    if os.geteuid() != 0:
        if not running():
            raise ConnectError(
                "libvirtd is not running and only root can start the system daemon",
                hint="ask an administrator, or use --connect qemu:///session",
            )
        return started
    fix_kvm_group()
    Path("/var/log/libvirt").mkdir(parents=True, exist_ok=True)
    for name in ("virtlogd", "libvirtd"):
        if _pid_alive(name) is None:
            proc.run([name, "-d"])
            deadline = time.monotonic() + timeout
            while (pid := _pid_alive(name)) is None or (name == "libvirtd" and not SOCKET.exists()):
                if time.monotonic() > deadline:
                    raise ConnectError(
                        f"{name} did not come up within {timeout:g} s", hint="see /var/log/libvirt"
                    )
                time.sleep(0.1)
            started.pids[name] = pid
    return started


def _in_use() -> bool:
    """Whether any domain runs: then someone else (another test session, a user) needs the daemon."""
    import libvirt  # deliberate lazy import: libvirt-python is the 'launch' extra

    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        return False
    try:
        return bool(conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
    finally:
        conn.close()


def stop(started: Started, timeout: float = 30.0) -> None:
    """Stop the daemons in ``started`` (libvirtd first), by pid, and wait for them to exit; leave them
    running while domains run (they may belong to whoever started using the daemon after us)."""
    if started.pids and _in_use():
        return
    for name in ("libvirtd", "virtlogd"):
        pid = started.pids.get(name)
        if pid is None or _pid_alive(name) != pid:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
