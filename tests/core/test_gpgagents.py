"""The session-end check of ``tests.support.gpgagents``: a run whose tests leave a gpg-agent running
fails and names the agent's home; agents stopped in time, and agents that are not the run's, pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_stop_under_ends_the_agents_of_nested_homes_only(tmp_path: Path) -> None:
    """dnf's keyrings are ``<cache>/<repo>-<hash>/pubring``: found by their agents, not by dnf's layout."""
    inside, outside = tmp_path / "dnf" / "cache" / "repo-1" / "pubring", tmp_path / "other"
    for home in (inside, outside):
        home.mkdir(mode=0o700, parents=True)
        subprocess.run(["gpgconf", "--homedir", home, "--launch", "gpg-agent"], check=True)
    try:
        gpgagents.stop_under(tmp_path / "dnf")
        alive = {a.home for a in gpgagents.running(os.environ[gpgagents.VAR])}
        assert inside not in alive and outside in alive
    finally:
        gpgagents.stop(outside)
