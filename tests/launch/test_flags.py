"""cernvm-launch's flags go through the settings table: bad values fail in one line, naming the flag,
before libvirt is contacted; ``connect=`` in the config file reaches every command.

Every run points libvirt at a socket that does not exist: had the command contacted libvirt, it
would fail with "libvirt daemon is not running" (a ConnectError) instead of the flag's own error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.errors import ConfigFileError, ConnectError, UsageError

ROOT = Path(__file__).parents[2]


def _run(tmp_path: Path, *argv: str, conf: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "global.conf").write_text(conf)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "CERNVM_LAUNCH_CONF": str(tmp_path / "global.conf"),
        "CERNVM_LAUNCH_HOME": str(tmp_path / "home"),
        "COLUMNS": "300",
    }
    return subprocess.run(
        [sys.executable, "-m", "cernvm_build.cli.launch", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _nowhere(tmp_path: Path) -> str:
    return f"qemu+unix:///system?socket={tmp_path}/no-daemon.sock"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--memory", "-5", "--memory: -5 is out of range"),
        ("--memory", "10", "--memory: 10M is out of range"),
        ("--memory", "lots", "--memory: 'lots' is not a size"),
        ("--cpus", "0", "--cpus: 0 is out of range"),
        ("--cpus", "two", "--cpus: 'two' is not a whole number"),
        ("--disk", "-5", "--disk: -5 is out of range"),
        ("--timeout", "soon", "--timeout: 'soon' is not a duration"),
        ("--ssh-port", "70000", "--ssh-port: 70000 is out of range"),
        # user-data keys, by the bootloader's own table
        ("--snapshot", "a;reboot", "--snapshot: invalid value 'a;reboot'"),
        ("--date", "yesterday", "--date: invalid value 'yesterday'"),
        # dates of the right form no calendar has: the guest's init ignored them and booted the newest
        # snapshot under the instance's "date:" label
        ("--date", "2011-02-30", "--date: '2011-02-30' is not a date"),
        ("--date", "2016-12-31T23:59:60Z", "--date: '2016-12-31T23:59:60Z' is not a date"),
        ("--date", "2011-06-01T24:00", "--date: '2011-06-01T24:00' is not a date"),
        ("--cvmfs-server", "a b", "--cvmfs-server: invalid value 'a b'"),
    ],
)
def test_bad_flag_values_fail_in_one_line_before_libvirt(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    res = _run(tmp_path, "--connect", _nowhere(tmp_path), "create", "--name", "vm", "--yes", flag, value)
    assert res.returncode == UsageError.exit_code, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0] == f"error: {message}"
    assert len(lines) == 2 and lines[1].startswith("hint: ")
    assert "Traceback" not in res.stderr and "daemon" not in res.stderr


def test_units_are_accepted_and_reach_libvirt(tmp_path: Path) -> None:
    # a valid --memory 4G gets past the table: the next thing that fails is the missing daemon
    res = _run(tmp_path, "--connect", _nowhere(tmp_path), "create", "--name", "vm", "--yes", "--memory", "4G")
    assert res.returncode == ConnectError.exit_code and "libvirt daemon is not running" in res.stderr


def test_the_same_value_in_a_config_file_names_file_line_and_key(tmp_path: Path) -> None:
    res = _run(
        tmp_path, "--connect", _nowhere(tmp_path), "create", "--name", "vm", "--yes", conf="memory=-5\n"
    )
    assert res.returncode == ConfigFileError.exit_code
    assert f"error: {tmp_path / 'global.conf'}:1:8: memory: -5 is out of range" in res.stderr
    assert "daemon" not in res.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["start", "vm"],
        ["stop", "vm"],
        ["pause", "vm"],
        ["destroy", "--force", "vm"],
        ["ip", "vm"],
        ["wait", "vm"],
        ["console", "--log", "vm"],
        ["ssh", "vm", "--", "true"],
        ["scp", "f", "vm:/tmp/"],
        ["create", "--name", "vm", "--yes"],
    ],
)
def test_connect_in_the_config_file_reaches_every_command(tmp_path: Path, argv: list[str]) -> None:
    uri = _nowhere(tmp_path)
    res = _run(tmp_path, *argv, conf=f"connect={uri}\n")
    assert res.returncode == ConnectError.exit_code, res.stderr
    assert f"libvirt daemon is not running for {uri}" in res.stderr


def test_help_shows_the_tables_ranges_and_units(tmp_path: Path) -> None:
    res = _run(tmp_path, "create", "--help")
    assert "--memory SIZE" in res.stdout and "256M..4T" in res.stdout and "default: 2G" in res.stdout
