"""Just enough ELF to know what a dynamically linked program loads: DT_NEEDED, DT_SONAME, its run path.

Reading the dynamic section ourselves (instead of running ``ldd``) resolves libraries inside a staging
tree built from packages, not from whatever the build host happens to have installed; the mount daemon
reads a program's libraries the same way from its copy in the cache (``fuse.InOrderPrefetcher``), a few
``pread`` calls, not the whole file. Its data class is a plain one: the daemon imports this module in
the initrd, where ``dataclasses`` (with ``inspect``) cost ~30 M instructions under emulation (issue 13).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
#: bounds for a damaged or hostile file: program headers, dynamic entries, string table, interpreter
MAX_PHNUM = 256
MAX_DYNAMIC = 1024
MAX_STRINGS = 1 << 20
MAX_INTERP = 4096


class ElfInfo:
    """What a 64-bit little-endian ELF file loads (``needed``) and says of itself."""

    __slots__ = ("interpreter", "needed", "runpath", "soname")

    def __init__(
        self,
        needed: tuple[str, ...] = (),
        soname: str | None = None,
        interpreter: str | None = None,
        runpath: tuple[str, ...] = (),
    ) -> None:
        self.needed = needed
        self.soname = soname
        self.interpreter = interpreter
        #: DT_RUNPATH, else DT_RPATH, split at ':' (``$ORIGIN`` left as it is)
        self.runpath = runpath

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ElfInfo) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    def __repr__(self) -> str:
        return f"ElfInfo(needed={self.needed!r}, soname={self.soname!r}, interpreter={self.interpreter!r})"


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def read(path: Path) -> ElfInfo:
    """The libraries ``path`` needs, its soname and its program interpreter (64-bit little-endian)."""
    data = path.read_bytes()
    try:
        return parse(lambda offset, n: data[offset : offset + n])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def parse(pread: Callable[[int, int], bytes]) -> ElfInfo:
    """``read`` of a file given as ``pread(offset, n)`` (fewer bytes at its end); ValueError if it is
    no 64-bit little-endian ELF file or its headers point outside it. Every count and size the file
    states is bounded (a hostile file costs a few reads of at most ~1 MB)."""
    head = pread(0, 64)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    if phentsize < 56 or phnum > MAX_PHNUM:
        raise ValueError(f"{phnum} program headers of {phentsize} bytes")
    table = pread(phoff, phnum * phentsize)
    if len(table) < phnum * phentsize:
        raise ValueError("program headers past the end of the file")
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    interp: str | None = None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", table, i * phentsize
        )
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, min(p_filesz, 16 * MAX_DYNAMIC))
        elif p_type == PT_INTERP:
            interp = pread(p_offset, min(p_filesz, MAX_INTERP)).rstrip(b"\0").decode(errors="replace")
    if dynamic is None:
        return ElfInfo((), None, interp)

    def vaddr_to_offset(addr: int) -> int:
        for vaddr, off, size in loads:
            if vaddr <= addr < vaddr + size:
                return addr - vaddr + off
        raise ValueError(f"address {addr:#x} is in no loaded segment")

    raw = pread(*dynamic)
    entries: list[tuple[int, int]] = []
    for pos in range(0, len(raw) - 15, 16):
        tag, val = struct.unpack_from("<qQ", raw, pos)
        if tag == DT_NULL:
            break
        entries.append((tag, val))
    strtab = next((vaddr_to_offset(v) for t, v in entries if t == DT_STRTAB), None)
    if strtab is None:
        return ElfInfo((), None, interp)
    strsz = next((v for t, v in entries if t == DT_STRSZ), MAX_STRINGS)
    strings = pread(strtab, min(strsz, MAX_STRINGS))

    def string(at: int) -> str:
        end = strings.find(b"\0", at)
        if at >= len(strings) or end < 0:
            raise ValueError(f"string {at} past the string table")
        return strings[at:end].decode(errors="replace")

    needed = tuple(string(v) for t, v in entries if t == DT_NEEDED)
    soname = next((string(v) for t, v in entries if t == DT_SONAME), None)
    path = next((string(v) for t, v in entries if t == DT_RUNPATH), None)
    if path is None:
        path = next((string(v) for t, v in entries if t == DT_RPATH), None)
    runpath = tuple(p for p in path.split(":") if p) if path else ()
    return ElfInfo(needed, soname, interp, runpath)
