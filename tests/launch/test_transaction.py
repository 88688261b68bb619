"""create is a transaction: failed or interrupted at any step, it leaves nothing; a broken leftover
of an older launch is listed as broken and destroy removes it. libvirt's test driver is handed to
launch as an injected host; interrupts arrive through the reporter (at the start of each step), a
connection that interrupts right after libvirt did its part, and a real SIGTERM through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from cernvm_build import launch
from cernvm_build.cli.launch import main
from cernvm_build.errors import InstanceError, LaunchError
from cernvm_build.launch.transaction import Transaction
from cernvm_build.report import Recorder
from tests.launch.support import TEST_DRIVER, create, driver_host, request


def _nothing_left(conn: Any, home: Path, name: str) -> None:
    assert name not in [d.name() for d in conn.listAllDomains(0)]
    assert not (home / "run" / name).exists()
    leftovers = [p for p in (home / "run").rglob("*")] if (home / "run").exists() else []
    assert leftovers == []


class _StopAt(Recorder):
    """A reporter that raises ``error`` when step ``at`` begins (every earlier step is done)."""

    def __init__(self, at: str, error: BaseException) -> None:
        super().__init__()
        self.at, self.error = at, error

    def step(self, message: str) -> None:
        super().step(message)
        if message == self.at:
            raise self.error


@pytest.mark.parametrize("step", launch.STEPS)
@pytest.mark.parametrize("error", [KeyboardInterrupt(), LaunchError("disk full")], ids=["ctrl-c", "error"])
def test_interrupt_or_failure_at_each_step_leaves_nothing(
    conn: Any, launch_env: Path, image: Path, step: str, error: BaseException
) -> None:
    stop = _StopAt(step, error)
    with pytest.raises(type(error)):
        create(conn, request(launch_env, image, "tx"), reporter=stop)
    assert stop.steps() == list(launch.STEPS[: launch.STEPS.index(step) + 1])
    _nothing_left(conn, launch_env, "tx")
    # and the name is free again: the next create works
    assert create(conn, request(launch_env, image, "tx")).state == "running"


class _Dom:
    def __init__(self, dom: Any, after: str) -> None:
        self._dom, self._after = dom, after

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._dom, attr)

    def create(self) -> int:
        result: int = self._dom.create()
        if self._after == "create":
            raise KeyboardInterrupt
        return result


class _Conn:
    """The test driver's connection, interrupted right after defineXML or the domain's create()
    returned: libvirt has done its part and launch has not yet run the next line."""

    def __init__(self, conn: Any, after: str) -> None:
        self._conn, self._after = conn, after

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._conn, attr)

    def defineXML(self, xml: str) -> Any:
        dom = self._conn.defineXML(xml)
        if self._after == "define":
            raise KeyboardInterrupt
        return _Dom(dom, self._after)


@pytest.mark.parametrize("after", ["define", "create"])
def test_interrupt_right_after_libvirt_acted_leaves_nothing(
    conn: Any, launch_env: Path, image: Path, after: str
) -> None:
    host = launch.Host(_Conn(conn, after), conn.getURI(), TEST_DRIVER)
    with pytest.raises(KeyboardInterrupt):
        launch.create_instance(request(launch_env, image, "tx2"), host=host)
    _nothing_left(conn, launch_env, "tx2")


def test_sigterm_during_create_exits_143_and_leaves_nothing(
    launch_env: Path, image: Path, driver_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real SIGTERM to this process while the CLI creates: the undo runs, exit 143."""
    hosts: list[launch.Host] = []

    class _Terminating(_Conn):
        def defineXML(self, xml: str) -> Any:
            dom = self._conn.defineXML(xml)
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode: inside create
            return dom

    def connect(uri: str | None) -> launch.Host:
        host = driver_host(uri)
        host.conn = _Terminating(host.conn, "")
        hosts.append(host)
        return host

    argv = ["--connect", driver_uri, "create", "--name", "term", "--iso", str(image), "--yes", "--no-wait"]
    assert main(argv, connect=connect) == 143
    assert "terminated" in capsys.readouterr().err
    _nothing_left(hosts[0].conn, launch_env, "term")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the CLI put the old handler back


def test_undo_runs_newest_first_and_survives_a_failing_undo() -> None:
    done: list[str] = []

    def fail() -> None:
        done.append("b")
        raise OSError("gone already")

    with pytest.raises(KeyboardInterrupt), Transaction() as tx:
        tx.on_undo("a", lambda: done.append("a"))
        tx.on_undo("b", fail)
        tx.on_undo("c", lambda: done.append("c"))
        raise KeyboardInterrupt
    assert done == ["c", "b", "a"]
    with Transaction() as tx:
        tx.on_undo("kept", lambda: done.append("never"))
    assert "never" not in done  # a finished transaction keeps what it made


def test_ctrl_c_during_the_undo_waits_until_the_undo_is_done() -> None:
    done: list[str] = []

    def impatient() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again while create cleans up
        done.append("b")

    with pytest.raises(KeyboardInterrupt), Transaction() as tx:
        tx.on_undo("a", lambda: done.append("a"))
        tx.on_undo("b", impatient)
        raise LaunchError("define failed")
    assert done == ["b", "a"]  # every undo ran; then the Ctrl-C arrived
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_broken_leftover_is_listed_and_destroyed(
    conn: Any, launch_env: Path, image: Path, driver_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an interrupted create of an older launch left: a defined domain whose files are gone."""
    spec = request(launch_env, image, "old")
    create(conn, launch.InstanceSpec(**{**spec.__dict__, "start": False}))
    shutil.rmtree(launch_env / "run" / "old")

    (inst,) = launch.list_instances(driver_host(conn))
    assert inst.state == "broken" and "scratch.qcow2" in inst.broken
    with pytest.raises(InstanceError, match=r"'old' is broken: .* missing in"):
        launch.start(driver_host(conn), "old")

    args = ["--connect", driver_uri]
    assert main([*args, "list"], connect=lambda uri: driver_host(conn)) == 0
    assert capsys.readouterr().out.endswith("\tstate: broken\n")
    assert main([*args, "list", "--json"], connect=lambda uri: driver_host(conn)) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["state"] == "broken" and entry["broken"]
    assert main([*args, "destroy", "old"], connect=lambda uri: driver_host(conn)) == 0
    assert conn.listAllDomains(0) == []
