"""The image formats: iso (isolinux, El Torito, isohybrid, xorriso), hdd (raw MBR disk with one FAT
partition; syslinux installed into the image file through mtools: no root, no loop device) and the
hypervisor formats made from the hdd with ``qemu-img convert``.

Every function writes its output to the path it is given; the caller makes that a temporary name
and renames it into place when the whole build succeeded.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
from pathlib import Path

from ..errors import BuildError, ToolError
from ..paths import data_dir
from ..proc import qemu_file, run

ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
ISOHDPFX = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
LDLINUX_C32 = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")

#: How xorriso and mtools run whatever the builder's settings: dates in UTC, and the C locale, whose
#: case mapping of names is ASCII's: under LC_ALL=tr_TR.UTF-8 mtools made the folder SYSLİNUX (a
#: dotted capital I) and then found no ::/syslinux to copy syslinux.cfg into, and the build failed.
TOOL_ENV = {"TZ": "UTC", "LC_ALL": "C"}

#: mtools as shipped, whatever the builder's configuration: no ~/.mtoolsrc (HOME names no folder:
#: MTOOLS_NAME_NUMERIC_TAIL=0 there made another hdd, a line mtools does not know failed the build),
#: and the settings that shape what is written at their defaults (the environment overrides
#: /etc/mtools.conf and $MTOOLSRC).
MTOOLS_ENV = {
    "HOME": "/nonexistent",
    "MTOOLSRC": "/dev/null",
    "MTOOLS_SKIP_CHECK": "1",
    "MTOOLS_NAME_NUMERIC_TAIL": "1",
    "MTOOLS_NO_VFAT": "0",
    "MTOOLS_LOWER_CASE": "0",
    "MTOOLS_FAT_COMPATIBILITY": "0",
}

#: qemu-img output format and options per image format
CONVERT: dict[str, tuple[str, list[str]]] = {
    "qcow2": ("qcow2", []),
    "vmdk": ("vmdk", ["-o", "subformat=streamOptimized"]),
    "vdi": ("vdi", []),
    "vhd": ("vpc", ["-o", "subformat=fixed,force_size=on"]),
}
FORMATS = ("iso", "hdd", *CONVERT)
PART_START = 2048  # sectors: the FAT partition starts at 1 MiB
MIB = 1 << 20


def _need(path: Path, package: str) -> Path:
    if not path.exists():
        hint = f"install it with 'apt-get install {package}' (or 'make deps')"
        raise BuildError(f"{path} not found", hint=hint)
    return path


def boot_config(cmdline: str, version: str, branch: str) -> str:
    """isolinux/syslinux configuration from ``bootloader/boot/isolinux.cfg``."""
    text = (data_dir("bootloader") / "boot" / "isolinux.cfg").read_text()
    for name, value in (("cmdline", cmdline), ("version", version), ("branch", branch)):
        text = text.replace("{{ " + name + " }}", value)
    return text


def stage_tree(dest: Path, vmlinuz: Path, initrd: Path, version: str) -> None:
    """The files every image carries: ``cernvm/{vmlinuz,initrd.img}``, ``/version``, the sentinel."""
    (dest / "cernvm").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vmlinuz, dest / "cernvm" / "vmlinuz")
    shutil.copyfile(initrd, dest / "cernvm" / "initrd.img")
    (dest / "version").write_text(version + "\n")
    (dest / ".ucernvm_boot_loader").write_text(version + "\n")


def _fix_times(root: Path, epoch: int) -> None:
    for p in [root, *root.rglob("*")]:
        os.utime(p, (epoch, epoch), follow_symlinks=False)


def make_iso(tree: Path, config: str, out: Path, volume_id: str, epoch: int) -> None:
    """A hybrid ISO (CD and USB/disk) booting isolinux; dates fixed to ``epoch``, order fixed."""
    iso = tree / "isolinux"
    iso.mkdir(exist_ok=True)
    shutil.copyfile(_need(ISOLINUX_BIN, "isolinux"), iso / "isolinux.bin")
    shutil.copyfile(_need(LDLINUX_C32, "syslinux-common"), iso / "ldlinux.c32")
    (iso / "isolinux.cfg").write_text(config)
    _fix_times(tree, epoch)
    xorriso(
        [
            "-o", out, "-V", volume_id[:32], "-r", "-J",
            "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
            "-boot-load-size", "4", "-boot-info-table", "-isohybrid-mbr", _need(ISOHDPFX, "isolinux"),
            "--sort-weight", "0", "/", os.path.abspath(tree),  # absolute: '-fm/...' was an option
        ],
        epoch,
        out,
    )  # fmt: skip
    out.chmod(0o644)


def xorriso(args: list[str | os.PathLike[str]], epoch: int, out: Path) -> None:
    """``xorriso -as mkisofs -quiet ARGS`` writing ``out``, dated ``epoch`` (SOURCE_DATE_EPOCH: it
    then dates every file's ctime, its Rock Ridge TF, from its mtime too), in UTC and the C locale.
    A full disk is the ``OSError`` ENOSPC naming ``out``: xorriso checks the space first and says
    "Image size 192s exceeds free space on media 10s", which was a tool failure (exit 4) whose hint
    was the command line, not to free space."""
    try:
        run(["xorriso", "-as", "mkisofs", "-quiet", *args], env={"SOURCE_DATE_EPOCH": str(epoch), **TOOL_ENV})
    except ToolError as e:
        if "exceeds free space on media" not in e.message:
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out)) from None


def _mbr(total: int, start: int, fat_type: int) -> bytes:
    code = _need(SYSLINUX_MBR, "syslinux-common").read_bytes()[:440]
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", fat_type, b"\xfe\xff\xff", start, total - start)
    return code.ljust(440, b"\0") + b"UCVM" + bytes(2) + entry + bytes(48) + b"\x55\xaa"


def hdd_size(tree: Path) -> int:
    """Disk size in bytes: the files plus 25 % and 4 MiB of slack, at least 32 MiB, whole MiB."""
    payload = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    return max(32 * MIB, -(-int(payload * 1.25 + 4 * MIB) // MIB) * MIB)


#: the first and last times a FAT date holds (1980-01-01, 2107-12-31T23:59:58Z, UTC as mtools is run)
FAT_FIRST, FAT_LAST = 315532800, 4354819198


def fat_time(epoch: int) -> int:
    """``epoch`` clamped to what a FAT date holds: mtools wraps the year, and SOURCE_DATE_EPOCH=0 (a
    common "no date") dated every file of the hdd 2098-01-01."""
    return min(max(epoch, FAT_FIRST), FAT_LAST)


def make_hdd(tree: Path, config: str, out: Path, volume_id: str, epoch: int) -> None:
    """Raw disk: MBR (syslinux mbr.bin) + one active FAT partition with syslinux and the boot tree."""
    # absolute, once: the tools run in out's folder (below), and a relative name beginning with '-'
    # ('--out=-fm') was syslinux's options (pr26c 10)
    tree, out = Path(os.path.abspath(tree)), Path(os.path.abspath(out))
    epoch = fat_time(epoch)
    size = hdd_size(tree)
    sectors = size // 512
    with open(out, "wb") as f:
        f.truncate(size)
        f.write(_mbr(sectors, PART_START, 0x0E))  # FAT16 (LBA)
    # mtools reads FILE@@OFFSET and cuts at the first '@@': by the full path, an output folder named
    # 'x@@y' made mformat format the file 'x' beside it (pr26c 7). The tools run in out's folder and
    # name the image by its own name, which is the profile's stem (no '@')
    part = f"{out.name}@@{PART_START * 512}"
    here = out.parent
    env = {"SOURCE_DATE_EPOCH": str(epoch), **TOOL_ENV, **MTOOLS_ENV}
    # Fixed serial number and label: the same inputs give the same bytes.
    run(
        ["mformat", "-i", part, "-T", str(sectors - PART_START), "-h", "64", "-s", "32",
         "-H", str(PART_START), "-N", "55434d56", "-v", volume_id[:11].upper(), "::"],
        env=env, cwd=here,
    )  # fmt: skip
    (tree / "syslinux").mkdir(exist_ok=True)
    (tree / "syslinux" / "syslinux.cfg").write_text(config)
    _fix_times(tree, epoch)
    run(["mmd", "-i", part, "::/syslinux", "::/cernvm"], env=env, cwd=here)
    for p in sorted(tree.rglob("*")):
        if p.is_file():
            run(["mcopy", "-m", "-i", part, p, f"::/{p.relative_to(tree).as_posix()}"], env=env, cwd=here)
    offset = str(PART_START * 512)
    run(["syslinux", "--install", "--offset", offset, "--directory", "/syslinux", out], env=env)
    out.chmod(0o644)


def convert(raw: Path, fmt: str, out: Path) -> None:
    qfmt, opts = CONVERT[fmt]
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", qfmt, *opts, qemu_file(raw), qemu_file(out)])
    out.chmod(0o644)
