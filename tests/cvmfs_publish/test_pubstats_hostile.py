"""Hostile publish statistics: ``cvmfs stats SOURCE`` reads ``stats/stats.db``, an unsigned SQLite file
anyone with write access to a Stratum (or a man in the middle) controls, and the site plots what it
read. Each case: one error line, non-zero exit, no traceback, bounded time and memory."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import pubstats
from cernvm_build.site.plots import publish_dashboard
from tests.support.hostile import cli, http_server, run_measured

ROW = (
    "INSERT INTO publish_statistics (publish_id, start_time, finish_time, revision, files_added)"
    " VALUES (?, '2026-12-01 10:00:00', '2026-12-01 10:00:05', ?, 1)"
)


def _stats_db(stratum: Path, *sql: str) -> Path:
    """A Stratum folder whose stats/stats.db is the server's layout, then ``sql`` run over it."""
    path = stratum / "stats" / "stats.db"
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE properties (key TEXT, value TEXT)")
    db.execute("INSERT INTO properties VALUES ('repo_name', 'stats.cernvm.test')")
    db.execute(f"CREATE TABLE publish_statistics ({pubstats._PUBLISH_COLUMNS})")
    db.execute(ROW, (1, 2))
    for statement in sql:
        db.execute(statement)
    db.commit()
    db.close()
    return path


ENDLESS_VIEW = (
    "CREATE VIEW publish_statistics AS SELECT x AS publish_id, '' AS start_time, '' AS finish_time,"
    " x AS revision, 0 AS files_added, 0 AS files_removed, 0 AS files_changed, 0 AS chunks_added,"
    " 0 AS chunks_duplicated, 0 AS catalogs_added, 0 AS directories_added, 0 AS directories_removed,"
    " 0 AS directories_changed, 0 AS symlinks_added, 0 AS symlinks_removed, 0 AS symlinks_changed,"
    " 0 AS sz_bytes_added, 0 AS sz_bytes_removed, 0 AS sz_bytes_uploaded, 0 AS sz_catalog_bytes_uploaded,"
    " 1 AS success FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
    " SELECT x FROM c ORDER BY x DESC)"
)

CASES = {
    # (SQL over the genuine layout, the error the reader gives)
    "endless-view": (("DROP TABLE publish_statistics", ENDLESS_VIEW), "publish_statistics is a view"),
    "huge-value": (
        ("UPDATE publish_statistics SET start_time = printf('%.*c', 5000000, 'x')",),
        "not a statistics database (string or blob too big)",
    ),
    "huge-name": (
        ("UPDATE properties SET value = printf('%.*c', 3000, 'n')",),
        "properties repo_name is 'nnnn",
    ),
    "name-with-escape": (
        ("UPDATE properties SET value = 'a' || char(27) || ']0;pwned' || char(7)",),
        "properties repo_name is 'a\\x1b]0;pwned\\x07'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_statistics_database_is_one_line_error(tmp_path: Path, case: str) -> None:
    sql, error = CASES[case]
    _stats_db(tmp_path / "s", *sql)
    r = run_measured([*cli(), "cvmfs", "stats", str(tmp_path / "s")], timeout=60)
    assert not r.timed_out and r.returncode == 5, r.stderr
    assert "Traceback" not in r.stderr and len(r.error_lines) == 1, r.stderr
    assert error in r.stderr and "stats/stats.db" in r.stderr
    assert r.max_rss_mb < 128, r.max_rss_mb


def test_a_file_that_is_not_sqlite_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s" / "stats").mkdir(parents=True)
    (tmp_path / "s" / "stats" / "stats.db").write_bytes(b"<html>not found</html>\n" * 100)
    assert main(["cvmfs", "stats", str(tmp_path / "s")]) == 5
    err = capsys.readouterr().err
    assert "not a statistics database (file is not a database)" in err and "Traceback" not in err


def test_reading_stops_after_its_step_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound that holds whatever the schema makes a SELECT cost (shown with a small budget)."""
    path = _stats_db(tmp_path / "s")
    db = sqlite3.connect(path)
    db.executemany(ROW, [(i, i) for i in range(2, 2000)])
    db.commit()
    db.close()
    assert len(pubstats.read(path, "x")[1]) == 1999
    monkeypatch.setattr(pubstats, "MAX_STEPS", 20_000)
    with pytest.raises(pubstats.CvmfsError, match="took more than 20,000 SQLite steps"):
        pubstats.read(path, "x")


class _Hostile(BaseHTTPRequestHandler):
    """200 MB streamed without a length: a 404 page below /missing/, else a 200 answer; below
    /trickle/ a byte every 0.3 s."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(404 if "/missing/" in self.path else 200)
        self.send_header("Connection", "close")
        self.end_headers()
        if "/trickle/" in self.path:  # a byte every 0.3 s
            with contextlib.suppress(OSError):
                for _ in range(1_000_000):
                    self.wfile.write(b"x")
                    time.sleep(0.3)
            return
        block = b"x" * (1 << 16)
        try:
            for _ in range((200 << 20) // len(block)):
                self.wfile.write(block)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[str]:
    with http_server(_Hostile) as url:
        yield url


def test_a_huge_statistics_file_stops_at_the_cap_while_streaming(hostile_server: str, tmp_path: Path) -> None:
    r = run_measured([*cli(), "cvmfs", "stats", f"{hostile_server}/cvmfs/a.org"], timeout=60)
    assert not r.timed_out and r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "statistics database is larger than 64" in r.stderr
    assert r.max_rss_mb < 200, r.max_rss_mb


def test_an_endless_error_page_is_not_read(hostile_server: str) -> None:
    """A 404 whose page never ends: the reader says 'not found' without reading it (it used to read
    every byte into memory to keep the connection)."""
    r = run_measured([*cli(), "cvmfs", "stats", f"{hostile_server}/cvmfs/missing/x"], timeout=60)
    assert not r.timed_out and r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "statistics database not found" in r.stderr
    assert r.max_rss_mb < 100, r.max_rss_mb


def test_plots_of_hostile_numbers_and_times_are_drawn() -> None:
    """publish_stats.json is data: NaN, Infinity, negative and huge values, times with and without a
    zone; the dashboard draws what is sane and never 'nan'/'inf' coordinates."""
    rows = json.loads(
        '[{"revision": 2, "files_added": NaN, "sz_bytes_added": Infinity, "chunks_added": -5,'
        ' "files_removed": 1e308, "sz_bytes_removed": -Infinity, "catalogs_added": 1' + "0" * 400 + ","
        ' "start_time": "2026-12-01T10:00:00+00:00", "finish_time": "2026-12-01T10:00:05"},'
        ' {"revision": "<b>3</b>", "files_added": 2, "start_time": [], "finish_time": "x"}]'
    )
    (repo,) = publish_dashboard({"repositories": [{"fqrn": "a.org", "publishes": rows}]})
    svg = "".join(repo["plots"])
    assert svg.count("<svg") == 4 and "<b>" not in svg and "&lt;b&gt;3&lt;/b&gt;" in svg
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
    assert [r["duration"] for r in repo["rows"]] == [0.0, 0.0]


def test_a_trickling_statistics_file_is_given_up_at_its_deadline(
    hostile_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pubstats, "STATS_DEADLINE", 1.0)
    with pytest.raises(pubstats.CvmfsError, match="transfer took more than 1 s"):
        pubstats.read_source(f"{hostile_server}/trickle/cvmfs/a.org", timeout=2)
