"""SSH, scp and readiness against a real SSH server: dropbear (the demo OS's server) on 127.0.0.1.

The instance is defined on libvirt's test driver, so it exists for every verb but runs nothing; its
forwarded port is served by dropbear started with the host key and authorized key that launch wrote
into the instance's context ISO. dropbear runs in a private mount namespace whose /root is a
temporary folder, so the host's own /root/.ssh is never read or written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from cernvm_build.cli.launch import main
from cernvm_build.errors import NotReadyError, SSHError
from cernvm_build.launch import instances, ready, ssh
from tests.launch.support import cloud_config, create, request

pytestmark = pytest.mark.integration
URI = "test:///default"


@pytest.fixture
def served(launch_env: Path, image: Path, tmp_path: Path) -> Iterator[tuple[str, instances.Instance]]:
    """An instance on the test driver whose SSH port is answered by dropbear, as the guest would."""
    conn = libvirt.open(URI)  # keeps the test driver's state alive for the test
    name = f"ssh-{os.getpid()}"
    inst = create(conn, request(launch_env, image, name))
    assert inst.meta is not None
    cc = cloud_config(launch_env / "run" / name / "context.iso", tmp_path)
    fake_root = tmp_path / "root"
    (fake_root / ".ssh").mkdir(parents=True, mode=0o700)
    fake_root.chmod(0o700)
    (fake_root / ".ssh/authorized_keys").write_text("\n".join(cc["ssh_authorized_keys"]) + "\n")
    openssh_key = tmp_path / "host_openssh"
    openssh_key.write_text(cc["ssh_keys"]["ed25519_private"])
    host_key = tmp_path / "dropbear_ed25519_host_key"
    subprocess.run(
        ["dropbearconvert", "openssh", "dropbear", openssh_key, host_key], check=True, capture_output=True
    )
    port = inst.meta.ssh_port
    server = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount --bind {fake_root} /root && cd / && exec dropbear -F -E -s -p 127.0.0.1:{port} -r {host_key}"
         f" -P {tmp_path}/dropbear.pid"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield name, inst
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        dom = conn.lookupByName(name)
        dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        conn.close()


def test_wait_then_commands_return_the_remote_exit_status(
    served: tuple[str, instances.Instance], capfd: pytest.CaptureFixture[str]
) -> None:
    name, _ = served
    conn = libvirt.open(URI)
    target = ready.wait(conn, name, timeout=30)
    assert target.host == "127.0.0.1"
    assert main(["--connect", URI, "ssh", "-n", name, "--", "echo", "hello from", "$((6*7))"]) == 0
    assert capfd.readouterr().out == "hello from 42\n"
    assert main(["--connect", URI, "ssh", "-n", f"root@{name}", "--", "sh -c 'echo oops >&2; exit 7'"]) == 7
    assert capfd.readouterr().err == "oops\n"


def test_scp_both_ways(served: tuple[str, instances.Instance], tmp_path: Path) -> None:
    name, _ = served
    ready.wait(libvirt.open(URI), name, timeout=30)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(300_000))
    remote = tmp_path / "remote-copy.bin"  # the "guest" here shares the host's /tmp
    assert main(["--connect", URI, "scp", str(src), f"{name}:{remote}"]) == 0
    back = tmp_path / "back.bin"
    assert main(["--connect", URI, "scp", f"{name}:{remote}", str(back)]) == 0
    assert back.read_bytes() == src.read_bytes()
    assert main(["--connect", URI, "scp", f"{name}:/nonexistent/file", str(tmp_path)]) == 8


def test_a_different_host_key_is_refused(served: tuple[str, instances.Instance]) -> None:
    name, inst = served
    assert inst.meta is not None
    ready.wait(libvirt.open(URI), name, timeout=30)
    from cernvm_build.launch import keys

    impostor = keys.generate("x").public_openssh
    t = ssh.Target("127.0.0.1", inst.meta.ssh_port, "root", impostor, Path(inst.meta.client_key))
    with pytest.raises(SSHError, match="not the one launch generated"):
        ssh.connect(t)


@pytest.mark.timeout(60)
def test_an_attempt_through_a_tunnel_that_closes_is_not_yet_at_once(tmp_path: Path) -> None:
    """A remote guest still booting: the tunnel's command (``ssh -W`` on the hypervisor) reads the
    client's first bytes and ends, as when the hypervisor's forward finds nothing listening yet. The
    attempt ends as NotYet on the closed connection, not by waiting out its timeout: paramiko's
    ProxyCommand spun a CPU until then (a hung attempt here would be ended by pytest-timeout)."""
    from cernvm_build.launch import keys

    key = keys.generate("x")
    (tmp_path / "id").write_text(key.private_openssh)
    (tmp_path / "id").chmod(0o600)
    t = ssh.Target("127.0.0.1", 22, "root", key.public_openssh, tmp_path / "id", ("sh", "-c", "head -c1"))
    with pytest.raises(ssh.NotYet, match=r"reset|EOF"):
        ssh.connect(t, timeout=600)


@pytest.mark.timeout(60)
def test_no_second_attempt_while_the_guests_sshd_serves_one(tmp_path: Path) -> None:
    """Readiness staggers attempts only while the earlier ones hear nothing (slirp accepted, the
    guest is not up): once the guest's sshd answered one (its banner), another login next to it
    would only add key exchanges to the booting guest's work."""
    import socket
    import threading

    from cernvm_build.launch import keys

    key = keys.generate("x")
    (tmp_path / "id").write_text(key.private_openssh)
    (tmp_path / "id").chmod(0o600)
    silent, answering = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve(server: socket.socket, banner: bytes) -> None:
        conn, _ = server.accept()
        held.append(conn)
        conn.sendall(banner)  # then stalls, as a busy guest's sshd in its key exchange

    for server, banner in ((silent, b""), (answering, b"SSH-2.0-slow\r\n")):
        threading.Thread(target=serve, args=(server, banner), daemon=True).start()
    attempts = []
    for server in (silent, answering):
        t = ssh.Target("127.0.0.1", server.getsockname()[1], "root", key.public_openssh, tmp_path / "id")
        attempts.append(ready._Attempt(t, 30, threading.Event()))
    deadline = time.monotonic() + 20
    while not attempts[1].heard and time.monotonic() < deadline:
        time.sleep(0.05)
    assert attempts[1].heard and not attempts[1].done
    assert not attempts[0].heard
    assert ready._more(attempts[:1])  # only a silent one waits: stagger another next to it
    assert not ready._more(attempts)  # the guest serves one: wait for it
    for conn in held:
        conn.close()


def test_wait_times_out_with_console_tail(launch_env: Path, image: Path) -> None:
    conn = libvirt.open(URI)
    name = f"silent-{os.getpid()}"
    inst = create(conn, request(launch_env, image, name))
    assert inst.meta is not None
    Path(inst.meta.console_log).write_text("line 1\nucernvm: cvmfs: mounting demo.cern.ch\n")
    try:
        # A wait that ignored its timeout would hang here; pytest-timeout ends it as a failure.
        with pytest.raises(NotReadyError) as e:
            ready.wait(conn, name, timeout=2)
        assert "did not answer SSH within 2 s" in e.value.message
        assert e.value.console_tail.endswith("ucernvm: cvmfs: mounting demo.cern.ch")
    finally:
        instances.destroy(conn, name, force=True, home=launch_env)


def test_ssh_passes_stdin_to_the_command(
    served: tuple[str, instances.Instance], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """echo x | cernvm-launch ssh vm -- 'cat > f' writes x (stdin a pipe, not a terminal)."""
    name, _ = served
    ready.wait(libvirt.open(URI), name, timeout=30)
    dest = tmp_path / "from-stdin"
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"x\n")
    os.close(write_fd)
    with open(read_fd, encoding="utf-8") as pipe:
        monkeypatch.setattr(sys, "stdin", pipe)
        assert main(["--connect", URI, "ssh", name, "--", f"cat > {dest}"]) == 0
    assert dest.read_bytes() == b"x\n"


def test_openssh_argv_pins_the_host_key_and_forwards_x11(
    served: tuple[str, instances.Instance], tmp_path: Path
) -> None:
    """-X/-Y go to OpenSSH's client with the instance's key and only its pinned host key."""
    name, inst = served
    conn = libvirt.open(URI)
    ready.wait(conn, name, timeout=30)
    from cernvm_build import launch
    from tests.launch.support import driver_host

    argv = launch.openssh_argv(driver_host(conn), name, ["echo", "ok"], x11="-Y", tty=False)
    assert "-Y" in argv and "-T" in argv and "StrictHostKeyChecking=yes" in argv
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert inst.meta is not None
    known = Path(inst.meta.client_key).parent / "known_hosts"
    assert known.read_text().split()[1:] == inst.meta.host_key.split()[:2]


def test_scp_recursive_globs_both_ways_and_clear_errors(
    served: tuple[str, instances.Instance], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = served
    ready.wait(libvirt.open(URI), name, timeout=30)
    src = tmp_path / "results"
    (src / "sub").mkdir(parents=True)
    (src / "a.root").write_bytes(os.urandom(70_000))
    (src / "sub" / "b.txt").write_text("b\n")
    guest = tmp_path / "guest"  # the "guest" shares this machine's files
    guest.mkdir()
    args = ["--connect", URI, "scp"]

    # a folder needs -r; with -r it lands inside an existing remote folder
    assert main([*args, str(src), f"{name}:{guest}/"]) == 2
    assert "copy folders with scp -r" in capsys.readouterr().err
    assert main([*args, "-r", str(src), f"{name}:{guest}"]) == 0
    assert (guest / "results" / "sub" / "b.txt").read_text() == "b\n"
    assert (guest / "results" / "a.root").read_bytes() == (src / "a.root").read_bytes()

    # and back, into a new local folder, and by a remote glob
    back = tmp_path / "back"
    assert main([*args, "-r", f"{name}:{guest}/results", str(back)]) == 0
    assert (back / "sub" / "b.txt").read_text() == "b\n"
    here = tmp_path / "globbed"
    here.mkdir()
    assert main([*args, f"{name}:{guest}/results/*.root", str(here)]) == 0
    assert [p.name for p in here.iterdir()] == ["a.root"]
    # several local files into a remote folder
    assert main([*args, str(src / "a.root"), str(src / "sub" / "b.txt"), f"{name}:{guest}/"]) == 0
    assert (guest / "b.txt").exists()

    # a missing remote folder: one line, exit 8, nothing left here
    capsys.readouterr()
    assert main([*args, "-r", f"{name}:/nonexistent/folder", str(tmp_path / "nothing")]) == 8
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2 and "nonexistent" in err
    assert not (tmp_path / "nothing").exists() and not list(tmp_path.glob(".scp-*"))
    # a folder without -r, downloading
    assert main([*args, f"{name}:{guest}/results", str(tmp_path / "x")]) == 8
    assert "scp -r" in capsys.readouterr().err
    # uploading into a missing remote folder
    assert main([*args, str(src / "a.root"), f"{name}:/nonexistent/dir/"]) == 8
    err = capsys.readouterr().err
    assert "not a folder on the instance" in err and "Traceback" not in err


def test_scp_of_the_remote_home_merges_into_an_existing_folder(
    served: tuple[str, instances.Instance], tmp_path: Path
) -> None:
    """``vm:.`` and ``vm:`` copy the guest home's contents; what the destination held stays (this
    once removed the whole destination folder)."""
    name, _ = served
    ready.wait(libvirt.open(URI), name, timeout=30)
    guest_home = tmp_path / "root"  # the guest's /root (the fixture binds it there)
    (guest_home / "results").mkdir()
    (guest_home / "results" / "r.txt").write_text("from guest\n")
    (guest_home / "notes.txt").write_text("notes\n")
    for remote in (f"{name}:.", f"{name}:"):
        here = tmp_path / f"here{len(remote)}"
        (here / "results").mkdir(parents=True)
        (here / "results" / "mine.txt").write_text("mine\n")
        (here / "other.txt").write_text("other\n")
        (here / "notes.txt").write_text("old notes\n")
        assert main(["--connect", URI, "scp", "-r", remote, str(here)]) == 0
        assert (here / "other.txt").read_text() == "other\n"
        assert (here / "results" / "mine.txt").read_text() == "mine\n"
        assert (here / "results" / "r.txt").read_text() == "from guest\n"
        assert (here / "notes.txt").read_text() == "notes\n"  # a file replaces a file, as scp
        assert not list(here.glob(".scp-*"))


def test_scp_of_names_beginning_with_a_dash_both_ways(
    served: tuple[str, instances.Instance], tmp_path: Path
) -> None:
    """The guest's cd and chmod were given such a path as it was (only tar got "--", pr26c 5):
    ``scp vm:-run/out.txt .`` failed (cd read it as its options) and an upload to ``vm:-notes.txt``
    with "cannot write" after chmod read the name as its options."""
    name, _ = served
    ready.wait(libvirt.open(URI), name, timeout=30)
    guest_home = tmp_path / "root"  # the guest's /root, where relative remote paths start
    (guest_home / "-run").mkdir()
    (guest_home / "-run" / "out.txt").write_text("from guest\n")
    back = tmp_path / "back.txt"
    assert main(["--connect", URI, "scp", f"{name}:-run/out.txt", str(back)]) == 0
    assert back.read_text() == "from guest\n"
    src = tmp_path / "notes.txt"
    src.write_text("mine\n")
    src.chmod(0o600)
    assert main(["--connect", URI, "scp", str(src), f"{name}:-notes.txt"]) == 0
    assert (guest_home / "-notes.txt").read_text() == "mine\n"
    assert (guest_home / "-notes.txt").stat().st_mode & 0o777 == 0o600
