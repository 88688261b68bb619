"""SSH, scp and readiness against a real SSH server: dropbear (the demo OS's server) on 127.0.0.1.

The instance is defined on libvirt's test driver, so it exists for every verb but runs nothing; its
forwarded port is served by dropbear started with the host key and authorized key that launch wrote
into the instance's context ISO. dropbear runs in a private mount namespace whose /root is a
temporary folder, so the host's own /root/.ssh is never read or written.
"""

from __future__ import annotations

import email
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml

from cernvm_build.cli.launch import main
from cernvm_build.errors import NotReadyError, SSHError
from cernvm_build.launch import instances, ready, ssh
from tests.launch.support import create, request

pytestmark = pytest.mark.integration
URI = "test:///default"


def _cloud_config(iso: Path, tmp: Path) -> dict[str, Any]:
    out = tmp / "iso"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", out], check=True, capture_output=True
    )
    msg = email.message_from_bytes((out / "openstack/latest/user_data").read_bytes())
    for part in msg.walk():
        if part.get_content_type() == "text/cloud-config":
            loaded = yaml.safe_load(part.get_payload(decode=True))
            assert isinstance(loaded, dict)
            return loaded
    raise AssertionError("no cloud-config part")


@pytest.fixture
def served(launch_env: Path, image: Path, tmp_path: Path) -> Iterator[tuple[str, instances.Instance]]:
    """An instance on the test driver whose SSH port is answered by dropbear, as the guest would."""
    conn = libvirt.open(URI)  # keeps the test driver's state alive for the test
    name = f"ssh-{os.getpid()}"
    inst = create(conn, request(launch_env, image, name))
    assert inst.meta is not None
    cc = _cloud_config(launch_env / "run" / name / "context.iso", tmp_path)
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
    assert main(["--connect", URI, "ssh", name, "--", "echo", "hello from", "$((6*7))"]) == 0
    assert capfd.readouterr().out == "hello from 42\n"
    assert main(["--connect", URI, "ssh", f"root@{name}", "--", "sh -c 'echo oops >&2; exit 7'"]) == 7
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


def test_wait_times_out_with_console_tail(launch_env: Path, image: Path) -> None:
    conn = libvirt.open(URI)
    name = f"silent-{os.getpid()}"
    inst = create(conn, request(launch_env, image, name))
    assert inst.meta is not None
    Path(inst.meta.console_log).write_text("line 1\nKernel panic - not syncing: VFS\n")
    try:
        # A wait that ignored its timeout would hang here; pytest-timeout ends it as a failure.
        with pytest.raises(NotReadyError) as e:
            ready.wait(conn, name, timeout=2)
        assert "did not answer SSH within 2 s" in e.value.message
        assert e.value.console_tail.endswith("Kernel panic - not syncing: VFS")
    finally:
        instances.destroy(conn, name, force=True)
