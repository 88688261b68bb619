"""The fetcher's body read when a body comes in network-sized segments (issue 13): the reading
thread's wake-ups and CPU per body, ``http1``'s wait for a body's rest in one wake-up
(``Connection._await``: SO_RCVLOWAT + poll) beside one blocking ``MSG_WAITALL`` recv, which every
arriving segment wakes (the same code with ``AWAIT_WHOLE`` out of reach), in alternating rounds.

A server thread answers each GET with its head and then the body in 1448-byte sends with
TCP_NODELAY (a TCP segment each over loopback: as a NIC, and qemu's user networking, hand them to a
guest; loopback's own 64 KiB segments would hide the wake-ups). Sizes: a small object, a typical one
of the μCernVM boot, a large library. CPU and wake-ups, not wall time: other work shares the
machine. The guest (one vCPU under TCG) is not measured here: there a wake-up (a context switch and a
return to Python) costs far more than on the host.
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))  # run as a script

from bench.common import Result, flags, print_table  # noqa: E402
from cernvm_build.cvmfs import http1  # noqa: E402

SEGMENT = 1448
SIZES = (25_000, 100_000, 1_000_000)


def _serve(srv: socket.socket, body: bytes) -> None:
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                more = conn.recv(4096)
                if not more:
                    return
                buf += more
            buf = buf.split(b"\r\n\r\n", 1)[1]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            for i in range(0, len(body), SEGMENT):
                conn.sendall(body[i : i + SEGMENT])


def _wakeups() -> int:
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))


def _round(size: int, reps: int, whole: bool) -> tuple[float, float]:
    """(wake-ups, CPU µs) per body over ``reps`` GETs on one kept-alive connection."""
    body = os.urandom(size)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    server = threading.Thread(target=_serve, args=(srv, body), daemon=True)
    server.start()
    saved = http1.AWAIT_WHOLE
    http1.AWAIT_WHOLE = saved if whole else 1 << 62  # the reference: one blocking MSG_WAITALL recv
    conn = http1.Connection("http", f"127.0.0.1:{srv.getsockname()[1]}", 10)
    try:
        w0, c0 = _wakeups(), time.thread_time()
        for _ in range(reps):
            resp = conn.get("/object", "bench")
            got = 0
            while block := resp.read1(1 << 20):
                got += len(block)
            assert got == size, (got, size)
        return (_wakeups() - w0) / reps, (time.thread_time() - c0) * 1e6 / reps
    finally:
        http1.AWAIT_WHOLE = saved
        conn.close()
        srv.close()
        server.join(timeout=10)


def run(quick: bool = True, rounds: int | None = None) -> list[Result]:
    rounds = rounds or (3 if quick else 7)
    results = []
    for size in SIZES:
        reps = max(20, 3_000_000 // size) if quick else max(60, 10_000_000 // size)
        ours: list[tuple[float, float]] = []
        ref: list[tuple[float, float]] = []
        for r in range(rounds):  # alternating, ours first in even rounds
            for whole in (r % 2 == 0, r % 2 != 0):
                (ours if whole else ref).append(_round(size, reps, whole))
        wake, wake_ref = statistics.median(w for w, _ in ours), statistics.median(w for w, _ in ref)
        cpu, cpu_ref = statistics.median(c for _, c in ours), statistics.median(c for _, c in ref)
        extra: dict[str, float | str] = {
            "rounds": rounds,
            "bodies_per_round": reps,
            "load": f"{os.getloadavg()[0]:.1f}",
        }
        what = f"{size // 1000} kB body in {SEGMENT}-byte segments"
        ref_name = "one MSG_WAITALL recv"
        results.append(
            Result(
                "cvmfs.http_segments", f"{what}: wake-ups", wake, "per body", ref_name, wake_ref, extra=extra
            )
        )
        results.append(
            Result("cvmfs.http_segments", f"{what}: CPU", cpu, "µs per body", ref_name, cpu_ref, extra=extra)
        )
    return results


if __name__ == "__main__":
    flags(__doc__, {"--full": "more rounds and bodies (the default is the quick run)"})
    rows = run(quick="--full" not in sys.argv[1:])
    print_table(rows)
    for row in rows[::2]:
        print(f"{row.metric}: {row.extra}")
