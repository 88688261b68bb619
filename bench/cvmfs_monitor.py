"""Monitor benchmark (issue 21): ``cvmfs monitor`` of 100 repositories on 127.0.0.1 (created by the
toolkit, served by ``cvmfs.serve`` in its own process), next to fetching their manifests with plain
HTTP GETs (kept-alive connections, the same number of threads, nothing checked). Reported: the time
of each, and requests per repository (the monitor's counted at its fetcher: manifest, whitelist and
certificate, whose signatures it verifies; the reference's is 1). Quick and full both use 100
repositories (they are small); each side runs 3 (full: 10) times and the best is kept. Every monitor
run starts cold (its connections are shared by its probes, not kept between runs); the reference's
connections are warm after an untimed first pass (its time is reported as ``reference_cold_s``).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import shutil
import sys
import tempfile
import threading
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.common import Result, flags, print_table, timer
from bench.cvmfs_read import _server_process
from bench.cvmfs_replicate import _get

JOBS = 8
REPOS = 100


def run(quick: bool = True) -> list[Result]:
    from cernvm_build.cvmfs import fetch
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.monitor import Target, monitor
    from cernvm_build.cvmfs.publish import create_repository

    rounds = 3 if quick else 10
    work = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    try:
        keys = generate_keys("bench.cernvm.test")  # one key set signs every repository here
        keys.save(work / "keys")
        pub = work / "keys" / "bench.cernvm.test.pub"
        names = [f"r{i:03d}.bench.cernvm.test" for i in range(REPOS)]
        for name in names:  # the same key pair under each name (RSA key generation is not measured)
            create_repository(work / "srv" / name, name, dataclasses.replace(keys, fqrn=name))
        requests = 0
        lock = threading.Lock()
        original = fetch.HttpFetcher.fetch

        def counted(self: fetch.HttpFetcher, *a: object, **kw: object) -> object:
            nonlocal requests
            with lock:
                requests += 1
            return original(self, *a, **kw)  # type: ignore[arg-type]

        with _server_process(work / "srv") as base:
            urls = [f"{base}/cvmfs/{n}" for n in names]
            targets = [Target(u, (pub,)) for u in urls]
            manifests = [f"{u}/.cvmfspublished" for u in urls]
            best_get = best_mon = float("inf")
            with cf.ThreadPoolExecutor(JOBS) as pool:
                # The first pass opens the threads' connections (8 at once can overflow the test
                # server's listen backlog of 5: a dropped SYN costs a 1 s retransmit); it is reported
                # as the cold figure, the warm passes are the reference.
                with timer() as t_cold:
                    assert all(pool.map(_get, manifests))
                for _ in range(rounds):
                    with timer() as t_get:
                        assert all(pool.map(_get, manifests))
                    best_get = min(best_get, t_get["s"])
            for _ in range(rounds):
                requests = 0
                fetch.HttpFetcher.fetch = counted  # type: ignore[method-assign,assignment]
                try:
                    with timer() as t_mon:
                        report = monitor(targets, jobs=JOBS)
                finally:
                    fetch.HttpFetcher.fetch = original  # type: ignore[method-assign]
                assert report.healthy, [p.line() for p in report.problems][:3]
                best_mon = min(best_mon, t_mon["s"])
        return [
            Result(
                "cvmfs.monitor",
                f"{REPOS} repositories",
                best_mon,
                "s",
                reference=f"plain GET of each manifest, {JOBS} threads, warm",
                reference_value=best_get,
                extra={
                    "requests_per_repository": requests / REPOS,
                    "reference_requests_per_repository": 1,
                    "rounds": rounds,
                    "reference_cold_s": round(t_cold["s"], 3),
                    "ms_per_repository": round(best_mon / REPOS * 1000, 2),
                },
            )
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    flags(__doc__, {"--full": "the full-size run (the default is the quick one)"})
    rows = run(quick="--full" not in sys.argv)
    print_table(rows)
    for r in rows:
        print(r.metric, r.extra)
