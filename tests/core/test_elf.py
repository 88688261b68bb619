"""``cernvm_build.elf``: what a dynamically linked file loads, from its dynamic section, bounded on
damaged input."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cernvm_build import elf
from tests.support.elfgen import elf_bytes


def test_needed_soname_and_run_path_from_a_file_and_from_reads(tmp_path: Path) -> None:
    data = elf_bytes(("libc.so.6", "libz.so.1"), soname="libfoo.so.1", runpath="$ORIGIN/../lib:/opt/x")
    (tmp_path / "libfoo.so.1").write_bytes(data)
    info = elf.read(tmp_path / "libfoo.so.1")
    assert info.needed == ("libc.so.6", "libz.so.1") and info.soname == "libfoo.so.1"
    assert info.runpath == ("$ORIGIN/../lib", "/opt/x") and info.interpreter is None
    reads: list[tuple[int, int]] = []

    def pread(offset: int, n: int) -> bytes:
        reads.append((offset, n))
        return data[offset : offset + n]

    assert elf.parse(pread) == info
    assert len(reads) == 4, "header, program headers, dynamic section, strings: one read each"


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: b"#!/bin/sh\n" + d[10:],  # a script
        lambda d: d[:40],  # cut in its header
        lambda d: d[:0x36] + struct.pack("<HH", 56, 60000) + d[0x3A:],  # absurd program header count
        lambda d: d[:0x20] + struct.pack("<Q", 1 << 62) + d[0x28:],  # program headers past the end
    ],
)
def test_a_damaged_file_is_a_value_error_after_bounded_reads(damage) -> None:  # type: ignore[no-untyped-def]
    data = damage(elf_bytes(("libc.so.6",)))
    asked: list[int] = []

    def pread(offset: int, n: int) -> bytes:
        asked.append(n)
        return data[offset : offset + n]

    with pytest.raises(ValueError):
        elf.parse(pread)
    assert sum(asked) < 1 << 21


def test_a_string_past_the_string_table_is_a_value_error() -> None:
    data = bytearray(elf_bytes(("libc.so.6",)))
    at = data.index(struct.pack("<qQ", 1, 1))  # DT_NEEDED at string 1
    data[at : at + 16] = struct.pack("<qQ", 1, 1 << 40)
    with pytest.raises(ValueError, match="past the string table"):
        elf.parse(lambda offset, n: bytes(data[offset : offset + n]))
