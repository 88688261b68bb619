"""A "remote" libvirt host made for tests and benchmarks: a second libvirtd in a network namespace.

It has its own libvirtd and virtlogd (Debian 12's libvirt 9.0 is the monolithic daemon, no
virtqemud), its own /etc/libvirt (the host's *.conf, no domains, networks or pools), /run/libvirt,
/var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt (bind mounts of folders of the caller's,
in a private mount namespace), an address on a veth pair (10.254.N.2/30, this machine 10.254.N.1)
and an sshd listening only there, with a throwaway host key and a throwaway client key authorised
for root. A client reaches it only as ``qemu+ssh://root@10.254.N.2/system?keyfile=…&command=…``,
the command being OpenSSH with the host key pinned in a known_hosts file of its own (root's own
~/.ssh is never read or written). QEMU's user-mode forwards there are on the namespace's
127.0.0.1, which the client reaches only through the hypervisor (``ssh -W``), as on a real remote
host. The sshd logs at DEBUG1, so a caller can see which ``direct-tcpip`` channels it opened.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cernvm_build import accel

#: The folders the namespace's daemons get their own copy of (bind mounts of folders under ``root``).
#: /var/run is /run on Debian, so /var/run/libvirt is covered by /run/libvirt.
PRIVATE = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
           "log": "/var/log/libvirt", "cache": "/var/cache/libvirt"}  # fmt: skip


@dataclass(frozen=True)
class NamespaceHypervisor:
    """A libvirt host of its own, reached by the client only as ``uri`` (qemu+ssh to ``address``)."""

    uri: str
    address: str  # the namespace's end of the veth pair (its sshd listens only there)
    gateway: str  # this machine's end: what the namespace (and its guests, through NAT) reach
    root: Path  # this machine's view of the namespace's private folders (PRIVATE)
    log: Path  # the namespace's sshd log (DEBUG1: direct-tcpip channels)
    pid: int  # the process holding the namespaces

    @property
    def socket_uri(self) -> str:
        """The tests' own look at the namespace's daemon through its socket (never given to launch)."""
        return f"qemu+unix:///system?socket={self.root}/run/libvirt-sock"

    @property
    def storage(self) -> Path:
        """The namespace's /var/lib/libvirt, where its pools' directories are."""
        return self.root / "lib"

    def tunnelled_to(self, port: int) -> bool:
        return f"target 127.0.0.1 port {port}" in self.log.read_text(errors="replace")

    def listening(self, port: int) -> bool:
        """Whether something listens on the namespace's 127.0.0.1:port (its own /proc/PID/net/tcp)."""
        want = f"0100007F:{port:04X}"
        rows = Path(f"/proc/{self.pid}/net/tcp").read_text().splitlines()[1:]
        return any(r.split()[1] == want and r.split()[3] == "0A" for r in rows)

    def run(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        """``argv`` inside the namespace (its network and its mounts)."""
        return subprocess.Popen(["nsenter", "-t", str(self.pid), "-n", "-m", *argv], **kw)


def _subnet() -> int:
    """A 10.254.N.0/30 no interface here uses (N random: parallel test sessions)."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(100):
        n = secrets.randbelow(256)
        if f"10.254.{n}." not in used:
            return n
    raise RuntimeError("no free 10.254.N.0/30 for the namespace host")


def _skeleton(src: Path, dst: Path, depth: int = 2) -> None:
    """``src``'s folders (owner and mode kept, no files) down to ``depth``: the layout the package
    made (e.g. /var/lib/libvirt/qemu owned by the qemu user), none of the host's disks or state."""
    dst.mkdir(exist_ok=True)
    if not src.is_dir():
        return
    st = src.stat()
    os.chown(dst, st.st_uid, st.st_gid)
    dst.chmod(st.st_mode & 0o7777)
    if depth:
        for child in src.iterdir():
            if child.is_dir() and not child.is_symlink():
                _skeleton(child, dst / child.name, depth - 1)


def _etc(dst: Path) -> None:
    """The host's daemon configuration, without its domains, networks and pools (those live in
    /etc/libvirt/qemu and /etc/libvirt/storage): the namespace's daemon starts with none."""
    dst.mkdir(exist_ok=True)
    for f in Path("/etc/libvirt").glob("*.conf"):
        shutil.copy2(f, dst / f.name)
    with open(dst / "qemu.conf", "a") as f:
        # No cgroups: the namespace's QEMUs stay out of the host daemon's /machine tree.
        f.write("\ncgroup_controllers = [ ]\n")
    with open(dst / "libvirtd.conf", "a") as f:
        f.write('\nlog_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')


def _netns_pids(pid: int) -> list[int]:
    """Every process in ``pid``'s network namespace (its daemons, their QEMUs and SSH sessions)."""
    ns = os.stat(f"/proc/{pid}/ns/net").st_ino
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != pid:
            with contextlib.suppress(OSError):
                if os.stat(p / "ns/net").st_ino == ns:
                    found.append(int(p.name))
    return found


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def namespace_hypervisor(d: Path, name: str) -> Iterator[NamespaceHypervisor]:
    """A second libvirt host in a network + mount namespace: its own libvirtd and virtlogd (Debian
    12's libvirt 9.0 is the monolithic daemon), its own /etc/libvirt, /run/libvirt, /var/lib/libvirt,
    /var/log/libvirt and /var/cache/libvirt (folders under ``d``), an address on a veth pair
    (``name`` + 'h'/'n', at most 11 characters) and an sshd listening only there. Everything it
    started is ended on exit, also when the body fails: the daemons, then every process left in its
    network namespace (QEMUs, SSH sessions), then the namespace itself, which takes the veth along."""
    d.mkdir(mode=0o711, parents=True)
    os.chmod(d, 0o711)  # the namespace's QEMU user reaches its pool under d/lib
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / key], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    _etc(d / "etc")
    for sub, target in PRIVATE.items():
        if sub != "etc":
            _skeleton(Path(target), d / sub)
    # QEMU's capabilities as the host's daemon probed them (same binaries; libvirt checks the
    # cache against them and probes again when stale): saves the first define a probe of seconds.
    caps = Path("/var/cache/libvirt/qemu/capabilities")
    if caps.is_dir():
        shutil.copytree(caps, d / "cache/qemu/capabilities", dirs_exist_ok=True)
    n = _subnet()
    address, gateway = f"10.254.{n}.2", f"10.254.{n}.1"
    mounts = " && ".join(f"mkdir -p {t} && mount --bind {d / s} {t}" for s, t in PRIVATE.items())
    holder = subprocess.Popen(
        ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
         f"ip link set lo up && {mounts} && echo ready && exec sleep infinity"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    outside = f"{name}h"
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != b"ready":
            raise RuntimeError("the namespace holder did not come up")
        pid = str(holder.pid)
        ns = ["nsenter", "-t", pid, "-n", "-m"]
        for argv in (
            ["ip", "link", "add", outside, "type", "veth", "peer", "name", f"{name}n", "netns", pid],
            ["ip", "addr", "add", f"{gateway}/30", "dev", outside],
            ["ip", "link", "set", outside, "up"],
            [*ns, "ip", "addr", "add", f"{address}/30", "dev", f"{name}n"],
            [*ns, "ip", "link", "set", f"{name}n", "up"],
            [*ns, "ip", "route", "add", "default", "via", gateway],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        (d / "sshd_config").write_text(
            f"ListenAddress {address}\nPort 22\nHostKey {d}/host_key\n"
            f"AuthorizedKeysFile {d}/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nAllowTcpForwarding yes\nLogLevel DEBUG1\n"
            f"PidFile {d}/sshd.pid\n"
        )
        (d / "known_hosts").write_text(f"{address} {(d / 'host_key.pub').read_text()}")
        pinned = d / "ssh-pinned"
        pinned.write_text(
            f"#!/bin/sh\nexec ssh -o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes "
            '-o GlobalKnownHostsFile=/dev/null "$@"\n'
        )
        pinned.chmod(0o755)
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        log = d / "sshd.log"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        # Pid files inside the namespace's /run/libvirt: the host's daemons keep /run/*.pid.
        procs.append(subprocess.Popen([*ns, "virtlogd", "-p", "/run/libvirt/virtlogd.pid"], **quiet))
        procs.append(subprocess.Popen([*ns, "libvirtd", "-p", "/run/libvirt/libvirtd.pid"], **quiet))
        procs.append(subprocess.Popen([*ns, "/usr/sbin/sshd", "-D", "-f", d / "sshd_config", "-E", log]))
        host = NamespaceHypervisor(
            uri=f"qemu+ssh://root@{address}/system?keyfile={d}/client_key&command={pinned}",
            address=address, gateway=gateway, root=d, log=log, pid=holder.pid,
        )  # fmt: skip
        _wait_up(host, procs)
        yield host
    finally:
        _stop(procs)
        if holder.poll() is None:
            for p in _netns_pids(holder.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        holder.kill()
        holder.wait()
        subprocess.run(["ip", "link", "del", outside], capture_output=True, check=False)  # gone with the ns
        shutil.rmtree(d, ignore_errors=True)


def _wait_up(host: NamespaceHypervisor, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    import libvirt

    deadline = time.monotonic() + timeout
    while True:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(
                f"a daemon of the namespace host exited: {[p.args for p in procs if p.poll() is not None]}"
            )
        try:
            socket.create_connection((host.address, 22), timeout=1).close()
            libvirt.open(host.socket_uri).close()
            return
        except (OSError, libvirt.libvirtError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the namespace host did not come up within {timeout:g} s") from None
            time.sleep(0.2)


# -- A laptop user: an unprivileged account on its own qemu:///session -----------------------------

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: Path
    env: dict[str, str]
    wrapper: Path  # runs argv as the user (namespace for the interpreter, then runuser)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``cernvm-launch ARGS`` as the user."""
        return self.run_python("-m", "cernvm_build.cli.launch", *args, timeout=timeout)

    def run_python(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The toolkit's interpreter with ``ARGS`` as the user (the repository on its path)."""
        argv = [str(self.wrapper), sys.executable, *args]
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


@contextlib.contextmanager
def session_user() -> Iterator[User]:
    """A throwaway unprivileged account (root only) whose commands run on its own qemu:///session
    daemon; removed on exit with every process it ran (the session libvirtd, QEMUs), by uid."""
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
    """The session libvirtd (and any QEMU left) this test's user started, by pid: two rounds, each
    given up to a second to end (a round is over as soon as none is left, not after a fixed sleep)."""
    for _ in range(2):
        pids = _live_processes_of(uid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 1.0
        while pids and time.monotonic() < deadline:
            time.sleep(0.02)
            pids = _live_processes_of(uid)
        if not pids:
            return


def _live_processes_of(uid: int) -> list[int]:
    """Pids running as ``uid`` (a zombie is over: only its parent's wait is left)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            uid_of, state = _uid_and_state_of(p)
            if uid_of == uid and state != "Z":
                found.append(int(p.name))
    return found


def _uid_and_state_of(proc: Path) -> tuple[int, str]:
    uid, state = -1, ""
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("State:"):
                state = line.split()[1]
            elif line.startswith("Uid:"):
                return int(line.split()[1]), state
    except OSError:
        pass
    return uid, state
