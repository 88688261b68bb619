"""The demo command's flags are checked before any work starts (one line, usage exit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def test_plan_shows_the_profile_the_run_uses(capsys: pytest.CaptureFixture[str]) -> None:
    """``demo --plan --os debian12`` showed the demo OS's profile, and ``--port`` was not in its
    servers; a ``--profile`` given to the run was silently not used (pr19b finding 8)."""
    assert main(["demo", "--plan", "--os", "debian12", "--port", "8123", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile"]["name"] == "debian12" and data["profile"]["os"]["family"] == "debian"
    assert data["profile"]["cvmfs"]["servers"] == ["http://127.0.0.1:8123/cvmfs/@fqrn@"]
    # pr19d finding 14: the stage-by-stage commands said port 8000 (no --server)
    assert data["commands"] == [
        f"cernvm-build {stage} debian12 --server http://127.0.0.1:8123/cvmfs/@fqrn@"
        for stage in ("image", "container")
    ]
    assert main(["demo", "--plan", "--profile", "el9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"]["name"] == "el9"
    assert main(["demo", "--no-boot", "--profile", "debian12"]) == 2
    err = capsys.readouterr().err
    assert "--profile only chooses the profile --plan shows" in err and "Traceback" not in err


def test_the_plan_for_people_shows_each_step_on_two_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """rv25b: ``Output.print`` is one line since pr26b 13 (a newline in it is shown as \\x0a), and a
    plan step's action and its output were one print: ``  image  ...\\x0a   -> out/...``."""
    assert main(["demo", "--plan", "--os", "debian12"]) == 0
    out = capsys.readouterr().out
    assert "\\x0a" not in out, out
    assert any(line.strip().startswith("-> ") for line in out.splitlines()), out


@pytest.mark.parametrize("version", ["../../victim", "/abs/victim", "2026.13-1", "latest"])
def test_a_version_that_is_no_release_version_is_refused_before_any_work(
    version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``demo --version ../../victim``: the release folder under --out is removed when it cannot be
    reused, and that path named a folder outside it (pr19b finding 10). Refused before publishing."""
    from cernvm_build.demo import repository

    def no_work(*_: object, **__: object) -> None:
        raise AssertionError("the demo started working")

    monkeypatch.setattr(repository, "publish_demo", no_work)
    assert main(["demo", "--no-boot", "--out", str(tmp_path / "out"), "--version", version]) != 0
    err = capsys.readouterr().err
    assert f"--version: release version '{version}'" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("saved", "kept"),
    [
        ("[1, 2]", {}),
        ('{"total": "12.5", "publish demo OS": true, "build release": 3}', {"build release": 3.0}),
        ("not json", {}),
    ],
)
def test_a_damaged_record_of_the_last_run_is_no_timing(
    saved: str, kept: dict[str, float], tmp_path: Path
) -> None:
    """The last run's timings, damaged: a list was an AttributeError, a text a ValueError (``:.1f``)
    after a whole successful run (pr19b finding 17)."""
    from cernvm_build.demo import flow

    state = tmp_path / "last-run.json"
    state.write_text(saved)
    assert flow.previous_timings(state) == kept
    run = flow.DemoRun(previous=flow.previous_timings(state))
    assert run.to_json()["previous_total_seconds"] is None


def test_the_release_is_cut_from_the_snapshot_the_run_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo and debian12 OSes are published into one repository, and the demo profile reads
    'trunk': after another publish had moved trunk, a run whose own publish had nothing new to add
    built its release from that other tree (a ``make run`` after ``demo --os debian12`` booted Debian).
    The release is now cut from the tag the run published."""
    from cernvm_build.demo import flow, repository
    from cernvm_build.release import build as release_build

    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    first = repository.publish_demo()
    other = repository.publish_demo(tag="other", extra_files={"/etc/other": "another tree\n"})
    assert other.revision > first.revision and other.root_hash != first.root_hash  # trunk moved

    class Built(Exception):
        pass

    def capture(options: release_build.ReleaseOptions, context: object) -> None:
        raise Built(options.profiles[0])

    monkeypatch.setattr(release_build, "build_release", capture)
    with pytest.raises(Built) as built:
        flow.run_demo(flow.DemoOptions(out=tmp_path / "out", boot=False), lambda *_: None)
    assert built.value.args[0].cvmfs.snapshot.tag == first.tag == "demo-1"


def test_the_default_release_version_is_no_clock_reading(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --version the demo named its release after the clock's month: two runs either side
    of a month boundary gave other file names and bytes (pr26a nit 17). It is the month of the demo
    OS's fixed date now, whatever the clock says; --version still overrides it."""
    import time

    from cernvm_build.demo import flow
    from cernvm_build.demo.os_tree import DEFAULT_EPOCH

    monkeypatch.setattr(time, "time", lambda: 1956528000.0)  # 2032-01-01
    assert flow.release_version("") == time.strftime("%Y.%m-1", time.gmtime(DEFAULT_EPOCH))
    assert flow.release_version("2024.05-3") == "2024.05-3"
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert flow.DEFAULT_VERSION in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("quiet", "shown"), [([], True), (["-q"], True), (["-qq"], False)])
def test_a_release_warning_of_the_demo_is_kept_by_q(
    quiet: list[str],
    shown: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-q hides steps and notes, never a warning (QUIET_HELP): the demo told its release's warnings as
    steps (``LineReporter(say)`` with ``Output.info``), so -q hid them, and they read as notes."""
    from cernvm_build.errors import CernVMError
    from cernvm_build.release import build as release_build

    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))

    def warn_and_stop(options: release_build.ReleaseOptions, context: Any) -> None:
        context.reporter.warn("a warning of the release build")
        raise CernVMError("stopped here by the test")

    monkeypatch.setattr(release_build, "build_release", warn_and_stop)
    assert main(["demo", "--no-boot", "--out", str(tmp_path / "out"), *quiet]) == 1
    err = capsys.readouterr().err
    assert ("warning: a warning of the release build" in err) == shown, err
