"""Every ``-j/--jobs`` flag takes 1 to ``cli.app.MAX_JOBS`` (sr18 finding 7: ``cvmfs monitor -j -3`` ran,
other commands clamped or failed deep inside): one usage line naming the flag, exit 2."""

from __future__ import annotations

import pytest

from cernvm_build.cli.app import MAX_JOBS
from cernvm_build.cli.main import main

COMMANDS = [
    ["cvmfs", "export", "SRC", "DEST", "-j"],
    ["cvmfs", "monitor", "SRC", "-j"],
    ["cvmfs", "replicate", "SRC", "DEST", "-j"],
    # (a folder that is there: what a command line names to read is checked as it is parsed)
    ["mirror", "yum", ".", "s3://b/p", "--jobs"],
    ["mirror", "sync", ".", "s3://b/p", "--jobs"],
    ["release", "build", "2026.11-1", "--jobs"],
    ["site", "build", "--jobs"],
]


@pytest.mark.parametrize("value", ["0", "-3", str(MAX_JOBS + 1), "100000", "two"])
@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_a_jobs_count_out_of_range_is_one_usage_line(
    argv: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*argv, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    named = (f"error: argument -j/--jobs: {value!r}", f"error: argument --jobs: {value!r}")
    assert len(errors) == 1 and errors[0].startswith(named), err
    assert "Traceback" not in err
