"""Helpers shared by the launch tests: libvirt's test driver handed to launch as an injected host."""

from __future__ import annotations

import email
import os
import subprocess
from pathlib import Path
from typing import Any

import libvirt
import yaml

from cernvm_build import launch
from cernvm_build.accel import Accel
from cernvm_build.launch import config

#: The test driver defines only domains of its own type and runs nothing: launch gets that as the
#: host's accelerator, the way a real host's KVM/TCG probe result reaches it.
TEST_DRIVER = Accel("test", "libvirt test driver")


def driver_host(conn_or_uri: Any) -> launch.Host:
    """A ``Host`` on libvirt's test driver, from an open connection or a ``test://`` URI."""
    if isinstance(conn_or_uri, str) or conn_or_uri is None:
        uri = conn_or_uri or "test:///default"
        return launch.Host(libvirt.open(uri), uri, TEST_DRIVER)
    return launch.Host(conn_or_uri, conn_or_uri.getURI(), TEST_DRIVER)


def request(
    home: Path, image: Path, name: str, cvmfs_server: str | None = None, **settings: Any
) -> launch.InstanceSpec:
    """An InstanceSpec for ``image`` (``home`` is where CERNVM_LAUNCH_HOME points)."""
    del home  # launch finds it through $CERNVM_LAUNCH_HOME, as for users
    return launch.InstanceSpec(
        settings=config.Settings(name=name, disk=200, memory=256).merged(settings),
        name=name,
        user_data=b"#cloud-config\nhostname: custom\n",
        image=str(image),
        cvmfs_server=cvmfs_server,
    )


def create(conn: Any, spec: launch.InstanceSpec, **kw: Any) -> launch.Instance:
    return launch.create_instance(spec, host=driver_host(conn), **kw)


def boot_sector_guest(path: Path, message: bytes, *, echo: bool = False) -> Path:
    """A 512-byte boot sector that prints ``message`` on the serial port and halts (+ 1 MiB, 0644).
    mov si,msg; mov dx,0x3f8; next: lodsb; test al,al; jz halt; out dx,al; jmp next; halt: hlt; jmp halt
    With ``echo`` it then answers each byte it receives with the next one ('a' -> 'b'), so an answer
    cannot be a terminal's own echo: halt: mov dx,0x3fd; in al,dx; test al,1; jz halt; mov dx,0x3f8;
    in al,dx; inc al; out dx,al; jmp halt"""
    code = bytes([0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8])
    echo_loop = bytes.fromhex("BAFD03 EC A801 74F8 BAF803 EC FEC0 EE EBEF")
    code += echo_loop if echo else bytes([0xF4, 0xEB, 0xFD])
    msg_at = 0x7C00 + 3 + len(code)
    sector = bytes([0xBE, msg_at & 0xFF, msg_at >> 8]) + code + message + b"\0"
    assert len(sector) <= 510, "message too long for a boot sector"
    path.write_bytes(sector.ljust(510, b"\0") + b"\x55\xaa" + b"\0" * (1 << 20))
    os.chmod(path, 0o644)
    return path


#: What μCernVM prints when the OS repository cannot be reached (data/bootloader/init.d/10-cvmfs.sh).
PANIC_CONSOLE = (
    b"Linux version 6.1.0 (boot-sector stand-in)\r\n"
    b"[    1.0] ucernvm: cvmfs: mounting demo.cern.ch (latest, first boot) from 10.0.2.2:9\r\n"
    b"[    2.0] ucernvm: panic: CernVM-FS mount of demo.cern.ch failed: [Errno 111] Connection refused\r\n"
    b"ucernvm: dropping to a rescue shell (exit it to power off)\r\n"
)


def cloud_config(iso: Path, tmp: Path) -> dict[str, Any]:
    """The merged cloud-config launch put into a context ISO (what the guest would apply)."""
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
