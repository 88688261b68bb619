"""``cvmfs monitor`` over hostile servers: a correctly signed manifest with an impossible publish
time, and a man in the middle streaming a 500 MB manifest. Each is one 'problem:' line for that
repository, exit 5, no traceback, bounded memory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hostile import (
    Editor,
    MitmServer,
    Repo,
    cli,
    copy_repo,
    publish_base,
    run_measured,
    streamed,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return publish_base(tmp_path_factory.mktemp("monitor-hostile"))


def test_a_signed_manifest_from_the_far_future_is_a_problem_line(base: Repo, tmp_path: Path) -> None:
    repo = copy_repo(base, tmp_path)
    ed = Editor(repo)
    ed.sign_manifest(timestamp=9_999_999_999_999_999_999)  # it was an OverflowError traceback
    ed.close()
    r = run_measured([*cli(), "cvmfs", "monitor", str(repo.stratum), "--key", str(repo.pub)], timeout=60)
    assert r.returncode == 5 and "Traceback" not in r.stderr, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("problem:")]
    assert "field 'T' is not a publish time: 9999999999999999999" in line


def test_a_streamed_huge_manifest_stops_at_its_cap(base: Repo) -> None:
    with MitmServer(base, {".cvmfspublished": streamed(500 << 20, b"C")}) as mitm:
        r = run_measured([*cli(), "cvmfs", "monitor", mitm.url, "--key", str(base.pub)], timeout=60)
        sent = mitm.sent.get(".cvmfspublished", 0)
    assert r.returncode == 5 and "Traceback" not in r.stderr, r.stderr
    assert "manifest is larger than 1 MiB" in r.stderr and r.max_rss_mb < 128
    assert sent < 100 << 20  # the reader hung up long before the end


def _trickle() -> Iterator[bytes]:
    """2 KiB every 0.5 s: each read well within --timeout and faster than the low-speed limit
    (1024 B/s), so only the probe's whole deadline can end it; the whole would take hours."""
    for _ in range(2_000_000):
        yield b"C" * 2048
        time.sleep(0.5)


def test_a_trickling_server_is_given_up_at_the_probe_deadline(base: Repo) -> None:
    with MitmServer(base, {".cvmfspublished": _trickle}) as mitm:
        argv = [
            *cli(),
            "cvmfs",
            "monitor",
            mitm.url,
            "--key",
            str(base.pub),
            "--timeout",
            "1",
            "--retries",
            "0",
        ]
        r = run_measured(argv, timeout=60)
    assert not r.timed_out and r.returncode == 5 and "Traceback" not in r.stderr, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("problem:")]
    assert "transfer took more than 3 s" in line
