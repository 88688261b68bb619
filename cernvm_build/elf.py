"""Just enough ELF to copy a dynamically linked program with its libraries: DT_NEEDED and DT_SONAME.

Reading the dynamic section ourselves (instead of running ``ldd``) resolves libraries inside a staging
tree built from packages, not from whatever the build host happens to have installed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

PT_DYNAMIC, PT_INTERP = 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME = 0, 1, 5, 14
PT_LOAD = 1


@dataclass(frozen=True)
class ElfInfo:
    needed: tuple[str, ...]
    soname: str | None
    interpreter: str | None


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def read(path: Path) -> ElfInfo:
    """The libraries ``path`` needs, its soname and its program interpreter (64-bit little-endian)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    interp: str | None = None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_INTERP:
            interp = data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
    if dynamic is None:
        return ElfInfo((), None, interp)

    def vaddr_to_offset(addr: int) -> int:
        for vaddr, off, size in loads:
            if vaddr <= addr < vaddr + size:
                return addr - vaddr + off
        raise ValueError(f"{path}: address {addr:#x} is in no loaded segment")

    entries: list[tuple[int, int]] = []
    off, size = dynamic
    for pos in range(off, off + size, 16):
        tag, val = struct.unpack_from("<qQ", data, pos)
        if tag == DT_NULL:
            break
        entries.append((tag, val))
    strtab = next((vaddr_to_offset(v) for t, v in entries if t == DT_STRTAB), None)
    if strtab is None:
        return ElfInfo((), None, interp)

    def string(at: int) -> str:
        end = data.index(b"\0", strtab + at)
        return data[strtab + at : end].decode()

    needed = tuple(string(v) for t, v in entries if t == DT_NEEDED)
    soname = next((string(v) for t, v in entries if t == DT_SONAME), None)
    return ElfInfo(needed, soname, interp)
