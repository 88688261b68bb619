"""The FUSE kernel protocol layer (``fuse_lowlevel``) without a kernel: requests parsed from bytes
laid out as ``linux/fuse.h`` says, replies checked byte by byte (the mount tests check the same
against the kernel)."""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cvmfs import fuse_lowlevel as ll

IN = struct.Struct("<IIQQIIIHH")
OUT = struct.Struct("<IiQ")


def _entry(ino: int, mode: int, size: int) -> bytes:
    return ll.ENTRY.pack(
        ino, 0, 3600, 3600, 0, 0, ino, size, 1, 10, 10, 10, 0, 0, 0, mode, 1, 0, 0, 0, 4096, 0
    )


def test_a_readdirplus_entry_is_the_entry_then_the_dirent_padded_to_8_bytes() -> None:
    entry = _entry(7, stat.S_IFREG | 0o644, 5)
    buf = bytearray(b"\xff" * 400)
    n = ll.add_direntry(0, buf, 8, b"ab", entry, 3, True)
    # fuse_direntplus: fuse_entry_out (128), then fuse_dirent: ino, off, namelen, type (DT_REG 8),
    # the name and zeros to a multiple of 8: 128 + 24 + 2 = 154 -> 160
    dirent = (7).to_bytes(8, "little") + (3).to_bytes(8, "little") + (2).to_bytes(4, "little")
    dirent += (8).to_bytes(4, "little") + b"ab" + b"\0" * 6
    assert n == 160 and bytes(buf[8:168]) == entry + dirent
    assert buf[:8] == b"\xff" * 8 and buf[168:] == b"\xff" * 232  # nothing written around it
    assert len(entry) == 128 and entry[40:48] == (7).to_bytes(8, "little")  # fuse_attr.ino


def test_a_readdir_entry_is_a_bare_dirent_and_one_that_does_not_fit_is_not_written() -> None:
    entry = _entry(0o1234, stat.S_IFDIR | 0o755, 0)
    buf = bytearray(b"\xff" * 64)
    assert ll.add_direntry(0, buf, 0, b"dir", entry, 9, False, 31) == 32  # too big: untouched
    assert buf == b"\xff" * 64
    assert ll.add_direntry(0, buf, 0, b"dir", entry, 9, False) == 32
    want = struct.pack("<QQII", 0o1234, 9, 3, 4) + b"dir" + b"\0" * 5  # DT_DIR 4
    assert bytes(buf[:32]) == want


class _Recorder(ll.Filesystem):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def init(self, conn: ll.Conn) -> None:
        conn.want |= conn.capable & ll.CACHE_SYMLINKS
        conn.want &= ~ll.READDIRPLUS_AUTO
        self.calls.append(("init", conn.capable & ll.NO_OPEN_SUPPORT, conn.max_readahead))

    def lookup(self, req: int, parent: int, name: bytes) -> None:
        self.calls.append(("lookup", parent, name))
        ll.reply_entry(req, _entry(42, stat.S_IFREG, 1))

    def forget(self, ino: int, nlookup: int) -> None:
        self.calls.append(("forget", ino, nlookup))

    def read(self, req: int, ino: int, size: int, off: int, fi: ll.FileInfo) -> None:
        self.calls.append(("read", ino, size, off, fi.fh))
        ll.reply_buf(req, b"0123456789" * 20, size)

    def getxattr(self, req: int, ino: int, name: bytes, size: int) -> None:
        self.calls.append(("getxattr", ino, name, size))
        raise OSError(errno.ENODATA, "no")

    def statfs(self, req: int, ino: int) -> None:
        raise ValueError("a bug")


def _request(opcode: int, unique: int, nodeid: int, body: bytes) -> bytes:
    return IN.pack(40 + len(body), opcode, unique, nodeid, 0, 0, 0, 0, 0) + body


def test_a_session_parses_each_request_and_answers_it_once_or_not_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests in the kernel's layout through a socket that keeps message boundaries, as /dev/fuse
    does: each handler gets its parsed arguments; FORGET, BATCH_FORGET and INTERRUPT get no reply,
    an unknown request ENOSYS, a handler's OSError its errno, any other exception EIO; a short
    request is skipped; the loop ends at the end of the connection."""
    kernel, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with kernel, daemon:
        monkeypatch.setattr(ll, "_dev", daemon.fileno())
        fs = _Recorder()
        session = ll.Session(fs, daemon.fileno(), None, frozenset())
        kernel_flags = (1 << 32) - 1 & ~(ll.NO_OPEN_SUPPORT | ll.NO_OPENDIR_SUPPORT)
        init_in = struct.pack("<IIII", 7, 38, 1 << 20, kernel_flags) + b"\0" * 48
        requests = [
            _request(ll.INIT, 1, 0, init_in),
            _request(ll.LOOKUP, 2, 1, b"name\0"),
            _request(ll.FORGET, 3, 9, struct.pack("<Q", 4)),
            _request(ll.BATCH_FORGET, 4, 0, struct.pack("<IIQQQQ", 2, 0, 10, 1, 11, 2)),
            _request(ll.READ, 5, 7, struct.pack("<QQIIQII", 3, 4096, 100, 0, 0, 0, 0)),
            _request(ll.GETXATTR, 6, 7, struct.pack("<II", 0, 0) + b"user.a\0"),
            _request(16, 7, 7, struct.pack("<QQIIQII", 0, 0, 1, 0, 0, 0, 0) + b"x"),  # WRITE
            b"short",
            _request(ll.STATFS, 8, 1, b""),
            _request(ll.INTERRUPT, 9, 0, struct.pack("<Q", 5)),
        ]
        for r in requests:
            kernel.send(r)
        kernel.shutdown(socket.SHUT_WR)
        session.run()  # returns at the end of the connection
        assert session.inited.is_set()
        assert fs.calls == [
            ("init", ll.NO_OPEN_SUPPORT, 1 << 20),
            ("lookup", 1, b"name"),
            ("forget", 9, 4),
            ("forget", 10, 1),
            ("forget", 11, 2),
            ("read", 7, 100, 4096, 3),
            ("getxattr", 7, b"user.a", 0),
        ]
        replies = _replies(kernel)
    heads = [OUT.unpack_from(r) for r in replies]
    assert [(u, e) for _n, e, u in heads] == [
        (1, 0), (2, 0), (5, 0), (6, -errno.ENODATA), (7, -errno.ENOSYS), (8, -errno.EIO)
    ]  # fmt: skip
    assert all(n == len(r) for (n, _e, _u), r in zip(heads, replies, strict=True))
    major, minor, readahead, flags, _bg, _cong, max_write, _tg, pages = struct.unpack_from(
        "<IIIIHHIIH", replies[0], 16
    )
    assert (major, minor, readahead, max_write, pages) == (7, ll.MINOR, 1 << 20, ll.MAX_WRITE, 256)
    assert flags & ll.DO_READDIRPLUS and flags & ll.CACHE_SYMLINKS and flags & ll.ASYNC_READ
    assert not flags & ll.READDIRPLUS_AUTO and not flags & (1 << 7)  # nor splice
    assert not flags & (ll.NO_OPEN_SUPPORT | ll.NO_OPENDIR_SUPPORT)  # not kernel flags
    assert replies[1][16:] == _entry(42, stat.S_IFREG, 1)
    assert replies[2][16:] == b"0123456789" * 10  # the size asked, not more


def test_a_reply_that_cannot_be_written_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel drops an interrupted request (its reply's write: ENOENT); after the session a
    late reply goes nowhere (EBADF): neither ends a reader."""
    r, w = os.pipe()
    os.close(r)
    monkeypatch.setattr(ll, "_dev", -1)
    ll.reply_err(1, errno.EIO)
    ll.reply_buf(1, b"x")
    os.close(w)


def test_an_entry_before_1970_or_with_a_wide_device_number_packs() -> None:
    """A catalog entry's mtime may be negative (a broken tarball's 1969-12-31) and a device's number
    wider than the kernel's u32: both pack (else its LOOKUP and its directory's READDIRPLUS were
    EIO), the time as the kernel's time64_t reads it, the number cut to 32 bits as libfuse's was."""
    from cernvm_build.cvmfs.catalog import DirEntry
    from cernvm_build.cvmfs.fuse_inodes import packed_entry

    old = DirEntry("/old", "old", stat.S_IFREG | 0o644, stat.S_IFREG, 3, -1, -(10**9), 0, 0, "", 0, 1, 0)
    dev = DirEntry(
        "/dev", "dev", stat.S_IFCHR | 0o600, stat.S_IFCHR, (5 << 32) | 0x0103, 0, 0, 0, 0, "", 0, 1, 0
    )
    attr = packed_entry(old)[ll.ATTR_START :]
    atime, mtime, ctime = struct.unpack_from("<qqq", attr, 24)
    assert (atime, mtime, ctime) == (-1, -1, -1)
    assert struct.unpack_from("<Q", attr, 32)[0] == (1 << 64) - 1  # the same bytes as a u64
    assert struct.unpack_from("<III", attr, 60) == (stat.S_IFREG | 0o644, 1, 0)  # mode, nlink, uid
    rdev = struct.unpack_from("<I", packed_entry(dev)[ll.ATTR_START :], 76)[0]
    assert rdev == 0x0103


def test_a_listed_entry_packed_in_one_go_is_the_entry_then_the_dirent() -> None:
    """READDIRPLUS packs each child with one ``DIRENTPLUS.pack_into`` (``add_entryplus``): the same
    bytes as its LOOKUP's ``packed_entry`` put in by ``add_direntry``, for every kind of entry (a
    symlink's shown size, a device's number cut to 32 bits, a time before 1970), and nothing past
    the size asked."""
    from cernvm_build.cvmfs.catalog import DirEntry
    from cernvm_build.cvmfs.fuse_inodes import add_entryplus, packed_entry

    def entry(name: str, mode: int, size: int, mtime_ns: int, symlink: str = "") -> DirEntry:
        kind = stat.S_IFMT(mode)
        sec = mtime_ns // 10**9
        return DirEntry(f"/d/{name}", name, mode, kind, size, sec, mtime_ns, 7, 8, symlink, 0, 2, 0)

    entries = [
        entry("file", stat.S_IFREG | 0o644, 12345, 1_700_000_000_123_456_789),
        entry("dir", stat.S_IFDIR | 0o755, 4096, 5),
        entry("link", stat.S_IFLNK | 0o777, 0, 0, symlink="target/of/it"),
        entry("dev", stat.S_IFCHR | 0o600, (5 << 32) | 0x0103, -(10**9)),
        entry("a-name-of-eighteen", stat.S_IFIFO | 0o600, 0, 1),
    ]
    for e in entries:
        raw = e.name.encode()
        want = bytearray(b"\xff" * 400)
        n = ll.add_direntry(0, want, 8, raw, packed_entry(e), 9, True)
        got = bytearray(b"\xff" * 400)
        assert add_entryplus(got, 8, 400, e, 9, raw) == n
        assert got == want, e.name
        assert bytes(got[8:136]) == packed_entry(e)
        short = bytearray(b"\xff" * 400)
        assert add_entryplus(short, 8, 8 + n - 1, e, 9, raw) == n and short == b"\xff" * 400


def _one_request(session: ll.Session, kernel: socket.socket, request: bytes) -> list[bytes]:
    """``request`` through ``session`` (until the connection's end): the replies."""
    kernel.send(request)
    kernel.shutdown(socket.SHUT_WR)
    session.run()
    return _replies(kernel)


def _replies(kernel: socket.socket) -> list[bytes]:
    """What the session wrote to the kernel's end, reply by reply, without waiting."""
    kernel.setblocking(False)
    replies = []
    while True:
        try:
            replies.append(kernel.recv(1 << 16))
        except BlockingIOError:
            return replies


def test_a_kernel_before_7_23_gets_the_24_byte_init_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux < 3.15 (7.22) takes init_out up to max_write only, as libfuse sends it; 7.23+ all 64."""
    for minor, size in ((22, 24), (23, 64)):
        kernel, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with kernel, daemon:
            monkeypatch.setattr(ll, "_dev", daemon.fileno())
            session = ll.Session(_Recorder(), daemon.fileno(), None, frozenset())
            init_in = struct.pack("<IIII", 7, minor, 1 << 17, ll.ASYNC_READ) + b"\0" * 48
            (reply,) = _one_request(session, kernel, _request(ll.INIT, 1, 0, init_in))
        assert OUT.unpack_from(reply) == (16 + size, 0, 1) and len(reply) == 16 + size, minor
        assert struct.unpack_from("<IIIIHHI", reply, 16) == (
            7,
            ll.MINOR,
            1 << 17,
            ll.ASYNC_READ,
            0,
            0,
            ll.MAX_WRITE,
        )


def test_a_reader_thread_that_cannot_start_leaves_the_request_answered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``can't start new thread`` (RLIMIT_NPROC, memory): the request just read is still answered,
    the session serves with the readers it has and says so once."""

    def refuse(self: Any) -> None:
        raise RuntimeError("can't start new thread")

    kernel, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with kernel, daemon:
        monkeypatch.setattr(ll, "_dev", daemon.fileno())
        fs = _Recorder()
        session = ll.Session(fs, daemon.fileno(), None, frozenset())
        session.threads = 4
        monkeypatch.setattr(ll.threading.Thread, "start", refuse)
        kernel.send(_request(ll.LOOKUP, 2, 1, b"a\0"))
        replies = _one_request(session, kernel, _request(ll.LOOKUP, 3, 1, b"b\0"))
    assert [OUT.unpack_from(r)[1:] for r in replies] == [(0, 2), (0, 3)]
    assert fs.calls == [("lookup", 1, b"a"), ("lookup", 1, b"b")]
    assert (session.threads, session._readers) == (1, 1)
    assert [r.message for r in caplog.records if "reader threads" in r.message] == [
        "FUSE: serving with 1 reader threads (can't start new thread)"
    ]


def test_the_end_waits_for_a_reader_still_answering_before_destroy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The main reader's loop ends while another is inside a READ: ``end`` lets that one answer
    before ``destroy`` closes what it uses, and closes the descriptor after."""
    import threading

    started, calls = threading.Event(), []

    class Slow(_Recorder):
        def read(self, req: int, ino: int, size: int, off: int, fi: ll.FileInfo) -> None:
            started.set()
            threading.Event().wait(0.3)  # a network fetch
            calls.append("read answered")
            ll.reply_buf(req, b"x")

        def destroy(self) -> None:
            calls.append("destroy")

    kernel, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = os.dup(daemon.fileno())
    daemon.close()
    with kernel:
        monkeypatch.setattr(ll, "_dev", fd)
        session = ll.Session(Slow(), fd, None, frozenset())
        session.inited.set()
        session.threads = 2
        session._spawn()  # a second reader, which takes the READ
        kernel.send(_request(ll.READ, 5, 7, struct.pack("<QQIIQII", 3, 0, 1, 0, 0, 0, 0)))
        assert started.wait(10)
        kernel.shutdown(socket.SHUT_WR)  # the main reader's loop ends (the kernel's ENODEV)
        session.run()
        session.end(timeout=30)
        assert calls == ["read answered", "destroy"]
        assert OUT.unpack_from(kernel.recv(100)) == (17, 0, 5)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    assert ll._dev == -1


def test_fusermount3_missing_or_failing_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OSError) as e:
        ll._fusermount(str(tmp_path), ["ro"])
    assert e.value.errno == errno.ENOENT
    assert str(e.value) == "[Errno 2] fusermount3 not found: install fuse3 or mount as root"
    fake = tmp_path / "fusermount3"
    fake.write_text(
        "#!/bin/sh\nprintf 'fusermount3: mount failed:\\n  Operation not permitted\\n' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(
        OSError, match=r"^\[Errno 1\] fusermount3: fusermount3: mount failed: Operation not permitted$"
    ):
        ll._fusermount(str(tmp_path), ["ro"])


def test_a_large_read_is_answered_from_a_kept_buffer_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A READ above ``FRESH_MAX`` is read into one of the kept buffers, not a fresh ``bytes`` per
    reply (fresh pages each time, ``reply_fd``); each reply still holds exactly its own bytes, also
    a short one at the file's end, and the buffer goes back for the next reply."""
    monkeypatch.setattr(ll, "_read_buffers", [])
    data = os.urandom(3 << 20)
    f = tmp_path / "copy"
    f.write_bytes(data)
    preads: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(ll.os, "pread", lambda fd, n, pos: preads.append(n) or real_pread(fd, n, pos))
    kernel, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = os.open(f, os.O_RDONLY)
    try:
        with kernel, daemon:
            kernel.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            daemon.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            monkeypatch.setattr(ll, "_dev", daemon.fileno())
            asked = [
                (0, 1 << 20, 7),
                ((1 << 20) + 5, 1 << 20, 8),
                ((3 << 20) - 1000, 1 << 20, 9),
                (4096, 4096, 10),
            ]
            for pos, size, req in asked:
                ll.reply_fd(req, fd, pos, size)
                reply = kernel.recv(2 << 20)
                want = data[pos : pos + size]
                assert OUT.unpack_from(reply) == (16 + len(want), 0, req)
                assert reply[16:] == want
            kept = ll._read_buffers
    finally:
        os.close(fd)
    assert preads == [4096]  # only the small one
    assert len(kept) == 1 and len(kept[0]) == ll.MAX_PAGES << 12
