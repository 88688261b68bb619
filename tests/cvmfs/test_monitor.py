"""``cvmfs monitor`` against repositories the publisher writes, served by real HTTP servers on 127.0.0.1:
a healthy one, one whose whitelist expired, one checked with the wrong key, a replica made with
``cvmfs replicate`` that lags behind its Stratum-0, a server that is gone; plus the config file."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.publish import create_repository, publish_tree, resign_whitelist
from cernvm_build.cvmfs.serve import serve
from cernvm_build.errors import CvmfsError

pytestmark = pytest.mark.integration

GOOD, EXPIRED, REPL = "good.cernvm.test", "expired.cernvm.test", "repl.cernvm.test"
HOUR = 3600


@dataclass
class Site:
    s0: str  # base URL of the Stratum-0 server
    s1: str  # base URL of the replica server
    keys: Path
    dead: str  # a URL nobody answers

    def url(self, base: str, fqrn: str) -> str:
        return f"{base}/cvmfs/{fqrn}"

    def pub(self, fqrn: str) -> str:
        return str(self.keys / f"{fqrn}.pub")


def _tree(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hello.txt").write_text(text)
    return root


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("monitor")
    now = int(time.time())
    keys = tmp / "keys"
    for fqrn in (GOOD, EXPIRED, REPL):
        ks = keymod.generate_keys(fqrn)
        ks.save(keys)
        stratum = tmp / "srv0" / fqrn
        create_repository(stratum, fqrn, ks, timestamp=now - 5 * HOUR)
        publish_tree(stratum, fqrn, ks, _tree(tmp / f"src-{fqrn}", "one\n"), timestamp=now - 3 * HOUR)
        if fqrn == EXPIRED:
            resign_whitelist(stratum, fqrn, ks, days=30, timestamp=now - 31 * 86400)
    with serve(tmp / "srv0") as s0:
        (tmp / "srv1").mkdir()
        code = main(["cvmfs", "replicate", f"{s0.url}/cvmfs/{REPL}", str(tmp / "srv1" / REPL), "--key",
                     str(keys / f"{REPL}.pub"), "-q"])  # fmt: skip
        assert code == 0
        # The Stratum-0 moves on; the replica stays at the revision it copied 3 hours earlier.
        ks = keymod.load_keys(keys, REPL)
        publish_tree(tmp / "srv0" / REPL, REPL, ks, _tree(tmp / f"src-{REPL}", "two\n"), timestamp=now)
        with serve(tmp / "srv1") as s1:
            yield Site(s0.url, s1.url, keys, f"http://127.0.0.1:{_closed_port()}/cvmfs/{GOOD}")


def _monitor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    code = main(["cvmfs", "monitor", "--json", *argv])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def _kinds(report: dict, url: str) -> list[str]:  # type: ignore[type-arg]
    (probe,) = [p for p in report["probes"] if p["url"] == url]
    return [x["kind"] for x in probe["problems"]]


def test_healthy_repository_exits_zero_with_its_verified_manifest(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "status.json"
    code, report, err = _monitor(
        capsys, site.url(site.s0, GOOD), "--key", site.pub(GOOD), "--out", str(out_file)
    )
    assert code == 0, err
    (p,) = report["probes"]
    assert p["status"] == "ok" and p["role"] == "stratum0" and p["revision"] == 2
    assert p["root_hash"] and p["published"].endswith("Z") and p["whitelist_expires"]
    assert report["healthy"] is True and json.loads(out_file.read_text()) == report


def test_lagging_replica_expired_whitelist_bad_key_and_dead_server_are_each_reported(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    replica, origin = site.url(site.s1, REPL), site.url(site.s0, REPL)
    expired = site.url(site.s0, EXPIRED)
    code, report, err = _monitor(
        capsys,
        expired,
        "--replica-of", f"{replica}={origin}",
        "--key", site.pub(EXPIRED), "--key", site.pub(REPL),  # each is tried, as the client does
        "--max-lag", "1h",
    )  # fmt: skip
    assert code == 5
    assert _kinds(report, replica) == ["replica-lag"]
    (rp,) = [p for p in report["probes"] if p["url"] == replica]
    assert (rp["revision"], rp["lag_revisions"], rp["lag_seconds"]) == (2, 1, 3 * HOUR)
    assert _kinds(report, origin) == []  # the Stratum-0 itself is fine
    assert _kinds(report, expired) == ["whitelist-expired"]
    lines = [x for x in err.splitlines() if x.startswith("problem:")]
    assert len(lines) == 2 and all("hint:" in x for x in lines)
    assert any(replica in x and "lags 1 revision" in x for x in lines)
    assert "Traceback" not in err and err.strip().splitlines()[-2].startswith("error: 2 problem(s)")

    # A lag allowed by --max-lag is not a problem; the numbers are still there.
    code, report, _ = _monitor(
        capsys, "--replica-of", f"{replica}={origin}", "--key", site.pub(REPL), "--max-lag", "4h"
    )
    assert code == 0 and [p["lag_revisions"] for p in report["probes"] if p["url"] == replica] == [1]

    code, report, err = _monitor(capsys, site.url(site.s0, GOOD), site.dead, "--key", site.pub(EXPIRED))
    assert code == 5
    assert _kinds(report, site.url(site.s0, GOOD)) == ["bad-signature"]
    assert _kinds(report, site.dead) == ["unreachable"]
    assert "Traceback" not in err


def test_expiring_whitelist_and_stale_manifest_follow_the_thresholds(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    good = site.url(site.s0, GOOD)
    code, report, _ = _monitor(
        capsys, good, "--key", site.pub(GOOD), "--whitelist-warn", "31d", "--max-age", "2h"
    )
    assert code == 5 and _kinds(report, good) == ["whitelist-expiring", "stale"]
    code, _, _ = _monitor(capsys, good, "--key", site.pub(GOOD), "--max-age", "4h")
    assert code == 0


def test_config_file_pairs_replicas_and_bad_config_is_one_line(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(
        "repositories:\n"
        f"  - url: {site.url(site.s0, REPL)}\n"
        f"    key: {site.pub(REPL)}\n"
        f"    replicas: [{site.url(site.s1, REPL)}]\n"
    )
    code, report, _ = _monitor(capsys, "--config", str(cfg))
    assert code == 5 and [p["role"] for p in report["probes"]] == ["stratum0", "replica"]
    assert _kinds(report, site.url(site.s1, REPL)) == ["replica-lag"]

    cfg.write_text(f"repositories:\n  - url: {site.url(site.s0, REPL)}\n    replica: []\n")
    code = main(["cvmfs", "monitor", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 5 and "Traceback" not in err
    assert f"{cfg}:3: repositories[0].replica: unknown key 'replica'" in err

    code = main(["cvmfs", "monitor", "--replica-of", "no-equals-sign"])
    assert code == 2 and "REPLICA_URL=STRATUM0_URL" in capsys.readouterr().err


def test_status_page_renders_the_report_escaped(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from cernvm_build.cli.reference import GENERATORS
    from cernvm_build.paths import data_dir
    from cernvm_build.site.build import Builder

    web = tmp_path / "site"
    shutil.copytree(data_dir("site"), web)
    replica, origin = site.url(site.s1, REPL), site.url(site.s0, REPL)
    status = web / "data" / "monitor.json"
    argv = ["--replica-of", f"{replica}={origin}", "--key", site.pub(REPL), "--out", str(status)]
    code, report, _ = _monitor(capsys, site.dead, *argv)
    assert code == 5 and json.loads(status.read_text()) == report
    # A hostile URL in the data reaches the page as text only.
    report["probes"][0]["url"] = "http://x/<script>alert(1)</script>"
    status.write_text(json.dumps(report))
    Builder(web, tmp_path / "out", generators=GENERATORS).build()
    page = (tmp_path / "out" / "status" / "index.html").read_text()
    assert "2 problem(s) in 2 of 3 repositories" in page
    assert f"<small>{replica}</small>" in page and "lags 1 revision(s), 3.0h" in page
    assert "<strong>unreachable</strong>" in page and "<strong>replica-lag</strong>" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # pr18d finding 2: sorted() compared the number key with the str keys (a traceback)
        (
            "repositories:\n  - url: http://s0/cvmfs/a.org\n    1: x\n    zz: y\n",
            ":3: repositories[0].1: unknown key '1'",
        ),
        ("repositories:\n  - url: ''\n", ":2: repositories[0]: a repository needs 'url'"),
        (
            "repositories:\n  - url: http://s0/cvmfs/a.org\n    replicas: ['']\n",
            ":3: repositories[0].replicas:",
        ),
    ],
)
def test_a_config_key_that_is_not_text_or_an_empty_url_is_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    from cernvm_build.cvmfs import monitor_config

    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(text)
    with pytest.raises(CvmfsError) as e:
        monitor_config.load(cfg, (tmp_path / "k.pub",))
    assert message in str(e.value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_a_config_that_is_a_fifo_or_huge_is_one_line(tmp_path: Path, kind: str) -> None:
    """pr18d finding 15: --config was read whole (/dev/zero until memory ran out, a FIFO for ever)."""
    import os

    from cernvm_build.cvmfs import monitor_config

    cfg = tmp_path / "monitor.yaml"
    if kind == "fifo":
        os.mkfifo(cfg)
    else:
        cfg.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(
        CvmfsError,
        match=rf"^{cfg}: (cannot read the monitor config: .*not a regular|the monitor config is larger)",
    ):
        monitor_config.load(cfg)


def test_a_revoked_certificate_and_a_revision_floor_are_their_own_problem(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--blacklist FILE`` (default /etc/cvmfs/blacklist): what it refuses is ``revoked``, with the
    list's line, not a bad signature."""
    from cernvm_build.cvmfs.keys import load_keys

    fpr = load_keys(site.keys, GOOD).fingerprint()
    listed = tmp_path / "blacklist"
    listed.write_text(f"{fpr}\n<{REPL} 4\n")  # its Stratum-0 is at revision 3
    good, repl = site.url(site.s0, GOOD), site.url(site.s0, REPL)
    keys = ["--key", site.pub(GOOD), "--key", site.pub(REPL)]
    code, report, err = _monitor(capsys, good, repl, *keys, "--blacklist", str(listed))
    assert code == 5 and "Traceback" not in err
    assert _kinds(report, good) == ["revoked"] and _kinds(report, repl) == ["revoked"]
    assert f"(fingerprint {fpr}), which is blacklisted at {listed}:1" in err
    assert f"{REPL}: revision 3 is blacklisted: revisions below 4 are refused at {listed}:2" in err
    code, report, _ = _monitor(capsys, good, repl, *keys)
    assert code == 0
