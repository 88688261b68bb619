"""Boot the built images in real qemu (KVM if it works, else TCG) against the served repository.

One scratch disk across three boots: first boot (iso, cidata context) pins the snapshot; after a
new revision is published the second boot (qcow2) stays pinned and sees the first boot's writes;
the third (iso, config-drive context with cvmfs_tag) moves to the named snapshot.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import object_requests_served

from .conftest import FQRN, Built, ServedRepo
from .vm import RESCUE_SHELL, Boot, blank_disk, boot, context_iso

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]


LOGIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e e2e@test"
CLOUD_CONFIG_KEYS = f"""#cloud-config
hostname: e2e-keys
ssh_authorized_keys:
  - {LOGIN_KEY}
ssh_keys:
  ed25519_private: |
    -----BEGIN OPENSSH PRIVATE KEY-----
    pinned-host-key-body
    -----END OPENSSH PRIVATE KEY-----
  ed25519_public: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostHostHost host
"""


def _user_data(port: int, extra: str = "", host: str = "10.0.2.2") -> str:
    """User data naming the test server as the guest sees the host (``host``)."""
    return (
        "#!/bin/sh\necho amiconfig part, not ours\n"
        f"[ucernvm-begin]\ncvmfs_server={host}:{port}\nresize_rootfs=on\nno_such_key=1\n{extra}"
        "[ucernvm-end]\n"
    )


@contextlib.contextmanager
def _metadata_service(answers: dict[str, bytes]) -> Iterator[tuple[int, list[str]]]:
    """A cloud metadata service on 127.0.0.1: ``answers`` by path, 404 for anything else (the other
    flavours, the IMDSv2 token); yields its port and the requests it got ("METHOD /path")."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            asked.append(f"{self.command} {self.path}")
            body = answers.get(self.path)
            self.send_response(404 if body is None else 200)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        do_GET = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


def _tarball_b64(files: dict[str, str], links: dict[str, str] | None = None) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def _shutdown_seconds(b: Boot) -> float:
    [start] = b.lines(r"^test-os: handing back to /run/initramfs/shutdown at ([\d.]+)")
    end = b.lines(r"^\[([\d.]+)\] ucernvm-shutdown: scratch disk")
    return float(end[-1].group(1)) - float(start.group(1))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _show(b: object, log: Path) -> str:
    return f"console log {log}:\n" + log.read_text(errors="replace")[-3000:]


def test_boot_pin_persist_and_tag(built: Built, test_repo: ServedRepo, tmp_path: Path) -> None:
    port = test_repo.server.port
    scratch = blank_disk(tmp_path / "scratch.qcow2")
    r1 = test_repo.revisions[-1]

    # 1: first boot from the iso: partitions the blank disk, mounts the snapshot the build recorded.
    log1 = tmp_path / "boot1.log"
    with object_requests_served() as fetched1:
        b1 = boot(built.image("iso"), scratch, context_iso(tmp_path / "ctx1.iso", _user_data(port)), log1)
    print(f"accelerator: {b1.accel}; phases: {b1.phases()}")
    assert "ucernvm: panic" not in b1.console, _show(b1, log1)
    assert "first boot: partitioned the empty disk" in b1.console, _show(b1, log1)
    assert "unknown key 'no_such_key' ignored" in b1.console
    assert f"mounted {FQRN} revision {r1.revision} root {r1.root_hash}" in b1.console, _show(b1, log1)
    assert r1.root_hash == built.snapshot_root
    assert "ucernvm: overlay: root = /root.rw/persistent" in b1.console
    assert "ucernvm: cvmfs: cache: no clean stop recorded" in b1.console, _show(b1, log1)  # a new disk
    assert "demo-os: init reached" in b1.console
    assert "test-os: release 1" in b1.console and "test-os: marker none" in b1.console
    # the image's command line reached the kernel as its parameter (a misspelt dotted one is ignored,
    # so only the file tells): no crypto self-tests before /init (~6 s of the kernel's start under TCG)
    assert "test-os: crypto self-tests skipped Y" in b1.console, _show(b1, log1)
    # The FUSE daemon is marked as a root-storage daemon (systemd does not kill it at shutdown) and
    # what the OS reads after switch_root is cached on the scratch disk, not in the initramfs. (This boot
    # parsed its user data: the parser's process mounted, and shows the mount's command line.)
    daemon = "test-os: daemon @ucernvm-cvmfs /rt/bin/python3 -S -X frozen_modules=on"
    daemon += " -m cernvm_build.cvmfs.mount"
    assert daemon in b1.console, _show(b1, log1)
    cached = b1.lines(r"^test-os: cache objects on the scratch disk (\d+) then (\d+)")
    assert cached and int(cached[0].group(2)) == int(cached[0].group(1)) + 1, _show(b1, log1)
    # The shutdown hand-back (what systemd-shutdown does): the initrd's program unmounts the overlay
    # and CernVM-FS, stops the daemon and leaves the scratch disk clean.
    assert "test-os: LD_LIBRARY_PATH unset" in b1.console, _show(b1, log1)  # the initrd's, not the OS's
    # systemd-shutdown's stop window after drop_caches asks no file of the root (90-boot.sh)
    assert "test-os: in_initrd in the stop window: from the environment (0)" in b1.console, _show(b1, log1)
    # systemd-shutdown's forced unmounts leave CernVM-FS alone (under /run/initramfs): the root still reads
    assert "test-os: root readable after the forced unmounts: yes" in b1.console, _show(b1, log1)
    assert "ucernvm-shutdown: OS root (overlay) unmounted" in b1.console, _show(b1, log1)
    assert "ucernvm-shutdown: scratch disk clean (read-only)" in b1.console, _show(b1, log1)
    print(f"shutdown: {_shutdown_seconds(b1):.2f} s from the hand-back to the disk being clean")
    # the cache is marked clean (the next start skips its checksum checks: plaincache.take_clean), by the
    # daemon or, where systemd-shutdown made the disk read-only first, by the shutdown program
    assert "ucernvm-shutdown: cache marked clean" in b1.console, _show(b1, log1)
    pids = b1.lines(r"^test-os: pids (\d+)")
    assert pids and int(pids[0].group(1)) > 1, "the FUSE pid must be recorded in /.cvmfs_pids"

    # 2: a new revision appears; the qcow2 boot stays on the pinned snapshot and keeps the writes.
    r2 = test_repo.publish("2", "release-2")
    log2 = tmp_path / "boot2.log"
    with object_requests_served() as fetched:
        b2 = boot(
            built.image("qcow2"),
            scratch,
            context_iso(tmp_path / "ctx2.iso", _user_data(port)),
            log2,
            kind="qcow2",
        )
    assert "ucernvm: panic" not in b2.console, _show(b2, log2)
    assert "first boot" not in b2.console
    assert f"root {r1.root_hash}" in b2.console and "pinned since" in b2.console, _show(b2, log2)
    assert "test-os: release 1" in b2.console
    assert "test-os: marker boot-1" in b2.console, "writes of the first boot must persist"
    assert "ucernvm: devices: e2fsck: UROOT: clean" in b2.console, _show(b2, log2)
    # the first boot's shutdown marker reached this boot's daemon: no first-use checksum of its files
    assert "ucernvm: cvmfs: cache: the last stop was clean" in b2.console, _show(b2, log2)
    assert "recovering journal" not in b2.console, "a clean shutdown leaves no journal to replay"
    # Nothing the cache has is fetched again; only the new revision's tag database (the pinned
    # snapshot's tag is looked up in it) is new.
    assert fetched1 and not set(fetched) & set(fetched1), fetched
    assert all(" HTTP/" in f and f.split(" HTTP/")[0].endswith("H") for f in fetched), fetched

    # 2b: the server is unreachable (a port nothing listens on): the pinned snapshot boots from the
    # cache on the scratch disk.
    log2b = tmp_path / "boot2b.log"
    down = _user_data(_closed_port())
    b2b = boot(built.image("iso"), scratch, context_iso(tmp_path / "ctx2b.iso", down), log2b)
    assert "ucernvm: panic" not in b2b.console, _show(b2b, log2b)
    assert f"root {r1.root_hash}" in b2b.console and "test-os: release 1" in b2b.console, _show(b2b, log2b)

    # 3: cvmfs_tag (from an OpenStack config drive this time) selects the named snapshot;
    # cernvm_inject unpacks its tarball into the new root.
    # The test OS has OpenSSH's /etc/ssh but no cloud-init: the bootloader applies the cloud-config's
    # login key and pinned host key itself.
    # An absolute link of the payload's: the file behind it lands in the OS's /srv/inj, as the OS
    # resolves the link (busybox tar followed it in the initramfs, outside the OS).
    payload = _tarball_b64(
        {"etc/injected": "from-user-data", "etc/inj-link/escaped": "resolved-in-the-os"},
        links={"etc/inj-link": "/srv/inj"},
    )
    inject = f"cvmfs_tag=release-2\ncernvm_inject={payload}\n"
    inject += "cvmfs_quota_limit=50\n"  # passed to the mount as --quota-limit 50
    ud3 = CLOUD_CONFIG_KEYS + _user_data(port, inject)
    ctx3 = context_iso(tmp_path / "ctx3.iso", ud3, layout="CONFIG-2")
    log3 = tmp_path / "boot3.log"
    b3 = boot(built.image("iso"), scratch, ctx3, log3)
    assert "ucernvm: panic" not in b3.console, _show(b3, log3)
    assert f"mounted {FQRN} revision {r2.revision} root {r2.root_hash} tag release-2" in b3.console, _show(
        b3, log3
    )
    assert "test-os: release 2" in b3.console
    assert "test-os: marker boot-1" in b3.console
    assert "ucernvm: inject: cernvm_inject: 3 members unpacked into /" in b3.console, _show(b3, log3)
    assert "test-os: injected from-user-data" in b3.console
    assert "test-os: injected through a link resolved-in-the-os" in b3.console, _show(b3, log3)
    assert "ucernvm: context: cvmfs_quota_limit=50" in b3.console
    assert "--quota-limit 50 " in b3.console, _show(b3, log3)
    assert (
        "ucernvm: keys: no cloud-init in the OS; from the user data: /root/.ssh/authorized_keys "
        "/etc/ssh/ssh_host_ed25519_key /etc/hostname" in b3.console
    ), _show(b3, log3)
    assert f"test-os: authorized_keys {LOGIN_KEY}" in b3.console
    assert "test-os: host key pinned-host-key-body" in b3.console


def test_demo_os_gets_the_saved_user_data(built: Built, test_repo: ServedRepo, tmp_path: Path) -> None:
    """The real demo OS (busybox + dropbear from Debian packages) boots from the hdd image and finds
    the user data where the bootloader saved it (/mnt/.rw/context/user-data). There is no context
    drive: the user data comes from a cloud metadata service (EC2 flavour) that the test runs on the
    host and qemu's user network forwards to the guest as 169.254.169.254:80."""
    from cernvm_build.cvmfs.publish import publish_tree
    from cernvm_build.demo.os_tree import build_demo_os

    demo = build_demo_os(tmp_path / "demo-os")
    r = publish_tree(
        test_repo.stratum / FQRN, FQRN, test_repo.keys, demo.root, tag="demo-os", normalize_owner=True
    )
    # The user network is link-local, as on a cloud, so that the metadata address is inside it (qemu
    # forwards to a command only there); the host is then 169.254.0.2 for the guest.
    ud = "#cloud-config\nhostname: e2e-demo\n"
    ud += _user_data(test_repo.server.port, "cvmfs_tag=demo-os\n", host="169.254.0.2")
    log = tmp_path / "demo.log"
    with _metadata_service({"/2016-04-19/user-data": ud.encode()}) as (port, asked):
        # one relay process per connection: the guest's requests reach the service on the host
        relay = f"{shutil.which('busybox')} nc 127.0.0.1 {port}"
        fwd = "net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15"
        fwd += f",guestfwd=tcp:169.254.169.254:80-cmd:{relay}"
        b = boot(
            built.image("hdd"),
            blank_disk(tmp_path / "scratch.qcow2"),
            None,
            log,
            kind="hdd",
            until=r"demo-os: ready|ucernvm: panic",
            stays_up=rf"{RESCUE_SHELL}|demo-os: ready: .*\n",  # then sshd runs: no poweroff to wait for
            net=fwd,
        )
    assert "GET /2016-04-19/user-data" in asked, asked
    source = "ucernvm: context: user data from metadata ec2 http://169.254.169.254/2016-04-19/user-data"
    assert source in b.console, _show(b, log)
    assert f"mounted {FQRN} revision {r.revision} root {r.root_hash} tag demo-os" in b.console, _show(b, log)
    assert "demo-os: init reached" in b.console, _show(b, log)
    assert "demo-os: user data applied from /mnt/.rw/context/user-data" in b.console, _show(b, log)
