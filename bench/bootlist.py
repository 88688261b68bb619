"""The boot list on the host (issue 13): a boot-like replay of scattered opens, with vs without a list.

A synthetic repository (``cvmfs_read.make_repository``: many small files, a few chunked) is served by
``cvmfs serve`` in its own process behind a TCP relay that holds every client-to-server send for
DELAY_MS (a guest's round trip through qemu's user network to the host, roughly; a pipelined batch
is one send). A "boot" is a fixed random sample of the small files, opened and read whole in that
(scattered) order right after the mount is ready, on an empty cache: once with the mount given the
sample's object names as its ``--boot-list`` (fetched ahead in pipelined batches of 8 on one
connection, while the reader goes), once without (the reference: every open a round trip, the
prefetcher's name-order look ahead as in the initrd, ``--prefetch-in-order``). Rounds alternate
which goes first (a shared, loaded machine); each figure is the median, with the daemon's CPU
seconds beside the wall ones, and the load average. Then a reboot of both caches (mounted again,
full: the one with the list given it again), side by side: the list must cost nothing measurable.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.common import Result, flags, print_table
from bench.cvmfs_read import FQRN, _daemon_cpu_s, _server_process, _unmount, make_repository
from cernvm_build.cvmfs.repository import open_repository

B = "cvmfs.bootlist"
DELAY_MS = 2.0


@contextlib.contextmanager
def _relay(upstream: str, delay: float | Callable[[], float]) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` forwarding to ``upstream`` (host:port), each client send held ``delay`` s
    (a callable: asked at each send, so a test can hold only the requests it means to)."""
    host, port = upstream.split(":")
    lsock = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket, hold: float | Callable[[], float]) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                if seconds := hold() if callable(hold) else hold:
                    time.sleep(seconds)
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            s = socket.create_connection((host, int(port)))
            for a in (c, s):
                a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=pipe, args=(c, s, delay), daemon=True).start()
            threading.Thread(target=pipe, args=(s, c, 0.0), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{lsock.getsockname()[1]}"
    finally:
        stop.set()
        lsock.close()


def _sample(stratum: Path, pub: Path, n: int) -> tuple[list[str], list[str]]:
    """``n`` small files of the repository in a random order, and the list's object names: the
    catalogs (a boot's trace names those it opened), then the files'."""
    with open_repository(stratum, fqrn=FQRN, public_keys=[pub]) as repo:
        files = [e for e in repo.walk("/") if e.is_file and not e.chunks and e.content_hash and e.size]
        catalogs = [f"{cat.name}C" for cat in repo.catalogs()]
        rng = random.Random(13)
        picked = rng.sample(files, min(n, len(files)))
        return [e.path for e in picked], catalogs + list(dict.fromkeys(e.content_hash or "" for e in picked))


def _boot(
    url: str, pub: Path, mnt: Path, cache: Path, paths: list[str], listed: Path | None
) -> tuple[float, float]:
    """Mount (empty or given cache), read ``paths`` in order; (wall s of the reads, daemon CPU s)."""
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", url]
    cmd += ["--public-key", str(pub), "--cache", str(cache), "--no-magic-xattrs", "--prefetch-in-order"]
    cmd += ["--boot-list", str(listed)] if listed else []
    subprocess.run([*cmd, str(mnt)], check=True, capture_output=True, timeout=300)
    try:
        t0 = time.monotonic()
        for p in paths:
            with open(f"{mnt}{p}", "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass
        wall = time.monotonic() - t0
        cpu = sum(_daemon_cpu_s(mnt).values())
    finally:
        _unmount(mnt)
    return wall, cpu


def run(quick: bool = True, rounds: int | None = None) -> list[Result]:
    rounds = rounds or (3 if quick else 5)
    n_files, mb, n_boot = (3000, 40, 1200) if quick else (8000, 120, 1700)
    work = Path(tempfile.mkdtemp(prefix="bench-bootlist-", dir="/var/tmp"))
    load = [os.getloadavg()[0]]
    try:
        stratum, pub, _ = make_repository(work, n_files, mb)
        paths, names = _sample(stratum, pub, n_boot)
        listed = work / "boot.list"
        listed.write_text("".join(f"{n}\n" for n in names))
        mnt = work / "mnt"
        mnt.mkdir()
        got: dict[str, list[tuple[float, float]]] = {"list": [], "none": [], "reboot": [], "reboot-none": []}
        with (
            _server_process(stratum.parent) as direct,
            _relay(direct.split("//", 1)[1], DELAY_MS / 1e3) as url,
        ):
            url = f"{url}/cvmfs/{FQRN}"
            for r in range(rounds):
                order = ("list", "none") if r % 2 == 0 else ("none", "list")
                for which in order:
                    cache = work / f"cache-{which}-{r}"
                    got[which].append(_boot(url, pub, mnt, cache, paths, listed if which == "list" else None))
                # reboots of both caches (full now), the one with the list first in even rounds
                again = [("reboot", f"cache-list-{r}", listed), ("reboot-none", f"cache-none-{r}", None)]
                for which, cache_name, lst in again if r % 2 == 0 else again[::-1]:
                    got[which].append(_boot(url, pub, mnt, work / cache_name, paths, lst))
                for c in work.glob("cache-*"):
                    shutil.rmtree(c, ignore_errors=True)
                load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(which: str, i: int) -> float:
        return statistics.median(x[i] for x in got[which])

    loads = f"{min(load):.1f}-{max(load):.1f}"
    ref = f"no list [{DELAY_MS:g} ms relay]"
    return [
        Result(B, f"replay of {len(paths)} scattered opens, empty cache, boot list", med("list", 0), "s", ref,
               med("none", 0), extra={"daemon CPU s": med("list", 1), "ref daemon CPU s": med("none", 1),
                                      "rounds": rounds, "load": loads}),
        Result(B, "the same replay, a reboot (cache full, list again)", med("reboot", 0), "s",
               "a reboot without the list", med("reboot-none", 0),
               extra={"daemon CPU s": med("reboot", 1), "ref daemon CPU s": med("reboot-none", 1)}),
    ]  # fmt: skip


if __name__ == "__main__":
    flags(__doc__, {"--quick": "a smaller repository and sample, 3 rounds"})
    results = run(quick="--quick" in sys.argv)
    print_table(results)
    for res in results:
        print(f"  {res.metric}: {res.extra}")
