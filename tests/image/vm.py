"""Helpers for the image tests: a tiny OS tree to publish, context ISOs, and qemu boots on a serial log."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cernvm_build.accel import detect

#: what ``panic`` in the initrd's init.head.sh prints before its shell, which never ends on a serial
#: console that is a file (the line must be whole: the panic's own line was written before it)
RESCUE_SHELL = r"ucernvm: dropping to a rescue shell.*\n"

INIT = """#!/bin/busybox sh
# Test OS init: report what the boot gave us, leave a mark in the writable root, power off.
/bin/busybox mount -t proc proc /proc
echo "demo-os: init reached"
echo "test-os: release $(cat /etc/test-release)"
marker=none
[ -f /var/lib/marker ] && marker=$(cat /var/lib/marker)
echo "test-os: marker $marker"
echo "test-os: pids $(cat /.cvmfs_pids)"
echo "test-os: LD_LIBRARY_PATH ${LD_LIBRARY_PATH-unset}"
/bin/busybox mkdir -p /sys && /bin/busybox mount -t sysfs sysfs /sys
echo "test-os: crypto self-tests skipped $(cat /sys/module/cryptomgr/parameters/notests 2>&1)"
[ -f /etc/injected ] && echo "test-os: injected $(cat /etc/injected)"
[ -f /srv/inj/escaped ] && echo "test-os: injected through a link $(cat /srv/inj/escaped)"
[ -f /root/.ssh/authorized_keys ] && echo "test-os: authorized_keys $(cat /root/.ssh/authorized_keys)"
[ -f /etc/ssh/ssh_host_ed25519_key ] && echo "test-os: host key $(sed -n 2p /etc/ssh/ssh_host_ed25519_key)"
echo "test-os: scratch $(ls /mnt/.rw | tr '\\n' ' ')"
for p in $(cat /.cvmfs_pids); do echo "test-os: daemon $(tr '\\0' ' ' </proc/$p/cmdline)"; done
before=$(find /mnt/.rw/cache -type f | wc -l)
cat /etc/payload >/dev/null
echo "test-os: cache objects on the scratch disk $before then $(find /mnt/.rw/cache -type f | wc -l)"
echo "boot-$(cat /etc/test-release)" > /var/lib/marker
/bin/busybox sync
echo "test-os: done"
# What systemd does: every mount shared (from boot on); at the end systemd-shutdown unmounts what it
# can with MNT_FORCE (252: every mount but /, /usr, the API file systems and /run/initramfs/*; the OS's
# bind of the scratch disk among them; for FUSE that aborts the connection), makes / private again
# (its switch_root: no pivot_root under shared mounts), switches root to /run/initramfs and runs its
# shutdown program. The root must still read after those unmounts (/etc/late: never read before).
if [ -x /run/initramfs/shutdown ]; then
    # systemd-shutdown's last kill pass: every process stopped (the FUSE daemon too), then in_initrd()
    # for the first time: $SYSTEMD_IN_INITRD, else access("/etc/initrd-release") through the root,
    # which after drop_caches is a FUSE LOOKUP nobody answers (the guest would hang here for good).
    # Run by the busybox on /run's tmpfs: a page of this one may be dropped too, and faulting it in
    # would hang the same way.
    daemons=$(cat /.cvmfs_pids)
    echo 3 >/proc/sys/vm/drop_caches
    # shellcheck disable=SC2016  # expanded by that shell
    /run/initramfs/bin/busybox sh -c '
        for p in "$@"; do kill -STOP "$p"; done
        case "$SYSTEMD_IN_INITRD" in
            0 | 1) initrd="from the environment ($SYSTEMD_IN_INITRD)" ;;
            *) initrd=no; [ -e /etc/initrd-release ] && initrd=yes ;;
        esac
        for p in "$@"; do kill -CONT "$p"; done
        echo "test-os: in_initrd in the stop window: $initrd"' - $daemons
    /bin/busybox mount --make-rshared /
    for m in $(/bin/busybox awk '{print $2}' /proc/mounts | /bin/busybox sort -r); do
        case "$m" in
            / | /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /run | /run/initramfs/*) ;;
            *) /bin/busybox umount -f "$m" 2>/dev/null ;;
        esac
    done
    late=no
    /bin/busybox cat /etc/late >/dev/null 2>&1 && late=yes
    echo "test-os: root readable after the forced unmounts: $late"
    /bin/busybox mount --make-rprivate /
    echo "test-os: handing back to /run/initramfs/shutdown at $(cut -d ' ' -f 1 /proc/uptime)"
    cd /run/initramfs && /bin/busybox mount --bind . . && cd /run/initramfs && /bin/busybox mkdir -p oldroot
    /bin/busybox pivot_root . oldroot && exec /bin/busybox chroot . /shutdown poweroff
fi
/bin/busybox poweroff -f
"""


def make_os_tree(dest: Path, release: str) -> Path:
    """busybox + an /sbin/init that prints what the e2e test checks, then powers off."""
    if dest.exists():
        shutil.rmtree(dest)
    for d in ("bin", "sbin", "etc/ssh", "proc", "sys", "dev", "mnt", "tmp", "var/lib", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", dest / "bin" / "busybox")
    os.symlink("busybox", dest / "bin" / "sh")
    (dest / "sbin" / "init").write_text(INIT)
    (dest / "sbin" / "init").chmod(0o755)
    (dest / "etc" / "test-release").write_text(release + "\n")
    # read only by the OS after switch_root: its object must land in the cache on the scratch disk
    (dest / "etc" / "payload").write_text(f"payload of release {release}\n" * 100)
    # read only after systemd-shutdown's forced unmounts (before "payload": not fetched ahead with it)
    (dest / "etc" / "late").write_text(f"read at shutdown, release {release}\n")
    return dest


def context_iso(dest: Path, user_data: str, layout: str = "cidata") -> Path:
    """A NoCloud (``cidata``: user-data) or config-drive (``CONFIG-2``) ISO carrying ``user_data``."""
    tree = dest.with_suffix(".d")
    shutil.rmtree(tree, ignore_errors=True)
    if layout == "cidata":
        tree.mkdir(parents=True)
        (tree / "user-data").write_text(user_data)
        (tree / "meta-data").write_text("instance-id: test\n")
    else:
        (tree / "openstack" / "latest").mkdir(parents=True)
        (tree / "openstack" / "latest" / "user_data").write_text(user_data)
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(dest), "-V", layout, "-J", "-r", str(tree)],
        check=True,
        capture_output=True,
    )
    return dest


@dataclass
class Boot:
    console: str
    returncode: int | None
    accel: str

    def lines(self, pattern: str) -> list[re.Match[str]]:
        return [m for m in re.finditer(pattern, self.console, re.M)]

    def phases(self) -> dict[str, float]:
        """The first console timestamp of each ``ucernvm: <step>:`` line."""
        out: dict[str, float] = {}
        for m in re.finditer(r"^\[\s*([0-9.]+)\] ucernvm: ([a-z]+):", self.console, re.M):
            out.setdefault(m.group(2), float(m.group(1)))
        return out


def boot(
    image: Path,
    scratch: Path,
    context: Path | None,
    log: Path,
    *,
    kind: str = "iso",
    memory: int = 640,
    timeout: float = 300,
    until: str = r"test-os: done|ucernvm: panic",
    stays_up: str = RESCUE_SHELL,
    net: str = "",
) -> Boot:
    """Boot ``image`` (iso as CD-ROM, else a virtio disk) with a scratch disk and a context ISO.

    ``net`` adds options to the user-mode network (e.g. a ``guestfwd`` to a metadata service).

    Returns when the guest powers off or ``timeout`` passes; once it printed ``until`` it is given
    20 s to power off by itself (it syncs the scratch disk), then killed. ``stays_up``: a console line
    after which it never powers off by itself (a rescue shell, a started service): it is killed as
    soon as that line is whole.
    """
    accel = detect()
    if kind == "iso":
        bootdev = ["-drive", f"file={image},media=cdrom,if=ide,readonly=on", "-boot", "d"]
    else:
        fmt = "raw" if kind == "hdd" else kind
        bootdev = ["-drive", f"file={image},format={fmt},if=virtio,snapshot=on"]
    cmd = [
        "qemu-system-x86_64", "-accel", accel.name, "-m", str(memory), "-smp", "1", "-nodefaults",
        "-display", "none", "-no-reboot", "-serial", f"file:{log}", *bootdev,
        "-drive", f"file={scratch},format=qcow2,if=virtio",
        "-netdev", f"user,id=n0{',' + net if net else ''}", "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    if context is not None:
        cmd += ["-drive", f"file={context},format=raw,if=virtio,readonly=on"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    pattern, final = re.compile(until, re.M), re.compile(stays_up, re.M)
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            if final.search(text):
                break
            if pattern.search(text):
                deadline = min(deadline, time.monotonic() + 20)
            try:  # returns as soon as the guest is off
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    text = log.read_text(errors="replace") if log.exists() else ""
    return Boot(text, proc.returncode, accel.name)


def blank_disk(path: Path, size: str = "1G") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path
