"""Issue 13's benchmark: the same Debian 12 tree booted (a) through μCernVM and (b) plainly from an ext4
qcow2 with the same kernel, in one run, to SSH answering (the sshd banner through a forwarded port).

(a) the debian12 hdd image (the tree published into a throwaway demo-keyed repository served on
    127.0.0.1) and a blank scratch disk, attached as ``cernvm-launch`` attaches them (``domain.xml.j2``;
    the hdd is the format it pulls from a release): all on virtio, the image read-only and first in the
    boot order; (b) the same tree written into an ext4 image (``mkfs.ext4 -d``, owners kept) booted
    with ``-kernel`` and a minimal initrd (busybox + virtio/ext4 modules, ``switch_root``).
Both: the same kernel options for its own start (``PLAIN_SAME``), the same qemu (accelerator as
``accel.detect`` says — TCG here, stated in the output), memory, one CPU, user networking, a virtio-rng
device fed from the host's ``/dev/urandom`` (as the launcher's ``<rng model='virtio'>``: without it the
first random read in either guest waits ~1 guest-s for the kernel's entropy), and the same context drive
(cloud-init runs in both); (a) and (b) boot at the same time, so that on a shared machine both meet the
same load. Aim: (a) <= 1.3x (b).
Each setup boots twice on its disks: boot to SSH, then in the guest ``find /usr`` (entries/s) and reading
500 files of /usr/lib (MB/s), twice with the kernel's caches dropped (for (a) the first pass fetches from
the server, the second reads the cache on the scratch disk: the FUSE client's figure of issue 14), then
``systemctl poweroff`` (shutdown seconds), then the reboot to SSH. The two reboots start together, as
every other pair boots: the plain side's passes end sooner, and μCernVM's reboot used to run alone on
the host (pass B of stop 10, seconds from the kernel's start: that reboot alone 37.0, the same disk's
reboot from the iso side by side 41.0, the seeded first boot side by side 41.4), which made it look
~4 s better than the first boots. ``systemd-analyze`` blame and critical chain of both first boots go
to stderr (where the time goes). Also: MB of objects the guest fetched per
boot (the server's log), next to the tree's size.
Then the pre-warmed scratch disk (``bootloader.seed``): the object names (a)'s first boot fetched up to
its login (SSH answered and ``systemctl is-system-running --wait`` returned, before the read passes)
make a seed; (c) μCernVM on a new scratch disk backed by that seed (as ``cernvm-launch create --seed``
makes it) and (d) a fresh copy of (b)'s ext4 disk (a first boot too: cloud-init's first-boot work)
boot at the same time, to SSH. Rows: (c) vs (d), MB (c) fetched, the seed's size and object count.
Then (k) an image of the same profile carrying that trace up to SSH answering as its boot list (``image
build --boot-list``: names only, in the initrd, in first-fetch order; the mount fetches them ahead,
pipelined, once ready; ``boot_list_names``) on a
blank scratch disk and (l) another fresh copy of (b)'s disk, side by side, both first boots.
Last, (e) μCernVM from the iso of the same build on an IDE CD-ROM (as the launcher attaches an iso, and
as this bench booted before) and (f) the plain disk, both a reboot on their disks, side by side: the
medium's part of the boot (isolinux's BIOS reads from the CD vs SeaBIOS's virtio-blk) stays visible.
Under TCG, last, (g)/(h) a reboot of both and (i)/(j) a seeded first boot of both (new copies of the
seeded and fresh disks) under ``-icount shift=3``: while the guest runs, its clock counts its own
instructions, so "kernel start -> ssh.service active" (systemd's ActiveEnterTimestampMonotonic) holds
the guest's work without the host's part a wall clock also holds (TCG translating code run once, qemu's
device emulation, the other guest). While the guest is idle (waiting for a disk or the server) its
clock runs with the host's (icount's default ``sleep=on``; ``sleep=off`` would jump it to the next
timer and fire the guest's network timeouts), so those waits count as they took: each row's extra
gives both guests' idle + iowait seconds by then (``/proc/stat``). Under KVM these rows are left out.
``--quick`` boots (a) and (b) only (first boot, read passes, shutdown, reboot: ~6 min, not ~15): the
first boot's A/B between two builds. ``--cpus=2``: also (m) μCernVM on a blank scratch disk and (n)
a fresh ext4 copy with two vCPUs each, one guest at a time, alternating (first boots, then reboots):
on one vCPU the FUSE daemon and systemd share the CPU (~8 min more, so not in the default run; the
1-vCPU rows are unchanged). Needs root (dpkg builds the tree).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, flags, print_table
from cernvm_build import profile
from cernvm_build.accel import detect
from cernvm_build.bootloader.disk import SCRATCH_SERIAL
from cernvm_build.bootloader.kernel import Kernel, fetch_debian_kernel
from cernvm_build.bootloader.modules import resolve
from cernvm_build.bootloader.seed import make_seed, objects_from_trace
from cernvm_build.context import BuildContext
from cernvm_build.cvmfs.serve import serve
from cernvm_build.demo.os_tree import DEFAULT_EPOCH
from cernvm_build.demo.repository import publish_debian
from cernvm_build.image.build import KERNEL_OWN, build_image
from cernvm_build.launch import bootwatch, keys, userdata
from cernvm_build.launch import seed as launch_seed
from cernvm_build.launch.context import build_iso
from cernvm_build.osbuild.debian import build_debian_tree

T = TypeVar("T")

B = "osboot"
#: files read per in-guest pass (the first 500 of /usr/lib in name order, ~5 s of reading on ext4)
FILES = 500
#: what μCernVM's image gives its kernel that changes the kernel's own start (``image.build.KERNEL_OWN``),
#: given to the plain boot too: the same kernel starts alike in both (the crypto self-tests took
#: ~6 guest-s of it under TCG), the setups differ from the initrd on
PLAIN_SAME = " ".join(KERNEL_OWN)
PLAIN_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "crc32c_generic")
PLAIN_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in $(/bin/busybox cat /modules.order); do /bin/busybox insmod /modules/$m; done
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
    for rel in mods.order:  # paths under lib/modules/<kver>/, deepest dependency first
        (stage / "modules" / Path(rel).name).write_bytes(mods.files[rel])
    (stage / "modules.order").write_text("".join(f"{Path(rel).name}\n" for rel in mods.order))
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


# In the guest, as root: the same paths and the same files in both boots (the same tree). Each pass
# starts with the kernel's caches dropped, so every lookup and read goes to the file system (for
# μCernVM: overlay -> FUSE -> the daemon; the first pass fetches what the boot did not need from the
# server, the second reads the objects from the cache on the scratch disk).
IO_SCRIPT = r"""
export LC_ALL=C
find /usr/lib -type f -size +0 | sort | head -n FILES >/tmp/io-set
for pass in 1 2; do
    sync; echo 3 >/proc/sys/vm/drop_caches
    t0=$(date +%s.%N); n=$(find /usr | wc -l); t1=$(date +%s.%N)
    sync; echo 3 >/proc/sys/vm/drop_caches
    t2=$(date +%s.%N); b=$(xargs -d '\n' cat </tmp/io-set | wc -c); t3=$(date +%s.%N)
    echo "io $pass $n $t0 $t1 $b $t2 $t3"
done
"""
# Where the time went: the guest's CPU (user, nice, system, idle, iowait... in ticks), the FUSE daemon's
# CPU (utime, stime in ticks) and its request counts with handler seconds (``cvmfs_stats``).
DIAG_SCRIPT = r"""
echo "uptime $(cat /proc/uptime) ticks/s $(getconf CLK_TCK)"; head -n 1 /proc/stat
# the guest's task switches and interrupts since its start, and the virtio devices' interrupts by queue
awk '$1 == "ctxt" || $1 == "intr" {print "count", $1, $2}' /proc/stat
awk '/virtio/ {print "irq", $NF, $2}' /proc/interrupts
for d in /proc/[0-9]*; do
    case "$(tr '\0' ' ' 2>/dev/null <$d/cmdline)" in
        @ucernvm-cvmfs*) echo "daemon ${d#/proc/} utime stime $(cut -d ' ' -f 14,15 $d/stat)"
            # its live threads' switches: voluntary (a wait: a recv, a lock, the GIL), involuntary
            cat $d/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/ {v += $2; n++}
                /^nonvoluntary_ctxt/ {i += $2} END {print "switches daemon", v, i, n}' ;;
    esac
done
cat /mnt/.rw/aux/fuse-stats 2>/dev/null | sort -k3 -n -r | sed 's/^/fuse /'
# inflated copies the daemon made (which of them a reader used, their access times no longer say: the
# daemon reads them with O_NOATIME, plaincache.py)
find /mnt/.rw/cache/*/plain -type f -printf '%s\n' 2>/dev/null |
    awk '{n++; b+=$1} END {if (n) print "plain", n, b/1e6, "MB"}'
"""
# Where the guest's CPU went by the login, for the μCernVM vs plain map (issue 13): systemd's own stamps
# (µs since the kernel's start: systemd's start, ssh active), each cgroup's CPU (cgroup v2 ``cpu.stat``
# usage_usec: a unit's CPU including its exited processes; the root's is the whole guest's since the
# kernel started, so root minus its children is what ran outside systemd's units: the kernel's threads,
# IRQs, the initrd and what it left running, the FUSE daemon), the kernel threads' CPU by name (ticks),
# the processes left in the root cgroup (ticks; the daemon starts before systemd), and each service's
# CPU as systemd keeps it (a stopped unit's cgroup is gone, its CPU then only in the parent's).
CPU_MAP_SCRIPT = r"""
for p in UserspaceTimestampMonotonic FinishTimestampMonotonic; do
    echo "stamp $p $(systemctl show -p $p --value)"
done
for u in ssh.service cloud-init-local.service cloud-init.service systemd-udev-settle.service; do
    echo "stamp $u $(systemctl show -p ActiveEnterTimestampMonotonic --value $u)"
done
find /sys/fs/cgroup -name cpu.stat | while read -r f; do
    d=${f%/cpu.stat}; d=${d#/sys/fs/cgroup}
    awk -v d="${d:-/}" '$1 == "usage_usec" {u = $2} $1 == "user_usec" {s = $2}
        $1 == "system_usec" {k = $2} END {if (u >= 20000) printf "cg %.0f %.0f %.0f %s\n", u, s, k, d}' "$f"
done | sort -k2 -n -r
for d in /proc/[0-9]*; do
    s=$(sed 's/^.*) //' $d/stat 2>/dev/null) || continue
    c=$(sed 's/^[0-9]* (\(.*\)) .*/\1/' $d/stat 2>/dev/null)
    set -- $s
    if [ "${d#/proc/}" = 2 ] || [ "$2" = 2 ]; then
        echo "kt ${c%%/*} ${12} ${13}"
    elif grep -qx '0::/' $d/cgroup 2>/dev/null; then
        [ $((${12} + ${13} + ${14} + ${15})) -gt 0 ] && echo "rootproc ${d#/proc/} $c ${12} ${13} ${14} ${15}"
    fi
done | awk '$1 == "kt" {t[$2] += $3 + $4; all += $3 + $4; next} {print}
    END {print "kthreads", all; for (n in t) if (t[n] >= 5) print "kt", t[n], n}' | sort -k2 -n -r
echo "init $(sed 's/^.*) //' /proc/1/stat | cut -d ' ' -f 12-15)"
# a unit that has stopped (a oneshot: cloud-init's stages) has no cgroup left: systemd keeps its last
# CPUUsageNSec (one systemctl call for all: a fork per unit costs seconds under TCG)
systemctl show -p Id -p CPUUsageNSec $(systemctl list-units --all --plain --no-legend --type=service |
    awk '{print ($1 == "●" ? $2 : $1)}') | awk -v RS= '{id = ""; ns = ""; for (i = 1; i <= NF; i++) {
        if ($i ~ /^Id=/) id = substr($i, 4); if ($i ~ /^CPUUsageNSec=[0-9]+$/) ns = substr($i, 14) }
    if (id != "" && ns != "" && ns + 0 >= 20000000) printf "unit %s %.0f\n", id, ns / 1000}'
"""


def cpu_map(text: str) -> dict[str, float]:
    """``CPU_MAP_SCRIPT``'s output as seconds by item: ``stamp <name>`` (since the kernel's start),
    ``cg <path>`` (a cgroup's CPU), ``unit <name>`` (a service's, systemd's figure: also once it has
    stopped and its cgroup is gone), ``kt <name>``
    and ``kthreads`` (the kernel's threads), ``proc <comm>`` (processes left in the root cgroup), and
    ``cg /*``: the top-level cgroups' sum, what ran in systemd's units and scopes (the daemon too: systemd
    moves what it finds in the root cgroup into init.scope). The root's own ``cg /`` is the kernel's
    tick count, as /proc/stat: the children's figures are exact clock readings and under TCG add up to
    more than it (a tick lost while the host ran something else), so the two are not subtracted."""
    out: dict[str, float] = {}
    children = 0.0
    for line in text.splitlines():
        f = line.split()
        if len(f) < 2:
            continue
        kind = f[0]
        if kind == "stamp":
            usec = f[2] if len(f) > 2 else ""
            out[f"stamp {f[1]}"] = int(usec) / 1e6 if usec.isdigit() and int(usec) else float("nan")
        elif kind == "cg" and len(f) == 5:
            out[f"cg {f[4]}"] = int(f[1]) / 1e6
            if f[4].count("/") == 1 and f[4] != "/":
                children += int(f[1]) / 1e6
        elif kind == "unit" and len(f) == 3:
            out[f"unit {f[1]}"] = int(f[2]) / 1e6
        elif kind == "kthreads":
            out["kthreads"] = int(f[1]) / 100  # ticks (USER_HZ)
        elif kind == "kt" and len(f) == 3:
            out[f"kt {f[2]}"] = int(f[1]) / 100
        elif kind == "rootproc" and len(f) == 7:
            out[f"proc {f[2]}"] = out.get(f"proc {f[2]}", 0.0) + (int(f[3]) + int(f[4])) / 100
    out["cg /*"] = children
    return out


def diag_split(text: str) -> str:
    """One line from ``DIAG_SCRIPT``'s output: where a boot's seconds went (ob17, issue 13). The guest's
    busy, idle and iowait seconds (``/proc/stat`` ticks): idle near 0 means the 1-vCPU guest was
    CPU-bound, so a fetch's network round trip cost no wall time (other work ran meanwhile) and
    only the CPU added counts; the FUSE daemon's CPU seconds; the daemon's CPU per object of each
    ``store.Phases`` phase (``~fetch``, ``~write``... in guest-CPU-ms, with the object count); the
    guest's task switches (``ctxt``) and interrupts (``intr``) and the daemon's threads' switches."""
    hz, cpu, daemon, phases, counts = 100.0, [0.0] * 7, 0.0, [], []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] == "uptime" and f[3] == "ticks/s" and f[4].isdigit() and int(f[4]):
            hz = float(f[4])
        elif len(f) >= 8 and f[0] == "cpu" and all(x.isdigit() for x in f[1:8]):
            cpu = [float(x) for x in f[1:8]]
        elif len(f) == 6 and f[0] == "daemon" and f[4].isdigit() and f[5].isdigit():
            daemon += (int(f[4]) + int(f[5])) / hz
        elif len(f) == 3 and f[0] == "count" and f[2].isdigit():
            counts.append(f"{f[1]} {int(f[2])}")
        elif len(f) == 5 and f[0] == "switches" and f[2].isdigit() and f[3].isdigit():
            counts.append(f"daemon switches {f[2]} voluntary {f[3]} not ({f[4]} threads)")
        elif len(f) == 5 and f[0] == "fuse" and f[1].startswith("~") and f[2].isdigit() and int(f[2]):
            with contextlib.suppress(ValueError):
                phases.append((f[1], int(f[2]), float(f[4]) * 1e3 / int(f[2])))
    user, nice, system, idle, iowait, irq, softirq = (t / hz for t in cpu)
    per = ", ".join(f"{k} {ms:.1f} ({n})" for k, n, ms in phases)
    return (
        f"guest busy {user + nice + system + irq + softirq:.1f} s, idle {idle:.1f} s, iowait {iowait:.1f} s; "
        f"daemon {daemon:.1f} CPU-s; per object (guest-CPU-ms): {per or '-'}"
        + "".join(f"; {c}" for c in counts)
    )


def cpu_map_rows(ucernvm: dict[str, float], plain: dict[str, float], least: float = 0.2) -> list[str]:
    """The two guests' maps side by side: stamps first, then the items by how much more μCernVM's
    took (seconds); items under ``least`` in both are left out."""
    stamps = sorted(k for k in ucernvm.keys() | plain.keys() if k.startswith("stamp "))
    items = [k for k in ucernvm.keys() | plain.keys() if not k.startswith("stamp ")]
    items = [k for k in items if max(ucernvm.get(k, 0.0), plain.get(k, 0.0)) >= least]
    items.sort(key=lambda k: (-(ucernvm.get(k, 0.0) - plain.get(k, 0.0)), k))
    rows = [f"{'item (guest s)':58} {'uCernVM':>8} {'plain':>8} {'extra':>8}"]
    for k in stamps + items:
        a, b = ucernvm.get(k, float("nan")), plain.get(k, float("nan"))
        if not k.startswith("stamp "):
            a, b = ucernvm.get(k, 0.0), plain.get(k, 0.0)
        rows.append(f"{k[:58]:58} {a:8.2f} {b:8.2f} {a - b:+8.2f}")
    return rows


PROFILE_SCRIPT = (
    "systemd-analyze; systemd-analyze blame | head -n 12; systemd-analyze critical-chain | head -n 20"
)


@dataclasses.dataclass
class Vm:
    """A qemu guest on a serial log with SSH forwarded to 127.0.0.1:``port``; logs in as root with ``key``."""

    proc: subprocess.Popen[bytes]
    port: int
    key: Path
    log: Path
    #: seconds from qemu's start until the guest kernel's clock started (NaN: no timestamped console line)
    before_kernel: float = float("nan")

    def ssh(self, script: str, timeout: float = 600) -> str:
        cmd = ["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", script]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout

    def login(self, timeout: float) -> None:
        """Until root's login works (cloud-init writes the key after sshd may answer)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ssh("true", timeout=60)
                return
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def poweroff(self, timeout: float = 300) -> float:
        """``systemctl poweroff`` until qemu exits: seconds (NaN when it did not within ``timeout``:
        the guest is killed, its console's last lines go to stderr, and the run goes on)."""
        asked = time.monotonic()
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.ssh("systemctl poweroff", timeout=30)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            tail = self.log.read_text(errors="replace").splitlines()[-40:]
            print(f"osboot: no power-off in {timeout:.0f} s; console:", *tail, sep="\n  ", file=sys.stderr)
            return float("nan")
        return time.monotonic() - asked


#: a console line stamped with the guest kernel's clock: "[   3.14] ..." (printk) or "[14.61] ucernvm: ..."
STAMPED = re.compile(rb"^\[ *([0-9]+\.[0-9]+)\] ", re.M)


def _before_kernel(log: Path, now: float) -> float:
    """Seconds from qemu's start until the guest kernel's clock started: ``now`` (seconds since the
    start) minus the stamp of the first stamped line seen on the console. Under TCG without icount
    the guest clock runs with the host's, so this is what the firmware and the boot loader took (for
    μCernVM: syslinux reading vmlinuz and the initrd from the hdd on virtio, or isolinux from the CD;
    for the plain boot qemu's -kernel),
    plus up to one poll (0.5 s) late, alike in both. No guest timeline shows this part. NaN: none yet."""
    try:
        m = STAMPED.search(log.read_bytes())
    except OSError:
        return float("nan")
    return now - float(m.group(1)) if m else float("nan")


@contextlib.contextmanager
def _boot(
    disks: list[str], extra: list[str], log: Path, key: Path, timeout: float, cpus: int = 1
) -> Iterator[tuple[Vm, float]]:
    """Start qemu (``cpus`` vCPUs); yield the guest and the seconds until its sshd answered (the banner)."""
    port = _free_port()
    cmd = [
        "qemu-system-x86_64", "-accel", detect().name, "-m", "1024", "-smp", str(cpus), "-nodefaults",
        "-display", "none", "-no-reboot", "-serial", f"file:{log}", *extra, *disks,
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0",
        "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before_kernel = float("nan")
    seen = 0  # the console's size when it was last read
    try:
        while not _ssh_banner(port):
            if time.monotonic() - start > timeout or proc.poll() is not None:
                raise RuntimeError(f"no SSH banner within {timeout:.0f} s (console: {log})")
            # a guest that panicked says so on its console within seconds: a run waited out its
            # timeout on every μCernVM boot that could not mount (cernvm-launch reads it the same way);
            # read again only when it grew, not to take the measured guests' CPU
            size = log.stat().st_size if log.exists() else 0
            if size != seen:
                seen = size
                failure = bootwatch.check(log.read_text(errors="replace"))
                if failure is not None:
                    raise RuntimeError(f"the guest panicked: {failure.reason} (console: {log})")
            if before_kernel != before_kernel:  # NaN: not seen yet
                before_kernel = _before_kernel(log, time.monotonic() - start)
            time.sleep(0.5)
        took = time.monotonic() - start
        if before_kernel != before_kernel:
            before_kernel = _before_kernel(log, took)
        yield Vm(proc, port, key, log, before_kernel), took
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@dataclasses.dataclass
class Figures:
    """One setup's figures: boot and reboot to SSH, shutdown, and the in-guest file system passes."""

    boot: float = 0.0
    reboot: float = 0.0
    shutdown: list[float] = dataclasses.field(default_factory=list)  # after the read passes, after the reboot
    io: list[tuple[int, float, int, float]] = dataclasses.field(default_factory=list)  # entries, s, bytes, s
    fetched: list[int] = dataclasses.field(default_factory=list)  # bytes per boot (μCernVM)
    #: the server's log lines of the objects the first boot fetched up to its login (μCernVM)
    trace: list[str] = dataclasses.field(default_factory=list)
    #: how many of ``trace``'s lines came before SSH answered: the boot list's part (``boot_list_names``)
    to_ssh: int = 0
    #: ``CPU_MAP_SCRIPT``'s output at the first boot's login and at the reboot's
    cpu_maps: list[str] = dataclasses.field(default_factory=list)


def _measure(
    name: str,
    disks: list[str],
    extra: list[str],
    work: Path,
    key: Path,
    counter: _Fetched | None,
    together: threading.Barrier | None = None,
) -> Figures:
    """Boot, measure the file system in the guest, power off; boot again (the same disks), power off.
    ``together``: the other setup's ``_measure`` waits there too, so that both reboots start at once."""
    fig = Figures()
    try:
        for n in (1, 2):
            if n == 2 and together is not None:
                together.wait()  # no timeout: a slow side is a slow row, not a lost run (a failure aborts)
            before = counter.bytes if counter else 0
            first_line = len(counter.lines) if counter else 0
            with _boot(disks, extra, work / f"{name}-{n}.log", key, 1800) as (vm, took):
                if counter:
                    fig.fetched.append(counter.bytes - before)
                    if n == 1:
                        fig.to_ssh = len(counter.lines) - first_line
                    print(f"osboot: {name}: boot {n} fetched {fig.fetched[-1] / 1e6:.1f} MB", file=sys.stderr)
                vm.login(600)
                if n == 1:
                    fig.boot = took
                    print(f"osboot: {name}: boot to SSH {took:.1f} s, {vm.before_kernel:.1f} s of it "
                          "before the kernel's clock started", file=sys.stderr)  # fmt: skip
                    # the CPU split (guest, FUSE daemon) as near the boot's end as a login gets: what the
                    # gap between the setups is made of (the guest is CPU-bound under TCG)
                    diag = vm.ssh(DIAG_SCRIPT)
                    print(f"osboot: {name}: at login:\n{diag}", file=sys.stderr)
                    print(f"osboot: {name}: split at login: {diag_split(diag)}", file=sys.stderr)
                    fig.cpu_maps.append(vm.ssh(CPU_MAP_SCRIPT))
                    # systemd-analyze answers once the boot has finished (cloud-init may still run at SSH)
                    vm.ssh("systemctl is-system-running --wait || true")
                    if counter:  # the boot's working set, before anything else reads the tree
                        fig.trace = counter.lines[first_line:]
                    print(vm.ssh(PROFILE_SCRIPT), file=sys.stderr)
                    print(f"osboot: {name}: after boot:\n{vm.ssh(DIAG_SCRIPT)}", file=sys.stderr)
                    # bounded: a cold pass through FUSE under TCG at load 25 took over 600 s for 1,500 files
                    try:
                        out = vm.ssh(IO_SCRIPT.replace("FILES", str(FILES)), timeout=1800)
                    except subprocess.TimeoutExpired:  # the boot figures still count; the reads are left out
                        print(f"osboot: {name}: in-guest passes did not end within 1800 s", file=sys.stderr)
                        out = ""
                    for line in out.splitlines():
                        _io, _pass, entries, t0, t1, nbytes, t2, t3 = line.split()
                        fig.io.append(
                            (int(entries), float(t1) - float(t0), int(nbytes), float(t3) - float(t2))
                        )
                    print(
                        f"osboot: {name}: in-guest passes (entries, s, bytes, s): {fig.io}", file=sys.stderr
                    )
                    print(f"osboot: {name}: after the passes:\n{vm.ssh(DIAG_SCRIPT)}", file=sys.stderr)
                else:
                    fig.reboot = took
                    print(f"osboot: {name}: reboot to SSH {took:.1f} s, {vm.before_kernel:.1f} s of it "
                          "before the kernel's clock started", file=sys.stderr)  # fmt: skip
                    print(f"osboot: {name}: after reboot:\n{vm.ssh(DIAG_SCRIPT)}", file=sys.stderr)
                    fig.cpu_maps.append(vm.ssh(CPU_MAP_SCRIPT))
                    print(vm.ssh(PROFILE_SCRIPT), file=sys.stderr)
                off = vm.poweroff()
                print(f"osboot: {name}: shutdown {off:.1f} s", file=sys.stderr)
                fig.shutdown.append(off)  # NaN: did not power off
    except BaseException:
        if together is not None:
            together.abort()  # the other side does not wait for a reboot that will not come
        raise
    return fig


def boot_list_names(first: Figures) -> list[str]:
    """The boot list's names: the objects the first boot fetched until SSH answered, in the order
    they were first asked for. Not up to its login, as the seed: what the login and ``systemctl
    is-system-running --wait`` read after SSH answered (4.6 MB, 28 objects, most over 128 KiB in
    the run of d099549) was fetched by the list's one thread before SSH, on the one vCPU the boot
    is bound by, for nothing the boot to SSH reads."""
    return objects_from_trace(first.trace[: first.to_ssh])


@dataclasses.dataclass
class FirstBoot:
    """(c)/(d): one first boot to SSH; for μCernVM the objects it fetched (up to the banner, and up to
    ``systemctl is-system-running --wait``)."""

    boot: float = 0.0
    fetched: int = 0  # bytes, up to the SSH banner
    fetched_running: int = 0  # bytes, up to systemd's running
    objects_running: int = 0


def _first_boot(
    name: str, disks: list[str], extra: list[str], work: Path, key: Path, counter: _Fetched | None
) -> FirstBoot:
    fb = FirstBoot()
    bytes0, objects0 = (counter.bytes, counter.objects) if counter else (0, 0)
    with _boot(disks, extra, work / f"{name}.log", key, 1800) as (vm, took):
        fb.boot = took
        fb.fetched = counter.bytes - bytes0 if counter else 0
        print(f"osboot: {name}: first boot to SSH {took:.1f} s, {vm.before_kernel:.1f} s of it before the "
              "kernel's clock started", file=sys.stderr)  # fmt: skip
        vm.login(600)
        diag = vm.ssh(DIAG_SCRIPT)
        print(f"osboot: {name}: at login:\n{diag}", file=sys.stderr)
        print(f"osboot: {name}: split at login: {diag_split(diag)}", file=sys.stderr)
        state = vm.ssh("systemctl is-system-running --wait || true").strip()
        if counter:
            fb.fetched_running, fb.objects_running = counter.bytes - bytes0, counter.objects - objects0
            print(f"osboot: {name}: fetched {fb.fetched / 1e6:.1f} MB to SSH, "
                  f"{fb.fetched_running / 1e6:.1f} MB ({fb.objects_running} objects) to systemd {state}",
                  file=sys.stderr)  # fmt: skip
        print(vm.ssh(PROFILE_SCRIPT), file=sys.stderr)
        print(f"osboot: {name}: shutdown {vm.poweroff():.1f} s", file=sys.stderr)
    return fb


#: the guest's clock advances 2^3 ns per guest instruction: deterministic guest seconds (TCG only)
ICOUNT = ["-icount", "shift=3"]


def _icount_boot(
    name: str, disks: list[str], extra: list[str], work: Path, key: Path, counter: _Fetched | None
) -> tuple[float, float]:
    """Guest seconds from the kernel's start until ssh.service was active, the guest clock counting
    instructions (``ICOUNT``), NaN when systemd did not say; and the guest's idle + iowait seconds
    when asked (after ``is-system-running``), the part of its clock that ran with the host's."""
    with _boot(disks, [*ICOUNT, *extra], work / f"{name}.log", key, 3600) as (vm, _took):
        vm.login(1800)
        vm.ssh("systemctl is-system-running --wait || true", timeout=1800)
        out = vm.ssh(
            "systemctl show -p ActiveEnterTimestampMonotonic --value ssh.service; "
            "getconf CLK_TCK; head -n 1 /proc/stat"
        ).split("\n")
        print(f"osboot: {name}: ssh.service active at {out[0]} guest-µs (icount); {out[2]}", file=sys.stderr)
        vm.poweroff()
    usec, tick, cpu = out[0].strip(), int(out[1]), out[2].split()
    idle = (int(cpu[4]) + int(cpu[5])) / tick  # "cpu user nice system idle iowait ..."
    return (int(usec) / 1e6 if usec.isdigit() and int(usec) else float("nan")), idle


@dataclasses.dataclass(frozen=True)
class Guests:
    """What both setups' boots share: the μCernVM images, the plain kernel + initrd, the context drive."""

    hdd: Path
    iso: Path
    kernel: Path
    initrd: Path
    ctx_drive: list[str]
    work: Path
    key: Path
    counter: _Fetched


def _medium(image: Path) -> list[str]:
    """The boot image as ``cernvm-launch``'s ``domain.xml.j2`` attaches it: an iso as IDE CD-ROM, an
    hdd read-only on virtio; first in the boot order (its ``<boot order='1'/>``)."""
    if image.suffix == ".iso":
        return ["-drive", f"file={image},media=cdrom,if=ide,readonly=on", "-boot", "d"]
    return ["-drive", f"file={image},format=raw,if=none,id=image,readonly=on",
            "-device", "virtio-blk-pci,drive=image,bootindex=1"]  # fmt: skip


def _side_by_side(
    boot: Callable[[str, list[str], list[str], Path, Path, _Fetched | None], T],
    ucernvm: tuple[str, Path],
    plain: tuple[str, Path],
    g: Guests,
    image: Path | None = None,
) -> tuple[T, T]:
    """``boot`` μCernVM (from ``image``, by default the hdd, on the scratch disk ``ucernvm[1]``) and the
    plain ext4 disk ``plain[1]`` at the same time: on a shared machine both then meet the same load
    (each guest has one CPU; the host has at least two). Only μCernVM's fetches are counted."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        job_a = pool.submit(
            boot,
            ucernvm[0],
            _ucernvm_drives(g, ucernvm[1]),
            _medium(image or g.hdd),
            g.work,
            g.key,
            g.counter,
        )
        job_b = pool.submit(boot, plain[0], _plain_drives(g, plain[1]), _plain_kernel(g), g.work, g.key, None)
        return _both(job_a, job_b)


def _ucernvm_drives(g: Guests, scratch: Path) -> list[str]:
    """μCernVM's scratch disk, named as cernvm-launch names it (bootloader/disk.py SCRATCH_SERIAL),
    and the context drive."""
    return ["-drive", f"file={scratch},format=qcow2,if=none,id=scratch",
            "-device", f"virtio-blk-pci,drive=scratch,serial={SCRATCH_SERIAL}", *g.ctx_drive]  # fmt: skip


def _plain_drives(g: Guests, disk: Path) -> list[str]:
    return ["-drive", f"file={disk},format=qcow2,if=virtio", *g.ctx_drive]


def _plain_kernel(g: Guests) -> list[str]:
    return ["-kernel", str(g.kernel), "-initrd", str(g.initrd), "-append",
            f"console=ttyS0,115200 quiet no_timer_check {PLAIN_SAME} rw"]  # fmt: skip


def _alternating(
    cpus: int, ucernvm: tuple[str, Path], plain: tuple[str, Path], g: Guests
) -> tuple[list[float], list[float]]:
    """With ``cpus`` vCPUs each, one guest at a time, alternating: μCernVM's first boot (on the blank
    scratch disk ``ucernvm[1]``), the plain one's (a fresh ext4 copy ``plain[1]``), then each one's
    reboot on its disk. Not side by side: two guests of two vCPUs are four busy TCG threads on a
    two-core host. Each boot runs to SSH, waits for ``systemctl is-system-running`` (the first boot's
    work done, its cache filled) and powers off. Seconds to SSH: (first boot, reboot) of each."""
    sides = [
        (ucernvm[0], _ucernvm_drives(g, ucernvm[1]), _medium(g.hdd)),
        (plain[0], _plain_drives(g, plain[1]), _plain_kernel(g)),
    ]
    took: dict[str, list[float]] = {ucernvm[0]: [], plain[0]: []}
    for n in (1, 2):
        for name, disks, extra in sides:
            with _boot(disks, extra, g.work / f"{name}-{n}.log", g.key, 1800, cpus=cpus) as (vm, t):
                vm.login(600)
                vm.ssh("systemctl is-system-running --wait || true", timeout=1800)
                print(f"osboot: {name}: {'first boot' if n == 1 else 'reboot'} to SSH {t:.1f} s "
                      f"({cpus} vCPUs), shutdown {vm.poweroff():.1f} s", file=sys.stderr)  # fmt: skip
            took[name].append(t)
    return took[ucernvm[0]], took[plain[0]]


def _both(job_a: concurrent.futures.Future[T], job_b: concurrent.futures.Future[T]) -> tuple[T, T]:
    """Both jobs' results, once both have ended; else the first real failure: one side's failure
    breaks the barrier (``_measure``), and the other side's BrokenBarrierError would hide it."""
    concurrent.futures.wait((job_a, job_b))
    errors = [e for e in (job_a.exception(), job_b.exception()) if e is not None]
    for e in sorted(errors, key=lambda e: isinstance(e, threading.BrokenBarrierError)):
        raise e
    return job_a.result(), job_b.result()


def run(quick: bool, logs: Path | None = None, cpus: int = 1) -> list[Result]:
    """``logs``: a directory that keeps the guests' console logs (the work directory is removed).
    ``cpus`` > 1: also the first boot and reboot of both setups with that many vCPUs (``_alternating``)."""
    accel = detect()
    prof = profile.load("debian12")
    kernel = fetch_debian_kernel(prof.kernel.package or "linux-image-cloud-amd64")
    work = Path(tempfile.mkdtemp(prefix="bench-osboot-", dir="/var/tmp"))
    try:
        repo = publish_debian(work / "repo", kernel=kernel)
        tree = build_debian_tree("12", epoch=DEFAULT_EPOCH, kernel=kernel).root  # the cached tree
        key = work / "login"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        srv = serve(work / "repo")
        try:
            # cvmfs_stats: the FUSE daemon counts its requests (DIAG_SCRIPT)
            cmdline = [*prof.bootloader.cmdline, "no_timer_check", "cvmfs_stats"]
            boot = dataclasses.replace(prof.bootloader, cmdline=cmdline)
            prof = dataclasses.replace(
                prof, cvmfs=dataclasses.replace(prof.cvmfs, servers=[srv.repo_url()]), bootloader=boot
            )
            res = build_image(
                prof, work / "images", formats=["hdd", "iso"], ctx=BuildContext.from_environment()
            )
            images = {a.path.suffix: a.path for a in res.artifacts}
            # the launch's user data: cloud-config for cloud-init + the [ucernvm-begin] block (the server
            # as the guest sees the host); the plain boot reads the same drive
            # The pinned host key as cernvm-launch gives it (both guests read the same drive): cloud-init
            # then writes it and generates none. Without it each first boot made its own RSA-3072 key
            # under TCG, a prime search of random length on sshd's critical chain: cloud-init.service
            # took 60 s and 104 s in two plain first boots, 82 s and 276 s in two μCernVM ones.
            login = key.with_suffix(".pub").read_text().strip()
            host = keys.generate("bench host key")
            ud = userdata.merge(userdata.parse(b"#cloud-config\n"), hostname="bench", authorized_keys=[login],
                                host_key_private=host.private_openssh, host_key_public=host.public_openssh,
                                ucernvm={"cvmfs_server": f"10.0.2.2:{srv.port}"})  # fmt: skip
            ctx = build_iso(work / "context.iso", userdata.render(ud), name="bench", instance_id="bench")
            ctx_drive = ["-drive", f"file={ctx},format=raw,if=virtio,readonly=on"]
            # (b) the same tree on ext4, prepared before either boots
            raw = work / "plain.img"
            subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", tree, raw, "2G"], check=True)
            plain, fresh = work / "plain.qcow2", work / "plain-fresh.qcow2"
            subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", raw, plain], check=True)
            subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", raw, fresh], check=True)  # for (d)
            fresh_bl = work / "plain-fresh-bl.qcow2"
            if not quick:  # for (l)
                subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", raw, fresh_bl], check=True)
            fresh_i = work / "plain-fresh-icount.qcow2"
            if accel.name == "tcg":  # for (j)
                subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", raw, fresh_i], check=True)
            fresh_n = work / "plain-fresh-cpus.qcow2"
            if cpus > 1:  # for the first boot with more vCPUs
                subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", raw, fresh_n], check=True)
            raw.unlink()
            initrd = _plain_initrd(kernel, work / "plain-initrd.gz")
            # (a) μCernVM
            scratch = work / "scratch.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", scratch, "4G"], check=True)
            counter = _Fetched(work / "repo")
            logger = logging.getLogger("cernvm_build.cvmfs.serve")
            logger.addHandler(counter)
            logger.setLevel(logging.DEBUG)
            guest = Guests(
                images[".hdd"], images[".iso"], kernel.vmlinuz, initrd, ctx_drive, work, key, counter
            )
            try:
                together = functools.partial(_measure, together=threading.Barrier(2))
                a, b = _side_by_side(together, ("ucernvm", scratch), ("plain", plain), guest)
                for when, map_a, map_b in zip(("first boot", "reboot"), a.cpu_maps, b.cpu_maps, strict=False):
                    # under TCG without icount the guest's clock is the host's: a loaded host inflates both
                    print(f"osboot: CPU map at the {when}'s login (guest-CPU-s):", file=sys.stderr)
                    print(*cpu_map_rows(cpu_map(map_a), cpu_map(map_b)), sep="\n", file=sys.stderr)
                icount: list[tuple[tuple[float, float], tuple[float, float]]] = []
                if not quick:
                    # (c)/(d): a seed from (a)'s first-boot working set, its bytes from the repository
                    # itself (not through the server: its log counts the guests' fetches only)
                    names = objects_from_trace(a.trace)
                    made = time.monotonic()
                    sd = make_seed(
                        str(repo.stratum),
                        repo.fqrn,
                        [repo.public_key],
                        names,
                        work / "seed.qcow2",
                        size_mb=4096,
                    )
                    made = time.monotonic() - made
                    seed_file = sd.path.stat().st_size  # the qcow2 file (what a release would ship)
                    print(
                        f"osboot: seed: {sd.objects} objects ({len(names)} names in the trace), "
                        f"{seed_file / 1e6:.1f} MB on disk, made in {made:.1f} s",
                        file=sys.stderr,
                    )
                    disk = launch_seed.check(sd.path, system=False)
                    seeded = work / "scratch-seeded.qcow2"
                    launch_seed.create_scratch(seeded, launch_seed.scratch_size(4096, disk), disk)
                    c, d = _side_by_side(
                        _first_boot, ("ucernvm-seeded", seeded), ("plain-fresh", fresh), guest
                    )
                    # (k)/(l): an image carrying (a)'s trace as its boot list, on a blank scratch
                    # disk, next to another fresh ext4 copy (both first boots): the list's objects
                    # fetched ahead, pipelined, once mounted, instead of one round trip per reader
                    bl_names = boot_list_names(a)
                    print(f"osboot: boot list: {len(bl_names)} names fetched to SSH, of {len(names)} to the "
                          "login (the seed's)", file=sys.stderr)  # fmt: skip
                    listed = "".join(f"{n}\n" for n in bl_names).encode()
                    res_bl = build_image(prof, work / "images-bl", formats=["hdd"],
                                         ctx=BuildContext.from_environment(),
                                         boot_list=(listed, len(bl_names)))  # fmt: skip
                    blank = work / "scratch-bl.qcow2"
                    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", blank, "4G"], check=True)
                    k, l_ = _side_by_side(
                        _first_boot, ("ucernvm-bootlist", blank), ("plain-fresh-bl", fresh_bl), guest,
                        res_bl.artifacts[0].path,
                    )  # fmt: skip
                    bl = (len(bl_names), len(listed))
                    # (e)/(f): a reboot of (a) from the iso on the IDE CD-ROM, next to one of (b)
                    e, f = _side_by_side(
                        _first_boot, ("ucernvm-iso", scratch), ("plain-3", plain), guest, images[".iso"]
                    )
                    if accel.name == "tcg":
                        # (g)/(h) reboots; (i)/(j) first boots on a new seeded disk and a fresh ext4 copy
                        seeded_i = work / "scratch-seeded-icount.qcow2"
                        try:
                            launch_seed.create_scratch(seeded_i, launch_seed.scratch_size(4096, disk), disk)
                            pairs = [
                                (("ucernvm-i", scratch), ("plain-i", plain)),
                                (("ucernvm-seeded-i", seeded_i), ("plain-fresh-i", fresh_i)),
                            ]
                            for u, p in pairs:
                                icount.append(_side_by_side(_icount_boot, u, p, guest))
                        except Exception as err:  # optional rows: the rows before still count
                            print(
                                f"osboot: the icount boots failed, their rows are left out: {err}",
                                file=sys.stderr,
                            )
                smp: tuple[list[float], list[float]] | None = None
                if cpus > 1:  # on a blank scratch disk and a fresh ext4 copy: first boots, then reboots
                    blank_n = work / "scratch-cpus.qcow2"
                    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", blank_n, "4G"], check=True)
                    smp = _alternating(cpus, ("ucernvm-cpus", blank_n), ("plain-cpus", fresh_n), guest)
            finally:
                logger.removeHandler(counter)
        finally:
            srv.close()
        size = sum(p.lstat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    finally:
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy2(log, logs / log.name)
        shutil.rmtree(work, ignore_errors=True)
    t = accel.name
    rows = [  # μCernVM from the hdd on virtio, unless a row says iso
        Result(B, f"boot to SSH [{t}] μCernVM", a.boot, "s", f"plain ext4 [{t}]", b.boot, "<= 1.3x plain",
               a.boot <= 1.3 * b.boot),
        Result(B, f"reboot to SSH [{t}] μCernVM", a.reboot, "s", f"plain ext4 [{t}]", b.reboot),
        # NaN: no power-off within the timeout
        Result(B, f"shutdown after reads [{t}] μCernVM", a.shutdown[0], "s", f"ext4 [{t}]", b.shutdown[0]),
        Result(B, f"shutdown after reboot [{t}] μCernVM", a.shutdown[1], "s", f"ext4 [{t}]", b.shutdown[1]),
        Result(B, "MB fetched (first boot)", a.fetched[0] / 1e6, "MB", "tree size", size / 1e6),
        Result(B, "MB fetched (reboot)", a.fetched[1] / 1e6, "MB", "first boot", a.fetched[0] / 1e6),
    ]  # fmt: skip
    rows += [] if quick else [
        Result(B, f"first boot to SSH [{t}] μCernVM, seeded scratch disk", c.boot, "s",
               f"plain ext4, fresh disk [{t}]", d.boot, "<= 1.3x plain", c.boot <= 1.3 * d.boot),
        Result(B, "MB fetched (seeded first boot)", c.fetched / 1e6, "MB", "un-seeded first boot",
               a.fetched[0] / 1e6, extra={"MB to running": c.fetched_running / 1e6,
                                          "objects to running": c.objects_running}),
        Result(B, "seed size on disk (qcow2)", seed_file / 1e6, "MB", "un-seeded first boot fetched",
               a.fetched[0] / 1e6, extra={"inflated MB": sd.inflated / 1e6, "made in s": made}),
        Result(B, "objects in the seed", sd.objects, "objects", extra={"MB made from": sd.bytes / 1e6}),
        Result(B, f"first boot to SSH [{t}] μCernVM, boot list ({bl[0]} names, {bl[1] / 1e3:.0f} KB in the "
               "image)", k.boot, "s", f"plain ext4, fresh disk [{t}]", l_.boot, "<= 1.3x plain",
               k.boot <= 1.3 * l_.boot, extra={"un-seeded first boot": a.boot}),
        Result(B, "MB fetched (boot-list first boot)", k.fetched / 1e6, "MB", "un-seeded first boot",
               a.fetched[0] / 1e6, extra={"MB to running": k.fetched_running / 1e6}),
        Result(B, f"reboot to SSH [{t}] μCernVM from the iso (IDE CD-ROM)", e.boot, "s", f"plain ext4 [{t}]",
               f.boot, extra={"μCernVM from the hdd (virtio), the earlier reboot": a.reboot}),
    ]  # fmt: skip
    for ((ua, ia), (pb, ib)), what in zip(icount, ("reboot", "seeded first boot"), strict=False):
        known = ua == ua and pb == pb  # NaN: systemd did not say, no verdict
        rows.append(
            Result(B, f"{what}: guest-s to sshd [icount] μCernVM", ua, "guest-s", "plain ext4 [icount]", pb,
                   "<= 1.3x plain", ua <= 1.3 * pb if known else None,
                   extra={"μCernVM idle+iowait s": ia, "plain idle+iowait s": ib})
        )  # fmt: skip
    if smp is not None:  # the 1-vCPU rows' figures of the same run beside them
        for i, what in enumerate(("boot", "reboot")):
            rows.append(
                Result(B, f"{what} to SSH [{t}, {cpus} vCPUs] μCernVM", smp[0][i], "s",
                       f"plain ext4 [{t}, {cpus} vCPUs]", smp[1][i], "<= 1.3x plain",
                       smp[0][i] <= 1.3 * smp[1][i],
                       extra={"μCernVM 1 vCPU": (a.boot, a.reboot)[i], "plain 1 vCPU": (b.boot, b.reboot)[i]})
            )  # fmt: skip
    passes = ((0, "cold: from the server"), (1, "warm: scratch-disk cache"))
    for n, what in passes[: min(len(a.io), len(b.io))]:
        (ea, fa, ba, ra), (eb, fb, bb, rb) = a.io[n], b.io[n]
        rows += [
            Result(B, f"find /usr [{t}] {what}", ea / fa, "entries/s", "ext4", eb / fb),
            Result(B, f"read {FILES} files [{t}] {what}", ba / ra / 1e6, "MB/s", "ext4", bb / rb / 1e6,
                   extra={"MB": ba / 1e6}),
        ]  # fmt: skip
    return rows


class _Fetched(logging.Handler):
    """Bytes of the repository objects (``/data/``) the server sent: each logged GET's file size."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root, self.bytes, self.objects = root, 0, 0
        self.lines: list[str] = []  # the log lines of those GETs, in order: the trace a seed is made of

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        m = re.search(r'"GET /cvmfs/(\S+/data/\S+) HTTP/[0-9.]+" 200 ', line)
        if m:
            self.lines.append(line)
            with contextlib.suppress(OSError):
                self.bytes += (self.root / m.group(1)).stat().st_size
                self.objects += 1


if __name__ == "__main__":
    flags(
        __doc__,
        {
            "--quick": "a smaller run (fewer rounds or inputs)",
            "--logs": "=DIR: keep the guests' consoles and the server's log there",
            "--cpus": "=N: also boot and reboot both setups with N vCPUs (one guest at a time, ~8 min more)",
        },
    )
    counts = [a.partition("=")[2] for a in sys.argv[1:] if a.partition("=")[0] == "--cpus"]
    cpus = int(counts[-1]) if counts and counts[-1].isdigit() else 1
    if counts and not 2 <= cpus <= 64:
        print(
            f"error: --cpus={counts[-1]}: expected a number of vCPUs from 2 to 64 (hint: --cpus=2)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    where = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--logs=")]
    print(f"osboot: load average at the start {os.getloadavg()}", file=sys.stderr)
    print_table(run(quick="--quick" in sys.argv, logs=Path(where[0]) if where else None, cpus=cpus))
    print(f"osboot: load average at the end {os.getloadavg()}", file=sys.stderr)
