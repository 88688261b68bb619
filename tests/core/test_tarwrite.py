"""The one tar writer: every file type, long names, xattrs, nanosecond mtimes, bad paths; read back
by Python's tarfile and by GNU tar, and extracted by GNU tar as root (devices, owners, xattrs)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import BinaryIO

import pytest

from cernvm_build.errors import CernVMError
from cernvm_build.tarwrite import TarWriter, header, tar_info
from cernvm_build.tree import BLOCK, CHAR, DIR, FIFO, FILE, SOCKET, SOCKET_REASON, SYMLINK, Entry

T = 1_600_000_000
LONG = "d" * 120 + "/" + "n" * 200  # > 100 bytes (ustar name), > 255 (ustar prefix + name)
DATA = {"bin/su": b"\x7fELF" + bytes(range(256)) * 40, f"{LONG}/file": b"long\n", "bin/tool": b"#!/bin/sh\n"}


def entries() -> list[Entry]:
    return [
        Entry(path="", kind=DIR, mode=0o755, mtime=T),
        Entry(path="bin", kind=DIR, mode=0o755, mtime=T),
        Entry(
            path="bin/su",
            kind=FILE,
            mode=0o4755,
            size=len(DATA["bin/su"]),
            mtime=T,
            mtime_nsec=123456789,
            xattrs={"security.capability": b"\x01\x00\x00\x02\xff", "user.note": b"frozen"},
        ),
        Entry(path="bin/tool", kind=FILE, mode=0o755, size=10, mtime=T, uid=1000, gid=100, link_id="t"),
        Entry(path="bin/tool-link", kind=FILE, mode=0o755, size=10, mtime=T, uid=1000, gid=100, link_id="t"),
        Entry(path="dev", kind=DIR, mode=0o755, mtime=T),
        Entry(path="dev/null", kind=CHAR, mode=0o666, mtime=T, rdev=(1, 3)),
        Entry(path="dev/sda", kind=BLOCK, mode=0o660, mtime=T, rdev=(8, 0), gid=6),
        Entry(path="dev/sock", kind=SOCKET, mode=0o755, mtime=T),
        Entry(path="fifo", kind=FIFO, mode=0o600, mtime=T),
        Entry(path="d" * 120, kind=DIR, mode=0o755, mtime=T),
        Entry(path=LONG, kind=DIR, mode=0o700, mtime=T),
        Entry(path=f"{LONG}/file", kind=FILE, mode=0o644, size=5, mtime=T),
        Entry(path="link", kind=SYMLINK, mode=0o777, mtime=T, target="/" + "t" * 300),
        Entry(path="Ünïcode ñame", kind=FILE, mode=0o2711, size=0, mtime=T),
    ]


def opener(entry: Entry) -> BinaryIO:
    return io.BytesIO(DATA.get(entry.path, b""))


def write(items: list[Entry], **kw: object) -> tuple[bytes, TarWriter]:
    out = io.BytesIO()
    tar = TarWriter(out.write, mtime=None, where="crafted", **kw)  # type: ignore[arg-type]
    for e in items:
        tar.add(e, opener)
    tar.end(whole_record=True)
    return out.getvalue(), tar


def test_every_type_round_trips_through_tarfile(caplog: pytest.LogCaptureFixture) -> None:
    data, tar = write(entries())
    assert len(data) % tarfile.RECORDSIZE == 0
    assert tar.report.skipped == [("dev/sock", SOCKET_REASON)]
    assert not caplog.records  # the skip is reported once, by the CLI from the report (pr17c 7)
    assert tar.report.setid == [("bin/su", 0o4755), ("Ünïcode ñame", 0o2711)]
    assert tar.report.xattrs == [("bin/su", ["security.capability", "user.note"])]
    assert (tar.files, tar.hardlinks, tar.dirs, tar.symlinks, tar.specials) == (4, 1, 5, 1, 3)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        m = {x.name: x for x in t.getmembers()}
        assert list(m)[:3] == [".", "bin", "bin/su"]  # the order given, the root as "./"
        su = m["bin/su"]
        assert su.mode == 0o4755 and su.mtime == pytest.approx(T + 0.123456789)
        assert su.pax_headers["mtime"] == f"{T}.123456789"
        assert su.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == (
            b"\x01\x00\x00\x02\xff"
        )
        f = t.extractfile(su)
        assert f is not None and f.read() == DATA["bin/su"]
        assert m["bin/tool-link"].islnk() and m["bin/tool-link"].linkname == "bin/tool"
        assert (m["bin/tool"].uid, m["bin/tool"].gid, m["bin/tool"].uname) == (1000, 100, "")
        assert m["dev/null"].ischr() and (m["dev/null"].devmajor, m["dev/null"].devminor) == (1, 3)
        assert m["dev/sda"].isblk() and m["dev/sda"].devminor == 0
        assert "dev/sock" not in m  # never turned into a FIFO
        assert m["fifo"].isfifo()
        assert m[f"{LONG}/file"].isfile() and m["link"].linkname == "/" + "t" * 300
        assert m["Ünïcode ñame"].mode == 0o2711


def test_reproducible_and_fixed_mtime_drops_nanoseconds() -> None:
    assert write(entries())[0] == write(entries())[0]
    out = io.BytesIO()
    tar = TarWriter(out.write, mtime=42, where="crafted")
    for e in entries():
        tar.add(e, opener)
    tar.end()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        assert {m.mtime for m in t.getmembers()} == {42}
        assert all("mtime" not in m.pax_headers for m in t.getmembers())


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../x", "a//b", "/abs", "nul\0x", ".."])
def test_paths_that_escape_are_never_written(path: str) -> None:
    with pytest.raises(CernVMError, match=r"not allowed|contains") as err:
        write([Entry(path=path, kind=FILE, mode=0o644, size=0)])
    assert "\n" not in str(err.value)


def test_content_that_differs_from_its_size_is_an_error() -> None:
    e = Entry(path="bin/tool", kind=FILE, mode=0o644, size=99)
    with pytest.raises(CernVMError, match="content size differs from the listed size 99"):
        write([Entry(path="bin", kind=DIR, mode=0o755), e])


@pytest.mark.parametrize(
    ("items", "match"),
    [
        # symlink x -> /etc, then x/passwd: an extractor that follows x would write /etc/passwd
        ([Entry(path="x", kind=SYMLINK, mode=0o777, target="/etc"),
          Entry(path="x/passwd", kind=FILE, mode=0o644)], "not a directory written before it"),
        ([Entry(path="x", kind=SYMLINK, mode=0o777, target="/etc/passwd"),
          Entry(path="x", kind=FILE, mode=0o644)], "appears twice"),
        ([Entry(path="x", kind=FILE, mode=0o644), Entry(path="x", kind=FILE, mode=0o644)], "appears twice"),
        ([Entry(path="x", kind=SYMLINK, mode=0o777, target="/etc"),
          Entry(path="x", kind=DIR, mode=0o755)], "appears twice"),
        ([Entry(path="a", kind=DIR, mode=0o755), Entry(path="b", kind=DIR, mode=0o755),
          Entry(path="a/late", kind=FILE, mode=0o644)], "not a directory written before it"),
    ],
)  # fmt: skip
def test_a_stream_that_is_not_a_tree_is_refused(items: list[Entry], match: str) -> None:
    with pytest.raises(CernVMError, match=match) as err:
        write(items)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")
def test_gnu_tar_lists_and_extracts_it(tmp_path: Path) -> None:
    data, _ = write(entries())
    (tmp_path / "t.tar").write_bytes(data)
    listing = subprocess.run(
        ["tar", "-tvf", str(tmp_path / "t.tar")], capture_output=True, text=True, check=True
    )
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("drwxr-xr-x 0/0") and lines[0].endswith(" ./")
    assert any(line.startswith("-rwsr-xr-x") and line.endswith(" bin/su") for line in lines)
    assert any(line.startswith("hrwxr-xr-x") and "bin/tool-link link to bin/tool" in line for line in lines)
    assert any(line.startswith("crw-rw-rw-") and " 1,3 " in line for line in lines)
    assert any(line.endswith(f"{LONG}/file") for line in lines)
    if os.geteuid() != 0:
        return
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(tmp_path / "t.tar"), "-C", str(out)],
                   check=True, capture_output=True)  # fmt: skip
    assert stat.S_IMODE(os.stat(out / "bin/su").st_mode) == 0o4755
    assert os.stat(out / "bin/su").st_mtime_ns == T * 10**9 + 123456789
    assert os.getxattr(out / "bin/su", "user.note") == b"frozen"
    assert os.stat(out / "bin/tool").st_ino == os.stat(out / "bin/tool-link").st_ino
    assert stat.S_ISCHR(os.lstat(out / "dev/null").st_mode) and os.lstat(
        out / "dev/null"
    ).st_rdev == os.makedev(1, 3)
    assert (out / LONG / "file").read_bytes() == b"long\n"


@pytest.mark.parametrize("mtime", [None, 0, T])
def test_headers_are_tarfile_s_bytes_for_every_kind_of_entry(mtime: int | None) -> None:
    """The headers built directly (most entries) are byte for byte what tarfile writes, so layers
    keep their digests; entries that need PAX records (long or non-ASCII names, xattrs, big numbers,
    nanoseconds) take tarfile's path."""
    more = [
        Entry(path="a" * 100, kind=FILE, mode=0o644, mtime=T),  # exactly a ustar name
        Entry(path="a" * 99, kind=DIR, mode=0o755, mtime=T),  # 100 with its slash
        Entry(path="a" * 100, kind=DIR, mode=0o755, mtime=T),  # 101 with its slash: PAX
        Entry(path="bin/l", kind=SYMLINK, mode=0o777, target="t" * 100),
        Entry(path="bin/l2", kind=SYMLINK, mode=0o777, target="t" * 101),
        Entry(path="bin/é", kind=FILE, mode=0o644, size=3, mtime=T),
        Entry(path="bin/big", kind=FILE, mode=0o644, size=8**11, mtime=T),
        Entry(path="bin/late", kind=FILE, mode=0o644, mtime=8**11),
        Entry(path="bin/uid", kind=FILE, mode=0o644, uid=8**7, gid=8**7 - 1),
        Entry(path="bin/ns", kind=FILE, mode=0o644, mtime=T, mtime_nsec=5),
        Entry(path="dev/big", kind=CHAR, mode=0o600, rdev=(4095, 8**7 - 1)),
        Entry(path="x", kind=FILE, mode=0o7777, size=1, mtime=T, uid=8**7 - 1),
    ]
    for e in entries() + more:
        if e.kind == SOCKET:
            continue
        for link in (None, "bin/tool") if e.kind == FILE else (None,):
            want = tar_info(e, mtime=mtime, hardlink_to=link).tobuf(tarfile.PAX_FORMAT, "utf-8")
            assert header(e, mtime=mtime, hardlink_to=link) == want, (e.path, mtime, link)
