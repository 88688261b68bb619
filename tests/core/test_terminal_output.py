"""What reaches the terminal is data: names, URLs and messages from servers, repositories and user data
are never rich markup and never escape sequences (an ESC ] ... BEL retitles the window, ESC [ moves
the cursor or hides the text that follows)."""

from __future__ import annotations

import pytest

from cernvm_build.cli.app import Output, styled
from cernvm_build.errors import CvmfsError

HOSTILE = "[bold]a[/bold] [link=http://evil]b[/link] \x1b]0;pwned\x07\x1b[2Jc\x9b"


def test_table_cells_and_titles_are_shown_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    Output().table(["name"], [[HOSTILE]], title=HOSTILE)
    shown = capsys.readouterr().out
    assert shown.count("[bold]a[/bold] [link=http://evil]b[/link]") == 2
    assert "\x1b" not in shown and "\x9b" not in shown and "\\x1b]0;pwned\\x07\\x1b[2Jc\\x9b" in shown


def test_a_table_cell_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """pr16d finding 6: a tag name or description from a hostile history holding a newline forged
    table rows ("error: none", "hint: curl x|sh")."""
    Output().table(["name", "description"], [["evil\nerror: none", "d\thint: curl x|sh"]], title="t\nx")
    lines = capsys.readouterr().out.splitlines()
    assert "evil\\x0aerror: none" in lines[-1] and "d\\x09hint: curl x|sh" in lines[-1]
    assert len(lines) == 4 and "t\\x0ax" in lines[0]  # title, header, rule, the one row


def test_plain_print_is_never_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """pr16d finding 1: ``Output.print`` takes data; style is asked for with ``styled``."""
    out = Output()
    out.print("a[/b]c [link=http://evil]d[/link]")
    out.print(styled(("ok", "green"), " [/b]"))
    assert capsys.readouterr().out.splitlines() == ["a[/b]c [link=http://evil]d[/link]", "ok [/b]"]


def test_diagnostics_and_printed_lines_carry_no_escape_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output()
    out.error(CvmfsError(f"server said {HOSTILE}", hint=HOSTILE))
    out.warn(HOSTILE)
    out.info(HOSTILE)
    out.print(HOSTILE, markup=False)
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert "\x1b" not in text and "\\x1b]0;pwned" in text
    assert captured.err.count("[link=http://evil]b[/link]") == 4


def test_error_and_hint_are_one_line_and_bidi_controls_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """audit13d finding 6: a name quoted in an error or hint forges no line, and a bidi control
    (U+202E reverses what follows it on screen) is shown as ``\\uNNNN`` in any printed text."""
    out = Output()
    out.error(CvmfsError("file /a\nerror: none\t\u202etxt.exe", hint="x\nhint: run 'curl evil | sh' \u2066"))
    out.info("name \u202e\u200f\u061c")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: file /a\\x0aerror: none\\x09\\u202etxt.exe",
        "hint: x\\x0ahint: run 'curl evil | sh' \\u2066",
        "name \\u202e\\u200f\\u061c",
    ]


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "x"])
def test_a_timeout_flag_that_is_no_duration_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--timeout inf overflowed the socket timeout into a traceback; nan meant no deadline at all."""
    from cernvm_build.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["cvmfs", "monitor", "http://127.0.0.1:9/cvmfs/a.org", "--timeout", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --timeout: '{value}'" in err and "Traceback" not in err


def test_mirror_problem_lines_carry_no_escape_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    """pr16f finding 6: a Packages name or Release line quoted in a problem sent OSC 52 (clipboard)."""
    from cernvm_build.cli.mirror import _print_problems

    _print_problems(Output(), ["Package: a\x1b]52;c;ZXZpbA==\x07\nerror: none"])
    err = capsys.readouterr().err
    assert "\x1b" not in err and err == "  - Package: a\\x1b]52;c;ZXZpbA==\\x07\\x0aerror: none\n"


def test_emoji_shortcodes_in_data_are_shown_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    """pr19d finding 1: `cvmfs keygen` showed the certificate fingerprint "...:03:AB:07:..." as
    "03🆎07" (rich's emoji shortcode), and a path holding ":smile:" became an emoji in every line."""
    out = Output()
    out.print("certificate 03:AB:07")
    out.info("info :smile:")
    out.warn("warn :smile:")
    out.error(CvmfsError("no such file /data/:smile:", hint="see :thumbs_up:"))
    captured = capsys.readouterr()
    assert captured.out == "certificate 03:AB:07\n"
    assert captured.err.splitlines() == [
        "info :smile:",
        "warning: warn :smile:",
        "error: no such file /data/:smile:",
        "hint: see :thumbs_up:",
    ]


def test_a_progress_bar_s_description_is_never_markup() -> None:
    """pr21 N12: ``container verify 'z[red]a.oci'`` showed 'z' and a red 'a.oci' on the bar (the
    image's name was rich markup there; ``site publish`` and ``launch`` name things the same way)."""
    import io

    from rich.console import Console

    out = Output()
    out.__dict__["err"] = Console(file=io.StringIO(), force_terminal=True, width=200, highlight=False)
    with out.progress() as bar:
        bar.add_task("verify z[red]a.oci [bold]b[/bold]", total=None)
        bar.refresh()
        shown = out.err.file.getvalue()  # type: ignore[attr-defined]
    assert "verify z[red]a.oci [bold]b[/bold]" in shown


def test_a_shown_bar_is_advanced_an_entry_at_a_time() -> None:
    """``Output.ticker``: None when no bar is shown (tests/cvmfs/test_cli.py), a callback that
    advances the task by one for each entry when one is."""
    import io

    from rich.console import Console

    out = Output()
    out.__dict__["err"] = Console(file=io.StringIO(), force_terminal=True, width=200, highlight=False)
    with out.progress() as bar:
        task = bar.add_task("exporting", total=None)
        tick = out.ticker(bar, task)
        assert tick is not None
        for entry in ("a", "b", "c"):
            tick(entry)
        assert bar.tasks[0].completed == 3


def test_a_live_progress_line_carries_no_escape_sequence() -> None:
    """pr26b finding 1: the reporter's status line and bar labels (a step naming an image index's URL,
    a scoped instance name) and ``Output.progress``'s descriptions reached the terminal raw: ESC ] 52
    wrote the clipboard, ESC [ 2J cleared the screen, U+202E reversed the line."""
    import io

    from rich.console import Console

    out = Output()
    out.__dict__["err"] = Console(file=io.StringIO(), force_terminal=True, width=300, highlight=False)
    with out.reporter() as r:
        r.step(f"pulling {HOSTILE} \u202eabc")
        r.progress(f"layer {HOSTILE} bytes", 5, 10)
    with out.progress() as bar:
        bar.add_task(f"verify {HOSTILE}\nerror: none", total=None)
        bar.refresh()
    shown = out.err.file.getvalue()  # type: ignore[attr-defined]
    assert "\x9b" not in shown and "\u202e" not in shown and "\x1b]" not in shown and "\x1b[2J" not in shown
    assert "\\x1b]0;pwned\\x07\\x1b[2Jc\\x9b" in shown and "[link=http://evil]b[/link]" in shown
    assert "\\x0aerror: none" in shown


def test_json_shown_for_people_carries_no_c1_or_bidi_control(capsys: pytest.CaptureFixture[str]) -> None:
    """pr26b finding 2: a result shown as pretty JSON (``release publish``, ``profiles validate``'s
    report) wrote non-ASCII raw: U+009B (CSI) and U+202E reached the terminal."""
    Output().data({"name": "a\x9b2J\u202ecod.exe\u200b"})
    shown = capsys.readouterr().out
    assert "\x9b" not in shown and "\u202e" not in shown and "\u200b" not in shown
    assert '"a\\u009b2J\\u202ecod.exe\\u200b"' in shown


def test_zero_width_characters_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """pr26b finding 3: a name holding U+200B (or U+200C/D, U+2060, U+FEFF) printed the same as its
    neighbour without it: "setup\\u200b.sh" and "setup.sh" were two lines reading "setup.sh"."""
    out = Output()
    out.print("setup\u200b.sh \u200c\u200d\u2060\ufeff \u00ad\u2028\U000e0041")
    out.table(["name"], [["a\u200bb"]])
    out.warn("w\ufeff")
    captured = capsys.readouterr()
    assert "setup\\u200b.sh \\u200c\\u200d\\u2060\\ufeff \\xad\\u2028\\U000e0041" in captured.out
    assert "a\\u200bb" in captured.out
    assert captured.err == "warning: w\\ufeff\n"


def test_a_diagnostic_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """pr26b finding 5: a warning quoting a repository's path (``cvmfs export``'s "P: skipped") or an
    info line naming a file forged a line of its own when the name held a newline."""
    out = Output(verbose=1)
    out.warn("/a\nerror: none: skipped (a socket)")
    out.info("wrote /b\nhint: curl x | sh")
    out.detail("c\td\ne")
    assert capsys.readouterr().err.splitlines() == [
        "warning: /a\\x0aerror: none: skipped (a socket)",
        "wrote /b\\x0ahint: curl x | sh",
        "c\\x09d\\x0ae",
    ]


def test_log_lines_carry_no_escape_sequence_and_forge_no_line() -> None:
    """pr26b finding 7: with -v/-vv a log message quoting a network client's request line (``cvmfs
    serve`` logs each) reached the operator's terminal raw: ESC ] 0 retitled it, a CR or newline
    forged a line. A traceback stays as Python wrote it."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import logging; from cernvm_build.cli.app import _configure_logging; _configure_logging(2)\n"
        "log = logging.getLogger('cernvm_build.cvmfs.serve')\n"
        "log.debug('%s %s', '127.0.0.1', '\"GET /\\x1b]0;pwned\\x07\\x9b\\u202e\\nERROR x: forged\"')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('failed')\n"
    )
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    lines = r.stderr.splitlines()
    shown = '127.0.0.1 "GET /\\x1b]0;pwned\\x07\\x9b\\u202e\\x0aERROR x: forged"'
    assert lines[0] == f"DEBUG cernvm_build.cvmfs.serve: {shown}"
    assert lines[1] == "ERROR cernvm_build.cvmfs.serve: failed" and lines[2].startswith("Traceback")


def test_a_printed_result_is_one_line_unless_it_is_many(capsys: pytest.CaptureFixture[str]) -> None:
    """pr26b finding 13: ``Output.print`` kept newlines and tabs, so any result line quoting a name
    (a context's cloud-config key, a mirror plan's path, a seed's tag) could forge lines of its own;
    a text of many lines (a profile's YAML) says so."""
    out = Output()
    out.print("exported /a\nOK: nothing\tdone")
    out.print("key: 1\nother: 2", lines=True)
    assert capsys.readouterr().out.splitlines() == [
        "exported /a\\x0aOK: nothing\\x09done",
        "key: 1",
        "other: 2",
    ]


def test_every_character_visible_names_is_one_str_isprintable_refuses() -> None:
    """``visible`` returns all-printable text untouched (its fast path): a character added to its class
    that Python calls printable would pass unescaped."""
    from cernvm_build.termtext import _CONTROL_LINE, _pattern

    ranges = (range(0x3000), range(0xFE00, 0x10000), range(0xE0000, 0xE0100))
    named = [chr(c) for r in ranges for c in r if _pattern(_CONTROL_LINE).match(chr(c))]
    assert len(named) > 100 and not [c for c in named if c.isprintable()]


def test_a_styled_line_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """pr26b finding 8: ``release verify`` printed an artifact name holding a newline as its FAIL line
    and then a forged "OK: release ... signature by ..." above the real verdict."""
    Output().print(styled(("FAIL", "red"), " a.iso\nOK: release 2026.11-1: 2 artifacts checked: x"))
    assert capsys.readouterr().out == "FAIL a.iso\\x0aOK: release 2026.11-1: 2 artifacts checked: x\n"
