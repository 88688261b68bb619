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
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.publish import create_repository, publish_tree
from cernvm_build.demo.os_tree import build_demo_os
from tests.support.fleet import expected_bytes, run_fleet, working_set

from .test_nginx import _free_port
from .test_squid import _requests, _running, _tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FQRN = "fleet.cernvm.test"
GUESTS = 200
AT_ONCE = 50


def test_a_fleet_booting_at_once_costs_the_origin_one_working_set(tmp_path: Path, logs: Path) -> None:
    demo = build_demo_os(tmp_path / "demo-os")
    keys = keymod.generate_keys(FQRN)
    keys.save(tmp_path / "keys")
    pub = tmp_path / "keys" / f"{FQRN}.pub"
    stratum = tmp_path / "srv" / FQRN
    create_repository(stratum, FQRN, keys)
    publish_tree(stratum, FQRN, keys, demo.root, tag="boot", normalize_owner=True)
    expected = expected_bytes(demo.root, working_set())

    origin, proxy = _free_port(), _free_port()
    nginx_conf, squid_conf = tmp_path / "nginx" / "nginx.conf", logs / "squid.conf"
    nginx_conf.parent.mkdir()
    argv = ["cvmfs", "nginx-config", str(tmp_path / "srv"), "--port", str(origin), "--listen", "127.0.0.1"]
    assert main([*argv, "--user", "root", "-o", str(nginx_conf)]) == 0
    argv = ["cvmfs", "squid-config", "--port", str(proxy), "--listen", "127.0.0.1"]
    assert main([*argv, "--client", "127.0.0.1", "--stratum", "127.0.0.1", "-o", str(squid_conf)]) == 0
    origin_log = nginx_conf.parent / "access.log"
    url = f"http://127.0.0.1:{origin}/cvmfs/{FQRN}"

    with _running([_tool("nginx"), "-c", str(nginx_conf), "-g", "daemon off;"], origin, "nginx"):
        one = run_fleet(url, FQRN, pub, expected, guests=1, concurrency=1, proxy=None)
        assert not one.failed and not one.wrong, one.failed or one.wrong
        one_boot = _requests(origin_log)  # the objects one boot costs the origin
        with _running([_tool("squid"), "-N", "-f", str(squid_conf)], proxy, "squid"):
            fleet = run_fleet(
                url,
                FQRN,
                pub,
                expected,
                guests=GUESTS,
                concurrency=AT_ONCE,
                proxy=f"http://127.0.0.1:{proxy}",
            )
        through_squid = _requests(origin_log) - one_boot
        squid_log = (logs / "access.log").read_text().splitlines()

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

    proxy = _free_port()
    conf = logs / "squid.conf"
    argv = ["cvmfs", "squid-config", "--port", str(proxy), "--listen", "127.0.0.1", "--client", "127.0.0.1"]
    assert main([*argv, "--stratum", "stratum-one.example.org", "-o", str(conf)]) == 0
    with _running([_tool("squid"), "-N", "-f", str(conf)], proxy, "squid"):
        c = http.client.HTTPConnection("127.0.0.1", proxy, timeout=30)
        c.request("GET", "http://127.0.0.2:9/cvmfs/x/.cvmfspublished")
        assert c.getresponse().status == 403
