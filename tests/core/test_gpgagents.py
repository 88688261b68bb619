"""The session-end check of ``tests.support.gpgagents``: a run whose tests leave a gpg-agent running
fails and names the agent's home; agents stopped in time, and agents that are not the run's, pass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import cast

import pytest

from tests.support import gpgagents

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

INNER = """
import os, subprocess
from pathlib import Path
from tests.support import gpgagents

def launch(home, env=None):
    home.mkdir(mode=0o700)
    subprocess.run(["gpgconf", "--homedir", home, "--launch", "gpg-agent"], check=True, env=env)

def test_leaks(tmp_path):
    launch(Path({leaked!r}))

def test_stops_its_own(tmp_path):
    launch(Path({tidy!r}))
    gpgagents.stop(Path({tidy!r}))

def test_a_foreign_agent(tmp_path):
    env = {{k: v for k, v in os.environ.items() if k != gpgagents.VAR}}
    launch(Path({foreign!r}), env)
"""


def test_an_agent_that_outlives_the_run_fails_it_and_is_stopped(tmp_path: Path) -> None:
    homes = {name: tmp_path / name for name in ("leaked", "tidy", "foreign")}
    (tmp_path / "test_inner.py").write_text(INNER.format(**{k: str(v) for k, v in homes.items()}))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "tests.support.gpgagents", "-p", "no:cacheprovider",
             "test_inner.py"],
            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        assert "3 passed" in out, out
        assert proc.returncode == pytest.ExitCode.TESTS_FAILED, out
        assert "1 gpg-agent(s) started by this run outlived it" in out and str(homes["leaked"]) in out
        assert str(homes["tidy"]) not in out and str(homes["foreign"]) not in out
        alive = {a.home for a in gpgagents.running()}
        assert homes["leaked"] not in alive and homes["tidy"] not in alive
        assert homes["foreign"] in alive  # not the inner run's: left alone
    finally:
        gpgagents.stop(homes["foreign"])


def test_stop_under_ends_the_agents_of_nested_homes_only() -> None:
    """dnf's keyrings are ``<cache>/<repo>-<hash>/pubring``: found by their agents, not by dnf's layout.

    The homes are short, in /tmp: without /run/user/<uid> (containers, su) gpg binds its sockets in the
    home, and ``tmp_path`` plus this nesting plus ``S.gpg-agent.browser`` reaches the 108-byte AF_UNIX
    limit as pytest's folder counter or the user name grows."""
    base = Path(tempfile.mkdtemp(prefix="ga-", dir="/tmp"))
    inside, outside = base / "d" / "c" / "r-1" / "pubring", base / "o"
    try:
        for home in (inside, outside):
            home.mkdir(mode=0o700, parents=True)
            subprocess.run(["gpgconf", "--homedir", home, "--launch", "gpg-agent"], check=True)
        gpgagents.stop_under(base / "d")
        alive = {a.home for a in gpgagents.running(os.environ[gpgagents.VAR])}
        assert inside not in alive and outside in alive
    finally:
        gpgagents.stop(inside)
        gpgagents.stop(outside)
        shutil.rmtree(base, ignore_errors=True)


class _Session:
    """What the session-end hook reads of a session."""

    def __init__(self, exitstatus: int) -> None:
        self.exitstatus = exitstatus
        self.config = self
        self.pluginmanager = self

    def get_plugin(self, name: str) -> None:
        return None


def _leaking(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """One agent left by the run (as ``running`` would find it); returns the homes ``stop`` is given."""
    stopped: list[Path] = []
    monkeypatch.setattr(gpgagents, "running", lambda token=None: [gpgagents.Agent(1, Path("/nowhere"))])
    monkeypatch.setattr(gpgagents, "stop", stopped.append)
    return stopped


def test_without_a_run_token_the_check_touches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token would mean every gpg-agent on the host (other users', other suites')."""
    stopped = _leaking(monkeypatch)
    monkeypatch.delenv(gpgagents.VAR)
    session = _Session(pytest.ExitCode.OK)
    gpgagents.pytest_sessionfinish(cast(pytest.Session, session))
    assert stopped == [] and session.exitstatus == pytest.ExitCode.OK


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED),
        (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERRUPTED),
        (pytest.ExitCode.NO_TESTS_COLLECTED, pytest.ExitCode.NO_TESTS_COLLECTED),
    ],
)
def test_a_leak_fails_a_passing_run_and_keeps_any_other_exit_status(
    monkeypatch: pytest.MonkeyPatch, before: pytest.ExitCode, after: pytest.ExitCode
) -> None:
    stopped = _leaking(monkeypatch)
    session = _Session(before)
    gpgagents.pytest_sessionfinish(cast(pytest.Session, session))
    assert stopped == [Path("/nowhere")] and session.exitstatus == after
