"""The mount's command line (``mount.parse_args``: its own small parser, not argparse, whose import and
per-option help formatters were ~15 % of the initrd mount's CPU before it serves)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.cvmfs import mount
from cernvm_build.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--server", "http://s/cvmfs/x.test", "--public-key", "/k"]


def test_the_initrd_command_line_is_read_with_every_option_kind() -> None:
    args = mount.parse_args(
        [*BASE, "--fqrn=x.test", "--server", "/stratum", "--cache", "/c", "--quota-limit", "100",
         "--timeout", "2.5", "--retries=0", "--snapshot-file", "/s", "--no-magic-xattrs",
         "--prefetch-in-order", "--boot-list", "/b", "/mnt"]
    )  # fmt: skip
    assert args is not None
    assert (args.fqrn, args.server, args.public_key) == (
        "x.test",
        ["http://s/cvmfs/x.test", "/stratum"],
        ["/k"],
    )
    assert (args.cache, args.snapshot_file, args.boot_list) == (Path("/c"), Path("/s"), Path("/b"))
    assert (args.quota_limit, args.timeout, args.retries, args.mountpoint) == (100, 2.5, 0, "/mnt")
    assert args.no_magic_xattrs and args.prefetch_in_order and not args.foreground and not args.debug
    assert (args.tag, args.date, args.root_hash, args.proxy, args.log, args.stats) == (None,) * 6


def test_defaults_and_help() -> None:
    args = mount.parse_args([*BASE, "/mnt"])
    assert args is not None and (args.timeout, args.retries, args.cache, args.fqrn) == (10.0, 2, None, None)
    assert mount.parse_args([*BASE, "--help", "/mnt"]) is None
    assert all(name in mount.help_text() for name in mount.OPTIONS)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([*BASE, "--tag", "t", "--date", "2026-01-01T00:00:00Z", "/m"], "exclude each other"),
        ([*BASE, "--bogus", "/m"], "unknown option --bogus"),
        ([*BASE, "--retries", "two", "/m"], "--retries: 'two' is not a number"),
        ([*BASE, "--foreground=yes", "/m"], "--foreground takes no value"),
        ([*BASE, "/m", "--cache"], "--cache needs a value (DIR)"),
        ([*BASE], "one MOUNTPOINT expected, got 0"),
        ([*BASE, "/m", "/n"], "one MOUNTPOINT expected, got 2"),
        (["--public-key", "/k", "/m"], "--server is required"),
    ],
)
def test_bad_command_lines_are_one_usage_error(argv: list[str], says: str) -> None:
    with pytest.raises(UsageError, match=says.replace("(", r"\(").replace(")", r"\)")):
        mount.parse_args(argv)


def test_a_bad_command_line_exits_2_with_one_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--retries", "x", "/m"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "error: --retries" in r.stderr, r.stderr


def test_an_error_quoting_a_server_s_answer_is_one_visible_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr26b finding 4: the mount's error line (the initrd's console, ``cvmfs mount``'s stderr) quoted
    a server's status reason raw: ESC ] 0 retitled the terminal, C1 CSI, a line of its own."""
    from http.server import BaseHTTPRequestHandler

    from tests.support.hostile import http_server

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503, "\x1b]0;pwned\x07\x1b[2J\x9b31m")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    key = ROOT / "tests/cvmfs/data/fixture.cernvm.test/keys/fixture.cernvm.test.pub"
    with http_server(Handler) as url:
        argv = ["--server", f"{url}/cvmfs/x.test", "--public-key", str(key), "--retries", "0"]
        code = mount.main([*argv, "--foreground", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "\x1b" not in err and "\x9b" not in err, err
    assert "HTTP 503 \\x1b]0;pwned\\x07\\x1b[2J\\x9b31m" in err, err


def test_the_pin_names_any_tag_on_one_visible_line_within_its_size(tmp_path: Path) -> None:
    """pr26b finding 9: the pin carried the history's tag name raw: its ESC reached the console in the
    init's "pinned snapshot ... tag ..." line, and a 600-byte tag made the pin longer than PIN_MAX,
    so the next boot ignored it and mounted the newest revision instead of the pinned one."""
    from types import SimpleNamespace

    pin = tmp_path / "cvmfs_snapshot"
    repo = SimpleNamespace(root_hash="ab" * 20, tag="\x1b]0;pwned\x07\nx" + "é" * 600)
    mount._after_mount(SimpleNamespace(snapshot_file=pin), repo)  # type: ignore[arg-type]
    lines = pin.read_text().split("\n")
    assert lines[0] == "ab" * 20 and lines[1].startswith("\\x1b]0;pwned\\x07\\x0ax") and lines[2:] == [""]
    assert mount.read_pin(pin) == ("ab" * 20, None)


def test_the_mounts_warnings_are_visible_lines_in_the_inits_log_and_on_the_wire(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The pin file's note quotes its path: the initrd's entry point (``_say``) printed it raw to the
    console, and the daemon's report (``wire``) split a path holding a newline into a line of its own;
    the tag it sent was ``visible``'s form, which the daemon's ``--json`` then held instead of the name."""
    mounted = mount.Mounted("x.test", 2, "ab" * 20, "t\x1b]0;pwned\x07\\x1b\udcff", "/m", "/c\tx", 1)
    mounted.warnings.append(mount._pin_ignored(Path("/p\x1b[2J\nnote\tforged"), "empty"))
    mount._say(mounted)
    out, err = capsys.readouterr()
    assert out.endswith("tag t\\x1b]0;pwned\\x07\\x1b\\xff\n"), out
    assert err.count("\n") == 1 and "\x1b" not in err, err
    wire = mounted.wire()
    assert wire.isascii() and wire.count("\n") == 1
    back = mount._from_wire(wire, "/m", 1)
    # read back as it was: the daemon's --json holds the tag itself, as the foreground's does
    assert back is not None and back.to_json() == mounted.to_json()
    assert (back.notes, back.warnings) == ([], mounted.warnings)
