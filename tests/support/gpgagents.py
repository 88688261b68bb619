"""gpg-agents the suite starts: each is stopped by the fixture or helper that caused it, and a check at
session end fails the run when one outlived it.

``gpg`` (and ``dnf``, through librepo's gpgme: one keyring per repository in its cache) starts a
``gpg-agent`` per home as a daemon whose parent is init, so it outlives the test and the suite. It
only exits when killed or, within about a minute, when its home is deleted — and pytest keeps the last
runs' temporary folders, so agents of homes in there lived on (about 22 per run before this).

The suite's agents are told apart from everyone else's by their environment: ``pytest_configure``
puts this run's token in ``os.environ``, every process the tests start inherits it, and an agent keeps
the environment it was started with (``/proc/<pid>/environ``). Agents of another suite running on the
same host, or of a user, never carry this run's token and are never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from cernvm_build import gpg

VAR = "CERNVM_TEST_RUN"


@dataclass(frozen=True)
class Agent:
    pid: int
    home: Path


def running(token: str | None = None) -> list[Agent]:
    """The gpg-agents running now; with ``token``, only those started under this suite's run ``token``."""
    mark = f"{VAR}={token}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if Path(os.fsdecode(argv[0])).name != "gpg-agent":
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if token is not None and mark not in env:
            continue
        found.append(Agent(int(proc.name), _home(argv, env)))
    return found


def _home(argv: list[bytes], env: list[bytes]) -> Path:
    """The home an agent serves: its ``--homedir``, else the ``GNUPGHOME`` it started with, else ~/.gnupg."""
    if b"--homedir" in argv[:-1]:
        return Path(os.fsdecode(argv[argv.index(b"--homedir") + 1]))
    given = [v.removeprefix(b"GNUPGHOME=") for v in env if v.startswith(b"GNUPGHOME=")]
    return Path(os.fsdecode(given[0])) if given else Path.home() / ".gnupg"


def stop(home: Path) -> None:
    """End the agent of ``home`` and remove the socket folder gpg keeps for it in /run/user/<uid>.

    ``gpgconf --kill`` returns once the agent has removed its sockets, but the agent itself only exits
    at its next timer tick (1–2 s later); it has nothing left to clean then, so it is killed right away
    rather than waited for (about 22 homes a run)."""
    pids = [a.pid for a in running() if a.home == home]
    gpg.stop_agent(home)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.01 if pids else 0)


def _alive(pid: int) -> bool:
    """Still running (an exited agent waits as a zombie, without a command line, until init reaps it)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def stop_under(root: Path) -> None:
    """Stop every agent whose home is under ``root`` (dnf's are ``<cachedir>/<repo>-<hash>/pubring``)."""
    for home in {a.home for a in running() if a.home.is_relative_to(root)}:
        stop(home)


def pytest_configure(config: pytest.Config) -> None:
    os.environ[VAR] = uuid.uuid4().hex


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears down what -x or Ctrl-C left set up
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if an agent it started is still running; stop those agents either way."""
    token = os.environ.get(VAR)
    if not token:  # no token: ``running`` would list every agent on the host, not this run's
        return
    leaked = running(token)
    if not leaked:
        return
    for agent in leaked:
        stop(agent.home)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"{len(leaked)} gpg-agent(s) started by this run outlived it (stopped now); their homes "
            "name the test — stop them where they are made (tests.support.gpgagents.stop):",
            red=True,
        )
        for agent in leaked:
            reporter.write_line(f"  pid {agent.pid}: {agent.home}", red=True)
    if session.exitstatus == pytest.ExitCode.OK:  # an interrupted run or one with no tests says so still
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
