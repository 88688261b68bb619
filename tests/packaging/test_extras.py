"""Extras: the table the CLI uses agrees with pyproject.toml, and a missing extra is named in one line."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from cernvm_build.cli import app, extras
from cernvm_build.cli.main import AREA_EXTRAS, launch_main, main
from cernvm_build.errors import MissingExtraError

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _distributions(modules: tuple[str, ...]) -> set[str]:
    owners = metadata.packages_distributions()
    return {d.lower().replace("_", "-") for m in modules for d in owners[m]}


@pytest.mark.parametrize("extra", sorted(extras.EXTRAS))
def test_extra_table_matches_pyproject(extra: str) -> None:
    declared = {_name(r) for r in PROJECT["optional-dependencies"][extra]}
    assert _distributions(extras.EXTRAS[extra]) == declared


def test_core_has_no_extra_and_all_has_every_extra() -> None:
    core = {_name(r) for r in PROJECT["dependencies"]}
    for extra, modules in extras.EXTRAS.items():
        assert not core & _distributions(modules), f"'{extra}' modules are core dependencies"
    assert core == {"jinja2", "pyyaml", "rich", "cryptography", "numpy", "mfusepy"}
    assert "libvirt-python" not in core  # needs gcc + libvirt-dev: never in the core
    (everything,) = PROJECT["optional-dependencies"]["all"]
    assert everything == f"cernvm-build[{','.join(sorted(extras.EXTRAS))}]"


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make modules look uninstalled: `import m` fails and find_spec(m) is None."""
    for m in modules:
        for loaded in [k for k in sys.modules if k == m or k.startswith(m + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, m, None)


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


HINT_MIRROR = "error: `cernvm-build mirror` needs the 'mirror' extra: pip install 'cernvm-build[mirror]'"


@pytest.mark.parametrize(
    "argv", [["mirror", "--help"], ["mirror", "yum", "src", "s3://b/p", "--dry-run"], ["mirror"]]
)
def test_command_of_a_missing_extra_names_it(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, "boto3")
    assert main(argv) == MissingExtraError.exit_code == 4
    assert _one_error_line(capsys) == HINT_MIRROR


def test_site_without_its_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _hide(monkeypatch, "markdown_it")
    assert main(["site", "build", "--out", "x"]) == 4
    assert _one_error_line(capsys) == (
        "error: `cernvm-build site` needs the 'site' extra: pip install 'cernvm-build[site]'"
    )


def test_a_missing_extra_under_json_is_a_json_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, "markdown_it")
    assert main(["site", "build", "--json"]) == 4
    answer = json.loads(capsys.readouterr().out)  # stdout was empty (pr24b finding 4)
    assert answer["exit_code"] == 4 and "'site' extra" in answer["error"]


def test_help_lists_what_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, "boto3")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert re.search(r"mirror +\(not installed: pip install 'cernvm-build\[mirror\]'\)", out)
    assert re.search(r"site +(?!\(not installed)", out)  # the site extra is there


def test_core_commands_work_without_any_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, *{m for modules in extras.EXTRAS.values() for m in modules})
    assert main(["profiles", "list", "--json"]) == 0
    assert "el9" in capsys.readouterr().out


def test_cernvm_launch_without_its_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, "libvirt")
    assert launch_main(["list"]) == 4
    assert _one_error_line(capsys) == (
        "error: `cernvm-launch` needs the 'launch' extra: pip install 'cernvm-build[launch]'"
    )


def test_cernvm_launch_version_without_its_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # it said "needs the 'launch' extra" and exited 4 (pr24b finding 12)
    from cernvm_build import __version__

    _hide(monkeypatch, "libvirt")
    assert launch_main(["--version"]) == 0
    assert capsys.readouterr().out == f"cernvm-launch {__version__}\n"


def test_a_command_that_needs_an_extra_midway_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    """A handler that imports an area it needs (release publish -> mirror) names that extra."""

    def handler(args: argparse.Namespace, out: app.Output) -> int:
        raise ModuleNotFoundError("No module named 'botocore'", name="botocore.exceptions")

    parser = app.ArgumentParser(prog="cernvm-build")
    group = app.subparser(parser.add_subparsers(), "release", help="r")
    app.subparser(group.add_subparsers(), "publish", help="p", handler=handler)
    assert app.run(parser, ["release", "publish"]) == 4
    assert _one_error_line(capsys) == (
        "error: `cernvm-build release publish` needs the 'mirror' extra: pip install 'cernvm-build[mirror]'"
    )


def test_requests_is_named_by_the_area_that_needs_it() -> None:
    err = ModuleNotFoundError("No module named 'requests'", name="requests")
    found = extras.from_import_error(err, "cernvm-build site check", prefer="site")
    assert found is not None and "'site' extra" in str(found)


def test_other_import_errors_are_bugs_not_extras(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace, out: app.Output) -> int:
        raise ModuleNotFoundError("No module named 'cernvm_build.nope'", name="cernvm_build.nope")

    parser = app.ArgumentParser(prog="t")
    app.subparser(parser.add_subparsers(), "go", help="go", handler=handler)
    with pytest.raises(ModuleNotFoundError):
        app.run(parser, ["go"])


def test_demo_without_launch_names_the_launch_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo boots through the launch library: without libvirt it says so before any work.

    (`demo --no-boot` boots nothing and so needs no 'launch' extra.)
    """
    _hide(monkeypatch, "libvirt")
    for loaded in [k for k in sys.modules if k.startswith(("cernvm_build.launch", "cernvm_build.demo.flow"))]:
        monkeypatch.delitem(sys.modules, loaded)  # imported afresh, without libvirt
    assert main(["demo", "--out", "/nonexistent/never-written"]) == 4
    assert _one_error_line(capsys) == (
        "error: `cernvm-build demo` needs the 'launch' extra: pip install 'cernvm-build[launch]'"
    )


def test_a_command_module_importing_an_extra_at_the_top(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """If an area's command module itself cannot be imported for an extra, only that area is affected."""
    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> object:
        if name == "cernvm_build.cli.release":
            raise ModuleNotFoundError("No module named 'botocore'", name="botocore")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)
    assert main(["release", "2026.11-1"]) == 4
    assert _one_error_line(capsys) == (
        "error: `cernvm-build release` needs the 'mirror' extra: pip install 'cernvm-build[mirror]'"
    )
    assert main(["profiles", "list", "--json"]) == 0


def test_images_build_without_the_launch_extra() -> None:
    """``image`` (and ``image seed``'s ``--disk``, from launch's settings table) needs no libvirt nor
    paramiko: in a fresh interpreter with the 'launch' extra's modules hidden, cli/image.py imports and
    builds its parser, while a launch call still names what is missing."""
    assert "image" not in AREA_EXTRAS
    hide = "".join(f"sys.modules[{m!r}] = None; " for m in extras.EXTRAS["launch"])
    code = (
        f"import sys; {hide}import argparse, cernvm_build.cli.image as i; "
        "p = argparse.ArgumentParser(); i.register(p.add_subparsers()); "
        "import cernvm_build.launch as l\n"
        "try:\n    l.connect\nexcept ImportError as e:\n    print('missing', e.name)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["missing", "libvirt"]


@pytest.mark.parametrize(("area", "extra"), sorted(AREA_EXTRAS.items()))
def test_help_marks_an_area_without_its_extra(
    area: str, extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, extras.EXTRAS[extra][0])
    with pytest.raises(SystemExit):
        main(["--help"])
    line = next(t for t in capsys.readouterr().out.splitlines() if t.strip().startswith(area + " "))
    assert f"(not installed: pip install 'cernvm-build[{extra}]')" in line
