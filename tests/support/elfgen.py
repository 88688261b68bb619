"""Minimal 64-bit little-endian ELF files with a dynamic section (DT_NEEDED, DT_SONAME, DT_RUNPATH), for
tests of what reads them (``cernvm_build.elf``, the mount's library look-ahead)."""

from __future__ import annotations

import struct

PHDR = 56


def elf_bytes(
    needed: tuple[str, ...] = (), soname: str | None = None, runpath: str | None = None, size: int = 2048
) -> bytes:
    """A shared object (ET_DYN) of ``size`` bytes at least: one PT_LOAD of the whole file and a
    PT_DYNAMIC whose string table names ``needed``, ``soname`` and ``runpath``."""
    strings = b"\0"
    offsets: dict[str, int] = {}
    for s in (*needed, *([soname] if soname else []), *([runpath] if runpath else [])):
        offsets[s] = len(strings)
        strings += s.encode() + b"\0"
    strtab = 64 + 2 * PHDR
    dyn_at = (strtab + len(strings) + 7) // 8 * 8
    dyn = [(1, offsets[n]) for n in needed]
    if soname:
        dyn.append((14, offsets[soname]))
    if runpath:
        dyn.append((29, offsets[runpath]))
    dyn += [(5, strtab), (10, len(strings)), (0, 0)]
    dynamic = b"".join(struct.pack("<qQ", t, v) for t, v in dyn)
    total = max(size, dyn_at + len(dynamic))
    head = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    head += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, PHDR, 2, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, total, total, 0x1000)
    pdyn = struct.pack("<IIQQQQQQ", 2, 6, dyn_at, dyn_at, dyn_at, len(dynamic), len(dynamic), 8)
    body = head + load + pdyn + strings
    body += bytes(dyn_at - len(body)) + dynamic
    return body + bytes(total - len(body))
