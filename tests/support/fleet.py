"""A fleet booting at once, simulated: N guests each read a boot's working set with a fresh reader.

Each guest does what a μCernVM initrd and the first minute of its OS do against the network: open
the repository (signed manifest, whitelist, certificate, tag database, root catalog) and read the
files of the working set, with no cache of its own, through a proxy chain or directly. The content
every guest got is compared with what it should be (bytes, not the reader's own hash check), and the
time each guest took is kept for percentiles. Used by the fleet load test
(``tests/cvmfs_interop/test_fleet.py``) and ``bench/fleet.py``.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.errors import CernVMError

from . import free_port
from .servers import Origin, nginx_origin, tool

#: the demo OS's boot working set (how it was recorded is said in the file)
WORKING_SET = Path(__file__).with_name("demo-boot-working-set.txt")


def working_set(path: Path = WORKING_SET) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("/")]


@dataclass(frozen=True)
class Guest:
    seconds: float
    wrong: tuple[str, ...]  # paths whose bytes differ from the expected ones
    error: str | None  # the reader's one-line error, if the boot failed


@dataclass(frozen=True)
class Fleet:
    guests: tuple[Guest, ...]

    @property
    def failed(self) -> list[str]:
        return [g.error for g in self.guests if g.error]

    @property
    def wrong(self) -> list[str]:
        return [p for g in self.guests for p in g.wrong]

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the guests' boot times, nearest rank."""
        times = sorted(g.seconds for g in self.guests)
        return times[min(len(times) - 1, max(0, round(q * len(times) + 0.5) - 1))]


def boot_guest(
    url: str, fqrn: str, public_key: Path, expected: Mapping[str, bytes], proxy: str | None
) -> Guest:
    start = time.monotonic()
    wrong: list[str] = []
    try:
        with open_repository(url, fqrn=fqrn, public_keys=[public_key], proxy=proxy, retries=1) as repo:
            for path, want in expected.items():
                if repo.read_bytes(path) != want:
                    wrong.append(path)
    except CernVMError as e:
        return Guest(time.monotonic() - start, tuple(wrong), str(e))
    return Guest(time.monotonic() - start, tuple(wrong), None)


def run_fleet(
    url: str,
    fqrn: str,
    public_key: Path,
    expected: Mapping[str, bytes],
    *,
    guests: int,
    concurrency: int,
    proxy: str | None,
) -> Fleet:
    """``guests`` boots, ``concurrency`` of them at a time (each reader holds its working set in
    memory while it runs, so the fleet's memory is bounded by the concurrency)."""
    with concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="guest") as pool:
        futures = [pool.submit(boot_guest, url, fqrn, public_key, expected, proxy) for _ in range(guests)]
        return Fleet(tuple(f.result() for f in futures))


@dataclass(frozen=True)
class Stack:
    """The demo OS published into a Stratum, an nginx configuration serving it and a site squid's in
    front (written with the CLI's ``cvmfs nginx-config``/``squid-config``; not started)."""

    fqrn: str
    expected: dict[str, bytes]  # the working set's bytes, from the source tree
    origin: Origin
    proxy: int
    squid_conf: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.origin.port}/cvmfs/{self.fqrn}"

    @property
    def squid_argv(self) -> list[str]:
        return [tool("squid"), "-N", "-f", str(self.squid_conf)]

    @property
    def squid_log(self) -> Path:
        return self.squid_conf.parent / "access.log"


def fleet_stack(work: Path, squid_dir: Path, fqrn: str = "fleet.cernvm.test") -> Stack:
    """Everything but the running servers, in ``work``; squid's files in ``squid_dir``, a folder
    its own user can write to."""
    from cernvm_build.cli.main import main
    from cernvm_build.demo.os_tree import build_demo_os

    demo = build_demo_os(work / "demo-os")
    origin = nginx_origin(work, fqrn, demo.root, normalize_owner=True)
    proxy = free_port()
    squid_conf = squid_dir / "squid.conf"
    argv = ["cvmfs", "squid-config", "--port", str(proxy), "--listen", "127.0.0.1", "-q"]
    if main([*argv, "--client", "127.0.0.1", "--stratum", "127.0.0.1", "-o", str(squid_conf)]) != 0:
        raise RuntimeError("cvmfs squid-config failed")
    return Stack(fqrn, expected_bytes(demo.root, working_set()), origin, proxy, squid_conf)


def expected_bytes(tree: Path, paths: Sequence[str]) -> dict[str, bytes]:
    """What each path of the working set holds in the published source tree."""
    return {p: (tree / p.lstrip("/")).read_bytes() for p in paths}
