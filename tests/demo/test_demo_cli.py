"""The demo command's flags are checked before any work starts (one line, usage exit)."""

from __future__ import annotations

import pytest

from cernvm_build.cli.main import main


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--boot-timeout", "0", "expected seconds"),
        ("--boot-timeout", "nan", "expected seconds"),
        ("--boot-timeout", "soon", "is not a number of seconds"),
        ("--port", "70000", "expected a port from 1 to 65535"),
        ("--port", "0", "expected a port from 1 to 65535"),
    ],
)
def test_bad_demo_flags_are_one_usage_line(
    flag: str, value: str, said: str, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--no-boot", "--out", f"{tmp_path}/out", flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
