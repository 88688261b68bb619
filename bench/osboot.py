"""Issue 13's benchmark: the same Debian 12 tree booted (a) through μCernVM and (b) plainly from an ext4
qcow2 with the same kernel, in one run, to SSH answering (the sshd banner through a forwarded port).

(a) the debian12 iso (the tree published into a throwaway demo-keyed repository served on 127.0.0.1),
    a blank scratch disk; (b) the same tree written into an ext4 image (``mkfs.ext4 -d``, owners kept)
    booted with ``-kernel`` and a minimal initrd (busybox + virtio/ext4 modules, ``switch_root``).
Both: the same qemu (accelerator as ``accel.detect`` says — TCG here, stated in the output), memory,
one CPU, user networking, and the same context drive (cloud-init runs in both). Aim: (a) <= 1.3x (b).
Also: MB of objects the guest fetched during (a) (the server's log), next to the tree's size.
``--quick`` is the same (one boot each: nothing smaller to boot). Needs root (dpkg builds the tree).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, print_table
from cernvm_build import profile
from cernvm_build.accel import detect
from cernvm_build.bootloader.kernel import Kernel, fetch_debian_kernel
from cernvm_build.bootloader.modules import resolve
from cernvm_build.context import BuildContext
from cernvm_build.cvmfs.serve import serve
from cernvm_build.demo.os_tree import DEFAULT_EPOCH
from cernvm_build.demo.repository import publish_debian
from cernvm_build.image.build import build_image
from cernvm_build.launch import userdata
from cernvm_build.launch.context import build_iso
from cernvm_build.osbuild.debian import build_debian_tree

B = "osboot"
PLAIN_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "crc32c_generic")
PLAIN_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in $(/bin/busybox cat /modules.order); do /bin/busybox insmod /modules/$m.ko; done
/bin/busybox mkdir -p /newroot
n=0
until /bin/busybox mount -t ext4 /dev/vda /newroot; do
    n=$((n + 1)); [ $n -gt 50 ] && exec /bin/busybox sh; /bin/busybox sleep 0.2
done
/bin/busybox mount --move /dev /newroot/dev
/bin/busybox umount /proc
exec /bin/busybox switch_root /newroot /sbin/init
"""


def _plain_initrd(kernel: Kernel, dest: Path) -> Path:
    mods = resolve(kernel.modules, kernel.version, PLAIN_MODULES)
    stage = dest.with_suffix(".d")
    for d in ("bin", "proc", "dev", "modules"):
        (stage / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/busybox", stage / "bin/busybox")
    for name in mods.order:
        (stage / "modules" / f"{name}.ko").write_bytes(mods.files[name])
    (stage / "modules.order").write_text("\n".join(mods.order) + "\n")
    (stage / "init").write_text(PLAIN_INIT)
    (stage / "init").chmod(0o755)
    listing = subprocess.run(["find", "."], cwd=stage, capture_output=True, check=True).stdout
    cpio = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"], cwd=stage, input=listing, capture_output=True
    )
    dest.write_bytes(
        subprocess.run(["gzip", "-1"], input=cpio.stdout, capture_output=True, check=True).stdout
    )
    return dest


def _ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(3)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _boot_to_ssh(disks: list[str], extra: list[str], log: Path, timeout: float) -> float:
    port = _free_port()
    cmd = [
        "qemu-system-x86_64", "-accel", detect().name, "-m", "1024", "-smp", "1", "-nodefaults",
        "-display", "none", "-no-reboot", "-serial", f"file:{log}", *extra, *disks,
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < timeout and proc.poll() is None:
            if _ssh_banner(port):
                return time.monotonic() - start
            time.sleep(1)
        raise RuntimeError(f"no SSH banner within {timeout:.0f} s (console: {log})")
    finally:
        proc.kill()
        proc.wait()


def run(quick: bool) -> list[Result]:
    accel = detect()
    prof = profile.load("debian12")
    kernel = fetch_debian_kernel(prof.kernel.package or "linux-image-cloud-amd64")
    work = Path(tempfile.mkdtemp(prefix="bench-osboot-", dir="/var/tmp"))
    fetched: list[int] = []
    try:
        publish_debian(work / "repo", kernel=kernel)
        tree = build_debian_tree("12", epoch=DEFAULT_EPOCH, kernel=kernel).root  # the cached tree
        srv = serve(work / "repo")
        try:
            boot = dataclasses.replace(prof.bootloader, cmdline=[*prof.bootloader.cmdline, "no_timer_check"])
            prof = dataclasses.replace(
                prof, cvmfs=dataclasses.replace(prof.cvmfs, servers=[srv.repo_url()]), bootloader=boot
            )
            res = build_image(prof, work / "images", formats=["iso"], ctx=BuildContext.from_environment())
            iso = res.artifacts[0].path
            # the launch's user data: cloud-config for cloud-init + the [ucernvm-begin] block (the server
            # as the guest sees the host); the plain boot reads the same drive
            ud = userdata.merge(userdata.parse(b"#cloud-config\n"), hostname="bench", authorized_keys=[],
                                host_key_private="", host_key_public="",
                                ucernvm={"cvmfs_server": f"10.0.2.2:{srv.port}"})  # fmt: skip
            (ud.cloud_config or {}).pop("ssh_keys")  # the guests make their own host keys, both alike
            ctx = build_iso(work / "context.iso", userdata.render(ud), name="bench", instance_id="bench")
            ctx_drive = ["-drive", f"file={ctx},format=raw,if=virtio,readonly=on"]
            # (a) μCernVM
            scratch = work / "scratch.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", scratch, "4G"], check=True)
            counter = _Fetched(work / "repo")
            logger = logging.getLogger("cernvm_build.cvmfs.serve")
            logger.addHandler(counter)
            logger.setLevel(logging.DEBUG)
            t_ucernvm = _boot_to_ssh(
                ["-drive", f"file={scratch},format=qcow2,if=virtio", *ctx_drive],
                ["-drive", f"file={iso},media=cdrom,if=ide,readonly=on", "-boot", "d"],
                work / "ucernvm.log",
                1800,
            )
            logger.removeHandler(counter)
            fetched.append(counter.bytes)
        finally:
            srv.close()
        # (b) the same tree on ext4
        raw = work / "plain.img"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", tree, raw, "2G"], check=True)
        plain = work / "plain.qcow2"
        subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", raw, plain], check=True)
        raw.unlink()
        initrd = _plain_initrd(kernel, work / "plain-initrd.gz")
        t_plain = _boot_to_ssh(
            ["-drive", f"file={plain},format=qcow2,if=virtio", *ctx_drive],
            ["-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append",
             "console=ttyS0,115200 quiet no_timer_check rw"],
            work / "plain.log",
            1800,
        )  # fmt: skip
        size = sum(p.lstat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [
        Result(B, f"boot to SSH [{accel.name}] μCernVM", t_ucernvm, "s", f"plain ext4 [{accel.name}]",
               t_plain, "<= 1.3x plain", t_ucernvm <= 1.3 * t_plain),
        Result(B, "MB fetched (first boot)", fetched[0] / 1e6, "MB", "tree size", size / 1e6),
    ]  # fmt: skip


class _Fetched(logging.Handler):
    """Bytes of the repository objects (``/data/``) the server sent: each logged GET's file size."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root, self.bytes, self.objects = root, 0, 0

    def emit(self, record: logging.LogRecord) -> None:
        m = re.search(r'"GET /cvmfs/(\S+/data/\S+) HTTP/[0-9.]+" 200 ', record.getMessage())
        if m:
            with contextlib.suppress(OSError):
                self.bytes += (self.root / m.group(1)).stat().st_size
                self.objects += 1


if __name__ == "__main__":
    print_table(run(quick="--quick" in sys.argv))
