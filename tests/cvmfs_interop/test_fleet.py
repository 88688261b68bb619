"""The fleet load test: 200 guests boot at once through one site squid from one Stratum (nginx).

The demo OS is published, served by nginx with ``cvmfs nginx-config`` and proxied by Debian's squid
with ``cvmfs squid-config``. Each simulated guest reads the demo OS's recorded boot working set with
a fresh reader (``tests/support/fleet.py``). The origin must serve about one working set for the
whole fleet (squid's collapsed forwarding merges the simultaneous misses), and no guest may see a
wrong byte. Boot-time percentiles are printed; ``bench/fleet.py`` puts the figures beside a fleet
without the proxy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from tests.support import free_port
from tests.support.fleet import fleet_stack, run_fleet
from tests.support.servers import object_requests, running, tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GUESTS = 200
AT_ONCE = 50


def test_a_fleet_booting_at_once_costs_the_origin_one_working_set(tmp_path: Path, logs: Path) -> None:
    st = fleet_stack(tmp_path, logs)
    expected = st.expected
    with running(st.origin.argv, st.origin.port, "nginx"):
        one = run_fleet(st.url, st.fqrn, st.origin.public_key, expected, guests=1, concurrency=1, proxy=None)
        assert not one.failed and not one.wrong, one.failed or one.wrong
        one_boot = object_requests(st.origin.log)  # the objects one boot costs the origin
        with running(st.squid_argv, st.proxy, "squid"):
            proxy = f"http://127.0.0.1:{st.proxy}"
            fleet = run_fleet(
                st.url,
                st.fqrn,
                st.origin.public_key,
                expected,
                guests=GUESTS,
                concurrency=AT_ONCE,
                proxy=proxy,
            )
        through_squid = object_requests(st.origin.log) - one_boot
        squid_log = st.squid_log.read_text().splitlines()

    print(
        f"{GUESTS} guests, {AT_ONCE} at once, {len(expected)} files "
        f"({sum(map(len, expected.values()))} bytes) "
        f"each: boot p50 {fleet.percentile(0.5):.2f} s, p99 {fleet.percentile(0.99):.2f} s; "
        f"origin object requests {through_squid} (one boot: {one_boot}; without the proxy: "
        f"{GUESTS * one_boot})"
    )
    assert not fleet.failed, fleet.failed[:3]
    assert not fleet.wrong, fleet.wrong[:3]
    # every guest's object requests reached squid, and squid asked the origin for each object once
    assert sum(1 for line in squid_log if "/data/" in line) == GUESTS * one_boot
    assert through_squid <= one_boot, f"{through_squid} origin requests for {one_boot} objects"


def test_the_squid_configuration_refuses_other_clients_and_servers(tmp_path: Path, logs: Path) -> None:
    """With --client and --stratum the proxy is not open: another destination is refused (403)."""
    import http.client

    proxy = free_port()
    conf = logs / "squid.conf"
    argv = ["cvmfs", "squid-config", "--port", str(proxy), "--listen", "127.0.0.1", "--client", "127.0.0.1"]
    assert main([*argv, "--stratum", "stratum-one.example.org", "-o", str(conf)]) == 0
    with running([tool("squid"), "-N", "-f", str(conf)], proxy, "squid"):
        c = http.client.HTTPConnection("127.0.0.1", proxy, timeout=30)
        c.request("GET", "http://127.0.0.2:9/cvmfs/x/.cvmfspublished")
        assert c.getresponse().status == 403
