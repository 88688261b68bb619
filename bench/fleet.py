"""Fleet load benchmark (issue 20): N guests boot at once, through one site squid vs straight at the
Stratum, in the same run.

Each simulated guest reads the demo OS's recorded boot working set with a fresh reader
(``tests/support/fleet.py``; 22 files, 6.4 MB); the demo OS is published and served by nginx
(``cvmfs nginx-config``), squid runs with ``cvmfs squid-config``. Figures: object requests the
origin served (aim: about one working set for the whole fleet through squid) and the guests' boot
time percentiles, both next to the same fleet without the proxy. 200 guests (50 in quick mode),
50 at a time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.common import Result, flags, print_table
from tests.support.fleet import fleet_stack, run_fleet
from tests.support.servers import object_requests, running

AT_ONCE = 50


def run(quick: bool = True) -> list[Result]:

    guests = 50 if quick else 200
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    squid_run = Path(tempfile.mkdtemp(prefix="bench-fleet-squid-"))
    squid_run.chmod(0o1777)  # squid's own user writes its log there
    try:
        st = fleet_stack(work, squid_run)
        expected = st.expected
        with running(st.origin.argv, st.origin.port, "nginx"):
            direct = run_fleet(
                st.url,
                st.fqrn,
                st.origin.public_key,
                expected,
                guests=guests,
                concurrency=AT_ONCE,
                proxy=None,
            )
            direct_requests = object_requests(st.origin.log)
            with running(st.squid_argv, st.proxy, "squid"):
                via = f"http://127.0.0.1:{st.proxy}"
                squid = run_fleet(
                    st.url,
                    st.fqrn,
                    st.origin.public_key,
                    expected,
                    guests=guests,
                    concurrency=AT_ONCE,
                    proxy=via,
                )
            squid_requests = object_requests(st.origin.log) - direct_requests
        for fleet in (direct, squid):
            if fleet.failed or fleet.wrong:
                raise RuntimeError(f"fleet failed: {(fleet.failed + fleet.wrong)[:3]}")
        per_boot = direct_requests / guests
        size = {"guests": guests, "at_once": AT_ONCE, "working_set_bytes": sum(map(len, expected.values()))}
        return [
            Result(
                "fleet.origin",
                "object requests",
                squid_requests,
                "req",
                reference=f"{guests} guests without proxy",
                reference_value=direct_requests,
                aim=f"<= one working set ({per_boot:.0f})",
                ok=squid_requests <= per_boot,
                extra=size,
            ),
            Result(
                "fleet.boot",
                "p50 through squid",
                squid.percentile(0.5),
                "s",
                reference="no proxy",
                reference_value=direct.percentile(0.5),
                extra=size,
            ),
            Result(
                "fleet.boot",
                "p99 through squid",
                squid.percentile(0.99),
                "s",
                reference="no proxy",
                reference_value=direct.percentile(0.99),
                extra=size,
            ),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(squid_run, ignore_errors=True)


if __name__ == "__main__":
    flags(__doc__, {"--quick": "a smaller run (fewer rounds or inputs)"})
    print_table(run(quick="--quick" in sys.argv))
