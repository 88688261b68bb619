"""Helpers shared by tests of several areas."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cernvm_build.fsutil import spread_subdirectories
from cernvm_build.paths import cache_dir

#: Downloaded or expensive inputs that tests may share: packages, kernels, initrd runtimes, KVM probe,
#: OS trees (keyed by the content of their inputs, like everything in the cache).
SHARED = ("debs", "kernel", "initrd-runtime", "accel.json", "os")
REAL_CACHE = cache_dir()


def linked_cache(folder: Path) -> Path:
    """A fresh cache folder whose shared parts are links into the real cache (filled by ``make deps``).

    A CernVM-FS cache remembers the newest revision it verified of each repository name (rollback
    protection), so throwaway repositories that reuse a name must not share one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        real = REAL_CACHE / name
        if name != "accel.json":
            real.mkdir(parents=True, exist_ok=True)
        if real.exists() and not (folder / name).exists():
            os.symlink(real, folder / name)
    return folder


def link_farm(top: Path, n: int) -> Path:
    """A mirror source folder of links fanning out: ``d0/{a,b} -> ../d1`` ... ``d{n}/f.rpm``: 2^(n+1)
    paths from 2n links, no loop, nothing leaving ``top`` (pr16e's linkbomb)."""
    for i in range(n + 1):
        (top / f"d{i}").mkdir(parents=True)
    (top / f"d{n}" / "f.rpm").write_bytes(b"x")
    for i in range(n):
        for name in "ab":
            (top / f"d{i}" / name).symlink_to(f"../d{i + 1}")
    return top


def run_python(code: str, *, blocked: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``code`` run by this Python, this checkout importable, in a child with a deadline: a call that
    would wait forever (an open of a FIFO) fails the test with ``blocked`` instead of hanging the
    suite. Its output is captured as text."""
    import pytest  # here: the benches import this package, and pytest is a test's

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(blocked)


def bounded_server_drops_silent_and_extra(addr: tuple[str, int]) -> None:
    """For a server started with ``idle_timeout=2, max_connections=2`` (``boundedhttp``): a connection
    past the bound is closed at once without an answer, and an idle one and a half-sent request are
    closed by the server (the socket timeout waits for that; it fails without one)."""
    idle = socket.create_connection(addr, timeout=20)
    half = socket.create_connection(addr, timeout=20)
    half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
    extra = socket.create_connection(addr, timeout=20)
    extra.sendall(b"GET / HTTP/1.0\r\n\r\n")
    try:
        assert extra.recv(1) == b""  # over the bound
        assert idle.recv(1) == b""
        assert half.recv(1) == b""
    finally:
        for c in (idle, half, extra):
            c.close()


def one_client_gets_its_share_of_the_slots(addr: tuple[str, int], path: str) -> None:
    """For a server started with ``max_per_client=2`` (``boundedhttp``) and more slots than that:
    a client address holding its two connections is answered 503 with Retry-After on a third, and
    another address (127.0.0.2, the same loopback) is still served ``path``."""
    import http.client

    held = [socket.create_connection(addr, timeout=20) for _ in range(2)]
    third = socket.create_connection(addr, timeout=20)
    try:
        answer = b""
        while chunk := third.recv(4096):
            answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].decode()
        assert head.startswith("HTTP/1.1 503 ") and "\r\nRetry-After: " in head, answer
        other = http.client.HTTPConnection(*addr, timeout=20, source_address=("127.0.0.2", 0))
        other.request("GET", path)
        assert other.getresponse().status == 200
        other.close()
    finally:
        for c in (*held, third):
            c.close()


#: the request headers a body is sent with by ``a_body_is_never_the_next_request``: the first is
#: read and dropped (the request answered 200); the others cannot be delimited for sure (400)
BODY_HEADERS = [
    "Content-Length: {n}\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Content-Length: {n}\r\nContent-Length: {n}\r\n",
    "Content-Length: +{n}\r\n",
    "Content-Length : {n}\r\n",  # Python's parser drops this line (and the ones after) silently
]


def a_body_is_never_the_next_request(addr: tuple[str, int], path: str, other: str, headers: str) -> None:
    """For a ``boundedhttp`` server (pr18d finding 1): a GET of ``path`` whose body is itself a GET of
    ``other``, sent with ``headers`` (one of ``BODY_HEADERS``) on a connection kept alive, gets one
    answer: the body is read and dropped, or refused with the connection; never answered as a
    request of its own (a request smuggled past a proxy in front)."""
    inner = f"GET {other} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner) if "chunked" in headers else inner
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n{headers.format(n=len(body))}\r\n"
    with socket.create_connection(addr, timeout=20) as c:
        c.sendall(head.encode() + body)
        c.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := c.recv(65536):
            got += chunk
    assert got.count(b"HTTP/1.") == 1, got
    expected = b" 200 " if headers == BODY_HEADERS[0] else b" 400 "
    assert got.split(b"\r\n", 1)[0][8:13] == expected, got


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def listening(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A raw TCP listener on 127.0.0.1 handing each connection to ``handle`` on a thread of its own
    (for servers that misbehave on purpose); yields its port. Shut down on exit (which wakes the
    blocked accept, so its thread ends there)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()


#: what the endless redirect's server sends at most before it closes (the test's own bound: before
#: the fix the client read it all, then followed the redirect)
BODY_CAP = 256 << 20
#: what it may have sent when the client reads none of it: the loopback socket buffers
UNREAD_BOUND = 32 << 20


@contextlib.contextmanager
def endless_redirect_body() -> Iterator[tuple[int, list[int]]]:
    """A 302 whose body (no Content-Length, no end) is sent until the client hangs up or
    ``BODY_CAP``; the redirect's target is a 404. Yields the port and the bytes sent per connection."""
    sent: list[int] = []

    def handle(conn: socket.socket) -> None:
        with conn:
            request = conn.recv(65536)
            if request.startswith(b"HEAD "):  # a link checker's first question: refused, it GETs
                conn.sendall(
                    b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            if b"/elsewhere" in request:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nConnection: close\r\n\r\n")
            n = 0
            block = b"x" * (1 << 20)
            try:
                while n < BODY_CAP:
                    conn.sendall(block)
                    n += len(block)
            except OSError:
                pass  # the client hung up
            sent.append(n)

    with listening(handle) as port:
        yield port, sent


def sent_count(sent: list[int]) -> int:
    """What ``endless_redirect_body`` sent on its redirect's connection, once it has ended."""
    for _ in range(200):  # the handler's thread records its count once the client has gone
        if sent:
            return sent[0]
        threading.Event().wait(0.05)
    raise AssertionError("the server never finished its answer")


#: ext4's "top of a directory hierarchy" inode flag (``chattr +T``, ``fsutil.spread_subdirectories``)
FS_TOPDIR_FL = 0x00020000


def inode_flags(path: Path) -> int:
    """A directory's inode flags (``lsattr``'s FS_IOC_GETFLAGS)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, 0x80086601, struct.pack("i", 0)))[0])
    finally:
        os.close(fd)


def takes_topdir(probe: Path) -> bool:
    """Whether the file system under ``probe`` (made here) keeps the ``chattr +T`` flag."""
    probe.mkdir()
    spread_subdirectories(probe)
    try:
        return bool(inode_flags(probe) & FS_TOPDIR_FL)
    except OSError:
        return False


def trickle_head(conn: socket.socket) -> None:
    """A ``listening`` handler that reads the request, then sends its status line and headers a byte
    a second, never ending them (a server holding a client before any deadline on its body began)."""
    with conn:
        try:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Pad: " + b"x" * 100_000:
                conn.sendall(bytes([byte]))
                time.sleep(1)
        except OSError:
            pass  # the client hung up
