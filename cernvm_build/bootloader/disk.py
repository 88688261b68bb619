"""Scratch-disk helpers the init runs (busybox has no scriptable partitioner): find the first empty
disk, give it an MBR with one Linux partition, grow that partition to the end of the disk.

``python3 -m cernvm_build.bootloader.disk first-boot | find-empty | partition DEV | grow DEV``.
Standard library only: this module is part of the initrd runtime.
"""

from __future__ import annotations

import array
import fcntl
import os
import struct
import sys
import time
from pathlib import Path

SECTOR = 512
START = 2048  # 1 MiB alignment
BLKRRPART = 0x125F
BLKPG, BLKPG_RESIZE_PARTITION = 0x1269, 3
_SKIP = ("loop", "ram", "sr", "fd", "zram", "dm-", "md", "nbd")
#: The serial cernvm-launch gives an instance's scratch disk (libvirt ``<serial>``, a virtio disk):
#: a first boot takes that disk before any other empty one, and 04-devices.sh then looks for no UROOT
#: behind the IDE/SATA/SCSI drivers (not loaded: ~3 s of a boot under TCG). The init's shell spells it
#: too (a test holds the two equal).
SCRATCH_SERIAL = "ucernvm-scratch"


def _sysfs(dev: str) -> Path:
    return Path("/sys/block") / Path(dev).name


def disk_sectors(dev: str) -> int:
    return int((_sysfs(dev) / "size").read_text())


def has_partitions(dev: str) -> bool:
    return any((p / "partition").exists() for p in _sysfs(dev).iterdir())


def is_empty(dev: str, probe: int = 1 << 20) -> bool:
    """No partitions and only zeros at the start: never formatted."""
    if has_partitions(dev):
        return False
    with open(dev, "rb") as f:
        head = f.read(probe)
    return head.count(0) == len(head)


def _serial(d: Path) -> str:
    try:
        return (d / "serial").read_text().strip()
    except OSError:
        return ""


def find_empty(block: Path = Path("/sys/block")) -> str | None:
    """The first empty disk in name order, the one named the scratch disk (``SCRATCH_SERIAL``) first."""
    for d in sorted(block.iterdir(), key=lambda d: (_serial(d) != SCRATCH_SERIAL, d.name)):
        name = d.name
        if name.startswith(_SKIP):
            continue
        try:
            if (d / "ro").read_text().strip() == "1" or (d / "removable").read_text().strip() == "1":
                continue
            if int((d / "size").read_text()) < 2 * START:
                continue
            if is_empty(f"/dev/{name}"):
                return f"/dev/{name}"
        except OSError:
            continue
    return None


def mbr(total_sectors: int, size_sectors: int | None = None) -> bytes:
    """An MBR with one bootable-off Linux (0x83) partition from 1 MiB to the end (or ``size``)."""
    count = min(total_sectors - START, size_sectors or total_sectors, 0xFFFFFFFF)
    entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", START, count)
    return bytes(440) + b"UROT" + bytes(2) + entry + bytes(48) + b"\x55\xaa"


def _reread(dev: str) -> None:
    fd = os.open(dev, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKRRPART)
    finally:
        os.close(fd)


def partition(dev: str, size_mb: int = 0) -> None:
    table = mbr(disk_sectors(dev), size_mb * 2048 if size_mb else None)
    with open(dev, "r+b") as f:
        f.write(table)
        f.flush()
        os.fsync(f.fileno())
    _reread(dev)


def grown(mbr_sector: bytes, total_sectors: int) -> bytes | None:
    """The MBR with its Linux partition 1 extended to the end of the disk, or None when it cannot grow."""
    table = bytearray(mbr_sector)
    start, count = struct.unpack_from("<II", table, 446 + 8)
    want = min(total_sectors - start, 0xFFFFFFFF)
    if table[510:512] != b"\x55\xaa" or table[446 + 4] != 0x83 or want <= count:
        return None
    struct.pack_into("<I", table, 446 + 12, want)
    return bytes(table)


def grow(dev: str) -> bool:
    """Extend partition 1 to the end of the disk, on disk and in the kernel; True when it changed.

    Partition 1 is mounted when the init grows it (08-resize, after 04-devices mounted UROOT): the
    kernel refuses to re-read the table of a disk in use (BLKRRPART: EBUSY), so it is told the one
    partition's new size (BLKPG_RESIZE_PARTITION), which it allows on a mounted partition."""
    total = disk_sectors(dev)
    with open(dev, "r+b") as f:
        table = grown(f.read(SECTOR), total)
        if table is None:
            return False
        f.seek(0)
        f.write(table)
        f.flush()
        os.fsync(f.fileno())
        start, count = struct.unpack_from("<II", table, 446 + 8)
        _resize_in_kernel(f.fileno(), 1, start, count)
    return True


def _resize_in_kernel(fd: int, number: int, start: int, count: int) -> None:
    """``ioctl(BLKPG, {BLKPG_RESIZE_PARTITION, data=&blkpg_partition})`` (linux/blkpg.h): the struct
    ``{long long start, length; int pno; char devname[64], volname[64];}`` (152 bytes with its
    padding) in a buffer whose address goes into the argument (no ctypes in the initrd)."""
    part = array.array("B", struct.pack("=qqi64s64s4x", start * SECTOR, count * SECTOR, number, b"", b""))
    address, _ = part.buffer_info()
    fcntl.ioctl(fd, BLKPG, struct.pack("@iiiP", BLKPG_RESIZE_PARTITION, 0, len(part), address))


def partition_path(dev: str) -> str:
    """The first partition's device: /dev/vda -> /dev/vda1, /dev/nvme0n1 -> /dev/nvme0n1p1."""
    return f"{dev}p1" if dev[-1].isdigit() else f"{dev}1"


def first_boot(size_mb: int = 0, wait: float = 5.0) -> str | None:
    """Partition the first empty disk (``find_empty``; the whole of it, or at most ``size_mb``);
    return the new partition once the kernel shows it."""
    dev = find_empty()
    if dev is None:
        return None
    partition(dev, size_mb)
    part = partition_path(dev)
    deadline = time.monotonic() + wait
    while not os.path.exists(part) and time.monotonic() < deadline:
        time.sleep(0.1)
    return part


def main(argv: list[str]) -> int:
    if argv[:1] == ["first-boot"] and len(argv) in (1, 2):
        part = first_boot(int(argv[1]) if len(argv) == 2 else 0)
        if part:
            print(part)
        return 0 if part else 1
    if argv[:1] == ["find-empty"]:
        dev = find_empty()
        if dev:
            print(dev)
        return 0 if dev else 1
    if argv[:1] == ["partition"] and len(argv) in (2, 3):
        partition(argv[1], int(argv[2]) if len(argv) == 3 else 0)
        return 0
    if argv[:1] == ["grow"] and len(argv) == 2:
        print("grown" if grow(argv[1]) else "unchanged")
        return 0
    sys.stderr.write(
        "usage: python3 -m cernvm_build.bootloader.disk first-boot [MB] | find-empty | partition DEV [MB]"
        " | grow DEV\n"
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
