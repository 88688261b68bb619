"""A remote hypervisor for real: a second libvirtd, reached only over SSH, disks through the storage API.

The "remote" host is made once per test session (``tests/support/hypervisor.py``): its own libvirtd
and virtlogd in a network and mount namespace, with their own /etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, an address on a veth pair and an sshd
listening only there. The client is given ``qemu+ssh://root@10.254.N.2/system?keyfile=…&command=…``
(the command is OpenSSH with the host key pinned in a known_hosts file of the test's own; root's own
files are never touched). So: the host's own daemon never hears of the instances, their disks are in
the namespace's storage (read here through this machine's view of its folders), QEMU's SSH forward
is on the namespace's 127.0.0.1, which the client reaches only through the hypervisor (``ssh -W``,
a ``direct-tcpip`` channel in the namespace's sshd log), and the client keeps only keys.

The guest is the boot-sector one, except one demo OS boot; the boot-sector guest's SSH server is
stood in for by dropbear on the namespace's loopback, with the host key and authorized key launch
put into the context volume (read back through the storage API).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from cernvm_build import launch
from cernvm_build.cli.launch import main
from cernvm_build.cvmfs.serve import serve
from cernvm_build.launch import create, domain, storage, tunnel
from tests.launch import test_e2e
from tests.launch.support import PANIC_CONSOLE, boot_sector_guest, cloud_config
from tests.support import free_port
from tests.support.hypervisor import REPO, NamespaceHypervisor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
LOCAL = "qemu:///system"
GREETING = b"remote-test-guest"


@dataclass(frozen=True)
class Hypervisor:
    """The session's namespace host with a storage pool of this test's own."""

    uri: str
    pool: str
    ns: NamespaceHypervisor

    def tunnelled_to(self, port: int) -> bool:
        return self.ns.tunnelled_to(port)

    def open(self) -> Any:
        """The tests' own look at the namespace's daemon (its socket, not launch's SSH)."""
        return libvirt.open(self.ns.socket_uri)

    def pool_dir(self) -> Path:
        """This machine's view of the pool's folder in the namespace's /var/lib/libvirt."""
        path = Path(storage.pool_path(self.open().storagePoolLookupByName(self.pool)))
        return self.ns.storage / path.relative_to(storage.SYSTEM_PARENT)

    def volumes(self) -> set[str]:
        p = self.open().storagePoolLookupByName(self.pool)
        p.refresh(0)
        return set(p.listVolumes())

    def domains(self) -> list[str]:
        return [d.name() for d in self.open().listAllDomains(0)]


@pytest.fixture
def hypervisor(libvirtd: None, namespace_host: NamespaceHypervisor) -> Iterator[Hypervisor]:
    hv = Hypervisor(namespace_host.uri, f"lt-pool-{uuid.uuid4().hex[:8]}", namespace_host)
    try:
        yield hv
    finally:
        _remove_pool(hv)


def _host_domains() -> list[str]:
    """The domains this machine's own system daemon knows."""
    return [d.name() for d in libvirt.open(LOCAL).listAllDomains(0)]


def _remove_pool(hv: Hypervisor) -> None:
    """Whatever a failed test left: the pool's domains, volumes and the pool itself."""
    pool = hv.pool
    conn = hv.open()
    for dom in conn.listAllDomains(0):
        meta = domain.metadata_of(dom.XMLDesc(0))
        if meta is not None and meta.pool == pool:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    try:
        p = conn.storagePoolLookupByName(pool)
    except libvirt.libvirtError:
        pass
    else:
        storage.delete(p, p.listVolumes())
        p.destroy()
        p.delete(0)
        p.undefine()
    conn.close()


@pytest.fixture
def remote_conf(system_home: Path, hypervisor: Hypervisor, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``connect=`` and ``storagePool=`` in the user's config file: no command gets --connect."""
    conf = system_home / "cernvm-launch.conf"
    conf.write_text(f"connect={hypervisor.uri}\nstoragePool={hypervisor.pool}\n")
    monkeypatch.setenv("CERNVM_LAUNCH_CONF", str(conf))
    return conf


def _wait_for(pred: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout:g} s")
        time.sleep(0.3)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _create(name: str, image: Path | str, *extra: str) -> int:
    return main(["create", "--name", name, "--iso", str(image), "--memory", "256", "--disk", "100",
                 "--yes", *extra])  # fmt: skip


def _tiny_in_cache(tmp_path: Path) -> Path:
    """The boot-sector guest that greets on its console, added to the local image cache as tiny.hdd."""
    src = boot_sector_guest(tmp_path / "tiny.hdd", GREETING + b"\r\n", echo=True)
    assert main(["images", "add", str(src)]) == 0
    return src


def test_create_puts_the_disks_in_the_hypervisors_pool_and_destroy_removes_them(
    system_home: Path,
    hypervisor: Hypervisor,
    remote_conf: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"lt-{uuid.uuid4().hex[:8]}"
    src = _tiny_in_cache(tmp_path)
    cache = system_home / "images"
    assert (cache / "tiny.hdd").is_file()
    # A torn copy from an upload killed half-way (full size, wrong bytes, no completion marker)
    # is uploaded again, not booted.
    image_vol = storage.image_volume_name("tiny.hdd", _sha256(src))
    p = storage.pool(hypervisor.open(), hypervisor.pool, session=False)
    storage.create(p, image_vol, src.stat().st_size, "raw", 0o644)
    assert _create(name, "tiny.hdd", "--no-wait") == 0, capsys.readouterr().err
    assert "uploading the boot image" in capsys.readouterr().err

    # The namespace's daemon runs it; this machine's own daemon never heard of it.
    assert name in hypervisor.domains() and name not in _host_domains()
    xml = hypervisor.open().lookupByName(name).XMLDesc(0)
    files = {Path(f) for f in _files(xml)}  # the boot image, scratch disk, context ISO, console log
    pool_dir = hypervisor.pool_dir()  # the namespace's /var/lib/libvirt/POOL, seen from here
    assert len(files) == 4 and all(f.parent == Path(storage.SYSTEM_PARENT, hypervisor.pool) for f in files)
    assert {f.name for f in files} <= {p.name for p in pool_dir.iterdir()}, files
    assert not Path(storage.SYSTEM_PARENT, hypervisor.pool).exists()  # not in this machine's storage
    assert str(cache) not in xml and str(src) not in xml  # the image cache is not the hypervisor's
    assert (pool_dir / image_vol).read_bytes() == src.read_bytes()
    own = set(storage.volume_names(name))
    assert hypervisor.volumes() - own == set(storage.image_volumes(image_vol))  # + the image
    # Here: the image cache, the login key and whose folder it is (.uri), nothing else (no disk, ISO or log).
    made = {p.name for p in system_home.rglob("*") if p.is_file() and not p.is_relative_to(cache)}
    assert made == {"id_ed25519", "id_ed25519.pub", ".uri", remote_conf.name}, made

    # The console is read back through the storage API (a volume of the pool).
    def greeted() -> bool:
        assert main(["console", "--log", name]) == 0
        return GREETING.decode() in capsys.readouterr().out

    _wait_for(greeted)
    _console_round_trip(name)  # and interactively, from a terminal
    assert main(["list", "--json"]) == 0
    (entry,) = [e for e in json.loads(capsys.readouterr().out) if e["name"] == name]
    assert entry["state"] == "running"
    assert main(["ip", name]) == 0  # an address on the hypervisor, said so
    port = entry["ssh_port"]
    assert capsys.readouterr().out.strip() == f"127.0.0.1:{port} on {hypervisor.ns.address}"
    # QEMU's forward is on the namespace's loopback only: not on its address, not on ours.
    assert hypervisor.ns.listening(port)
    with pytest.raises(OSError):
        socket.create_connection((hypervisor.ns.address, port), timeout=5).close()

    # No SSH in this guest: wait gives up with the remote console's tail; the attempts went
    # through the hypervisor (ssh -W to its 127.0.0.1).
    assert main(["wait", name, "--timeout", "3"]) == 8
    assert GREETING.decode() in capsys.readouterr().err
    assert hypervisor.tunnelled_to(port)

    assert main(["stop", name]) == 0
    assert main(["start", name]) == 0
    live = free_port()
    assert main(["forward", name, f"{live}:8080"]) == 0
    out = capsys.readouterr().err
    assert f"{hypervisor.ns.address}'s 127.0.0.1" in out and f"-L 127.0.0.1:{live}:127.0.0.1:{live}" in out

    # a second instance shares the uploaded image; the image stays after the last one, so a create
    # after both were destroyed does not upload it again; 'images remove' deletes it there too
    other = f"{name}-b"
    assert _create(other, "tiny.hdd", "--no-wait") == 0
    assert "uploading the boot image" not in capsys.readouterr().err
    assert main(["destroy", "--force", name]) == 0
    left = hypervisor.volumes()
    assert not own & left and left == {*storage.volume_names(other), *storage.image_volumes(image_vol)}
    assert main(["destroy", "--force", other]) == 0
    assert hypervisor.volumes() == set(storage.image_volumes(image_vol))
    assert _create(other, "tiny.hdd", "--no-wait") == 0
    assert "uploading the boot image" not in capsys.readouterr().err
    assert main(["images", "remove", "tiny.hdd"]) != 0  # in use by the instance on the hypervisor
    assert other in capsys.readouterr().err
    assert main(["destroy", "--force", other]) == 0
    assert main(["images", "remove", "tiny.hdd"]) == 0
    assert hypervisor.volumes() == set()
    assert {p.name for p in system_home.rglob("*") if p.is_file() and not p.is_relative_to(cache)} == {
        remote_conf.name
    }
    for names in (hypervisor.domains(), _host_domains()):
        assert name not in names and other not in names
    assert not hypervisor.ns.listening(port)


def _backing_file(qcow2: Path) -> str:
    """The backing file a qcow2 header names (read here: qemu-img would open it, a path of the
    hypervisor's file system)."""
    with open(qcow2, "rb") as f:
        head = f.read(20)
        offset, size = int.from_bytes(head[8:16], "big"), int.from_bytes(head[16:20], "big")
        f.seek(offset)
        return f.read(size).decode()


def test_a_seed_is_uploaded_once_and_backs_each_instances_scratch_volume(
    system_home: Path,
    hypervisor: Hypervisor,
    remote_conf: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"ls-{uuid.uuid4().hex[:8]}"
    _tiny_in_cache(tmp_path)
    seed_file = tmp_path / "seed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(seed_file), "200M"], check=True)
    os.chmod(seed_file, 0o600)  # private here: QEMU on the hypervisor reads the pool's copy
    assert _create(name, "tiny.hdd", "--no-wait", "--seed", str(seed_file)) == 0, capsys.readouterr().err
    assert "uploading the seed" in capsys.readouterr().err
    seed_vol = storage.image_volume_name("seed.qcow2", _sha256(seed_file))
    pool_dir = hypervisor.pool_dir()
    assert (pool_dir / seed_vol).read_bytes() == seed_file.read_bytes()
    in_pool = f"{storage.SYSTEM_PARENT}/{hypervisor.pool}/{seed_vol}"
    scratch = pool_dir / storage.volume_names(name)[0]
    assert _backing_file(scratch) == in_pool
    assert int.from_bytes(scratch.read_bytes()[24:32], "big") == 200 << 20  # the seed's size > --disk 100
    disks = ET.fromstring(hypervisor.open().lookupByName(name).XMLDesc(0)).iter("backingStore")
    assert in_pool in [b.find("source").get("file") for b in disks if b.find("source") is not None]
    assert hypervisor.open().lookupByName(name).isActive()  # QEMU there opened the chain

    # a second instance shares it; destroying both leaves it for the next
    other = f"{name}-b"
    assert _create(other, "tiny.hdd", "--no-wait", "--seed", str(seed_file)) == 0
    assert "uploading the seed" not in capsys.readouterr().err
    assert _backing_file(pool_dir / storage.volume_names(other)[0]) == in_pool
    assert main(["destroy", "--force", name]) == 0
    assert main(["destroy", "--force", other]) == 0
    assert set(storage.image_volumes(seed_vol)) <= hypervisor.volumes()
    assert not {*storage.volume_names(name), *storage.volume_names(other)} & hypervisor.volumes()


def _files(xml: str) -> list[str]:
    """The files a domain names: its disks' sources and its console log."""
    root = ET.fromstring(xml)
    return [e.get("file", "") for e in [*root.iter("source"), *root.iter("log")] if e.get("file")]


def test_a_panicking_guest_on_the_hypervisor_fails_create_from_its_console(
    system_home: Path, hypervisor: Hypervisor, remote_conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"lt-{uuid.uuid4().hex[:8]}"
    image = boot_sector_guest(system_home / "panic.hdd", PANIC_CONSOLE)
    assert _create(name, image, "--rm-on-failure") == 8
    err = capsys.readouterr().err
    assert f"instance '{name}' failed to boot: CernVM-FS mount of demo.cern.ch failed" in err
    assert "Traceback" not in err
    assert name not in hypervisor.domains()
    assert hypervisor.volumes() == set()  # removed, its image with it


def _console_round_trip(name: str) -> None:
    """``console NAME`` on a terminal attaches to the remote guest's serial port over the URI (virsh's
    console stream through the hypervisor's SSH): keys typed here reach the guest, its answer comes
    back, Ctrl-] leaves with exit 0."""
    pid, fd = pty.fork()
    if pid == 0:  # the CLI as a user runs it, on a terminal (connect= from the config file)
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "cernvm_build.cli.launch", "console", name])
    seen = b""

    def read_until(want: bytes, then: bytes = b"") -> bool:
        nonlocal seen
        deadline = time.monotonic() + 60
        while want not in seen and time.monotonic() < deadline:
            if then:
                os.write(fd, then)  # again until answered: the terminal may not be raw yet
            if select.select([fd], [], [], 1.0)[0]:
                with contextlib.suppress(OSError):
                    seen += os.read(fd, 4096)
        return want in seen

    try:
        assert read_until(b"Escape character"), seen
        assert read_until(b"ibm:111", then=b"hal9000"), seen  # each byte + 1: the guest answered
        os.write(fd, b"\x1d")  # Ctrl-]
        deadline = time.monotonic() + 30
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                with contextlib.suppress(OSError):  # EIO once the terminal's last user is gone
                    seen += os.read(fd, 4096)
        assert status[0] == pid and os.waitstatus_to_exitcode(status[1]) == 0, seen
        assert b"Traceback" not in seen
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_ssh_scp_and_openssh_reach_the_guest_through_the_hypervisor(
    system_home: Path,
    hypervisor: Hypervisor,
    remote_conf: Path,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """dropbear stands in for the guest's SSH server on the namespace's loopback (the instance's
    recorded port is pointed at it): ssh with stdin, scp -r both ways and OpenSSH's own client all
    go through ``ssh -W`` on the hypervisor, with the guest's host key pinned."""
    name = f"lt-{uuid.uuid4().hex[:8]}"
    image = boot_sector_guest(system_home / "tiny.hdd", GREETING + b"\r\n")
    assert _create(name, image, "--no-wait") == 0
    conn = libvirt.open(hypervisor.uri)
    p = conn.storagePoolLookupByName(hypervisor.pool)
    ctx = storage.tail(conn, p, storage.volume_names(name)[1], 64 << 20)
    (tmp_path / "ctx.iso").write_bytes(ctx)
    cc = cloud_config(tmp_path / "ctx.iso", tmp_path)
    fake_root = tmp_path / "root"
    (fake_root / ".ssh").mkdir(parents=True, mode=0o700)
    fake_root.chmod(0o700)
    (fake_root / ".ssh/authorized_keys").write_text("\n".join(cc["ssh_authorized_keys"]) + "\n")
    (tmp_path / "host_openssh").write_text(cc["ssh_keys"]["ed25519_private"])
    host_key = tmp_path / "dropbear_host_key"
    subprocess.run(["dropbearconvert", "openssh", "dropbear", tmp_path / "host_openssh", host_key],
                   check=True, capture_output=True)  # fmt: skip
    port = free_port()
    dom = conn.lookupByName(name)
    meta = domain.metadata_of(dom.XMLDesc(0))
    assert meta is not None
    moved = domain.Metadata(**{**dict(meta.__dict__), "ssh_port": port})
    plain = moved.to_xml().replace(f"{domain.PREFIX}:", "").replace(f"xmlns:{domain.PREFIX}=", "xmlns=")
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, plain, domain.PREFIX, domain.NS,
                    libvirt.VIR_DOMAIN_AFFECT_LIVE)  # fmt: skip
    server = hypervisor.ns.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount --bind {fake_root} /root && cd / && "
         f"exec dropbear -F -E -s -p 127.0.0.1:{port} -r {host_key}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(lambda: hypervisor.ns.listening(port), 30)
        capsysbinary.readouterr()
        assert main(["ssh", "-n", name, "--", "echo", "hello", "from", "the", "guest"]) == 0
        assert capsysbinary.readouterr().out == b"hello from the guest\n"
        assert hypervisor.tunnelled_to(port)

        # stdin round trip (ssh NAME -- 'cat > f')
        target = tmp_path / "guest-side" / "f.txt"
        target.parent.mkdir()
        r = subprocess.run(
            [sys.executable, "-m", "cernvm_build.cli.launch", "ssh", name, "--", f"cat > {target}"],
            input=b"through the hypervisor\n", capture_output=True, timeout=60, env={**os.environ},
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert target.read_bytes() == b"through the hypervisor\n"

        # scp -r both ways
        tree = tmp_path / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "a.txt").write_text("A")
        assert main(["scp", "-r", str(tree), f"{name}:{tmp_path / 'guest-side'}/"]) == 0
        assert (tmp_path / "guest-side" / "tree" / "sub" / "a.txt").read_text() == "A"
        back = tmp_path / "back"
        assert main(["scp", "-r", f"{name}:{tmp_path / 'guest-side' / 'tree'}", str(back)]) == 0
        assert (back / "sub" / "a.txt").read_text() == "A"

        # OpenSSH's own client (what -X/-Y run) through the same hop, the guest's key pinned
        host = launch.connect(hypervisor.uri)
        argv = launch.openssh_argv(host, name, ["echo", "openssh"])
        assert any(a.startswith("ProxyCommand=") and "-W 127.0.0.1:" in a for a in argv)
        r = subprocess.run(argv, capture_output=True, timeout=60)
        assert r.returncode == 0 and r.stdout == b"openssh\n", r.stderr
        host.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        conn.close()
    assert main(["destroy", "--force", name]) == 0
    assert hypervisor.volumes() == set()


def test_ctrl_c_during_a_remote_create_leaves_no_volume(
    system_home: Path, hypervisor: Hypervisor, remote_conf: Path
) -> None:
    """SIGINT as the upload begins: exit 130, and neither the domain, the instance's volumes, the
    uploaded image nor the local folder is left."""
    name = f"lt-{uuid.uuid4().hex[:8]}"
    image = boot_sector_guest(system_home / "tiny.hdd", GREETING + b"\r\n")
    child = subprocess.Popen(
        [sys.executable, "-m", "cernvm_build.cli.launch", "create", "--name", name, "--iso", str(image),
         "--memory", "256", "--disk", "100", "--no-wait", "--yes"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stderr is not None
    heard = []
    for line in child.stderr:
        heard.append(line)
        if "uploading the boot image" in line:
            child.send_signal(signal.SIGINT)
            break
    heard.append(child.stderr.read())
    assert child.wait(timeout=120) == 130, "".join(heard)
    assert name not in hypervisor.domains()
    assert hypervisor.volumes() == set()
    assert not list(system_home.glob(f"hosts/*/{name}"))


def test_busy_ports_on_the_hypervisor_are_named_or_avoided(
    system_home: Path,
    hypervisor: Hypervisor,
    remote_conf: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ports are probed on the hypervisor's 127.0.0.1 (through it), not on this machine's: a busy
    --ssh-port or --forward is one line naming the host; a busy port picked here is passed over."""
    busy = free_port()
    holder = hypervisor.ns.run(
        [sys.executable, "-c", "import socket, time; s = socket.socket(); "
         f"s.bind(('127.0.0.1', {busy})); s.listen(); time.sleep(600)"],
    )  # fmt: skip
    try:
        _wait_for(lambda: hypervisor.ns.listening(busy), 30)
        name = f"lt-{uuid.uuid4().hex[:8]}"
        image = boot_sector_guest(system_home / "tiny.hdd", GREETING + b"\r\n")
        assert _create(name, image, "--no-wait", "--ssh-port", str(busy)) != 0
        err = capsys.readouterr().err
        assert f"port 127.0.0.1:{busy} on {hypervisor.ns.address} is busy" in err, err
        assert "Traceback" not in err and name not in hypervisor.domains()
        assert _create(name, image, "--no-wait", "--forward", f"{busy}:80") != 0
        assert f"port 127.0.0.1:{busy} on {hypervisor.ns.address} is busy" in capsys.readouterr().err

        picks = iter([busy])
        real = create.pick_port
        monkeypatch.setattr(create, "pick_port", lambda taken: next(picks, None) or real(taken))
        assert _create(name, image, "--no-wait") == 0, capsys.readouterr().err
        (dom,) = [d for d in hypervisor.open().listAllDomains(0) if d.name() == name]
        meta = domain.metadata_of(dom.XMLDesc(0))
        assert meta is not None and meta.ssh_port != busy and hypervisor.ns.listening(meta.ssh_port)
        assert main(["destroy", "--force", name]) == 0
    finally:
        holder.kill()
        holder.wait()


def test_hops_follow_the_uri() -> None:
    hop = tunnel.hop_of("qemu+ssh://alice@hv.example:2222/system?keyfile=/k&no_verify=1")
    assert hop is not None
    argv = hop.proxy("127.0.0.1", 40000)
    assert argv[-3:] == ["-W", "127.0.0.1:40000", "hv.example"]
    assert argv[argv.index("-p") : argv.index("-p") + 2] == ["-p", "2222"] and "-l" in argv
    assert "StrictHostKeyChecking=no" in argv and "/k" in argv
    pinned = tunnel.hop_of("qemu+libssh://hv/system?known_hosts=/kh")
    assert pinned is not None and "UserKnownHostsFile=/kh" in pinned.options()
    assert "StrictHostKeyChecking=yes" in pinned.options()
    assert tunnel.hop_of("qemu:///system") is None and tunnel.hop_of("test:///default") is None
    assert tunnel.is_remote("qemu+ssh://root@127.0.0.1:2222/system")  # another daemon, even here


def test_tunnels_share_one_connection_in_a_folder_of_the_users_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # a short folder, as /run/user/N is: pytest's tmp_path is too long for a socket path
    tmp_path = Path(tempfile.mkdtemp(prefix="cvl-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    hop = tunnel.hop_of("qemu+ssh://hv/system")
    assert hop is not None
    folder = tmp_path / f"cernvm-launch-ssh-{os.getuid()}"
    assert hop.control == str(folder) and folder.stat().st_mode & 0o777 == 0o700
    argv = hop.proxy("127.0.0.1", 40000)
    assert any(a.startswith(f"ControlPath={folder}/") for a in argv) and "ControlMaster=auto" in argv
    assert "ControlPath" not in " ".join(hop.local_forward(1, 2))  # the user's own long-lived ssh -L
    folder.chmod(0o777)  # writable by others: a socket there could be anyone's
    assert tunnel.control_folder() == ""
    hop = tunnel.hop_of("qemu+ssh://hv/system")
    assert hop is not None and not any("Control" in a for a in hop.proxy("127.0.0.1", 1))
    shutil.rmtree(tmp_path)


def test_a_long_runtime_folder_leaves_tunnels_unshared_not_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket path must fit in 108 bytes (OpenSSH adds a 17-byte suffix while it makes one): under
    a long $XDG_RUNTIME_DIR every ssh -W would stop at 'ControlPath too long' before connecting."""
    long_dir = tmp_path / ("r" * 90)
    long_dir.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(long_dir))
    hop = tunnel.hop_of("qemu+ssh://hv.invalid/system")
    assert hop is not None
    argv = hop.proxy("127.0.0.1", 40000)
    run = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "ControlPath too long" not in run.stderr, run.stderr
    assert not any("Control" in a for a in argv)


demo = test_e2e.demo  # the demo image built against the served demo repository (as test_e2e_context)


@pytest.mark.e2e
def test_the_demo_os_boots_on_the_remote_hypervisor(
    demo: tuple[Path, Any],
    system_home: Path,
    hypervisor: Hypervisor,
    remote_conf: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """One real boot through the remote URI (one only: the suite's budget): create waits for SSH
    through the hypervisor, the user data reached the OS, stdin reaches a command, destroy leaves
    the pool empty. Everything else about remote instances is checked without a boot above."""
    image, srv = demo
    name = f"lt-{uuid.uuid4().hex[:8]}"
    # The repository as a server on the network would be: on this machine's end of the veth,
    # which the guest reaches through QEMU's NAT in the namespace (its 10.0.2.2 is the namespace).
    with serve(srv.root, host=hypervisor.ns.gateway) as repo:
        where = f"{hypervisor.ns.gateway}:{repo.port}"
        code = main(["create", "--name", name, "--iso", str(image), "--memory", "512", "--yes",
                     "--cvmfs-server", where, "--timeout", "420"])  # fmt: skip
        assert code == 0, capfd.readouterr().err
        capfd.readouterr()
        assert name in hypervisor.domains() and name not in _host_domains()
        assert main(["ssh", "-n", name, "--", "hostname"]) == 0
        assert capfd.readouterr().out.strip() == name
        r = subprocess.run([sys.executable, "-m", "cernvm_build.cli.launch", "ssh", name, "--",
                            "cat > /root/from-stdin && sync && cat /root/from-stdin"],
                           input=b"x\n", capture_output=True, timeout=120, check=False)  # fmt: skip
        assert r.returncode == 0 and r.stdout == b"x\n", r.stderr
        (dom,) = [d for d in hypervisor.open().listAllDomains(0) if d.name() == name]
        meta = domain.metadata_of(dom.XMLDesc(0))
        assert meta is not None and hypervisor.tunnelled_to(meta.ssh_port)
        assert main(["destroy", "--force", name]) == 0
    assert hypervisor.volumes() == set() and name not in hypervisor.domains()
