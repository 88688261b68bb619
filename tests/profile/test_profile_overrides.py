"""Command-line overrides: one more layer over the profile, converted and checked like the files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.demo.flow import demo_profile

GOOD = "http://127.0.0.1:9000/cvmfs/@fqrn@"


def _server(*urls: str) -> list[profile.Override]:
    return [profile.Override("cvmfs.servers", list(urls), "--server")]


def test_an_override_replaces_the_profiles_value_and_says_where_it_came_from() -> None:
    p = profile.load("demo", overrides=_server(GOOD))
    assert p.cvmfs.servers == [GOOD]
    where = profile.origins("demo", overrides=_server(GOOD))
    assert where["cvmfs.servers"] == "command line (--server)"
    assert "demo.yaml:" in where["cvmfs.repository"]


def test_a_bad_server_is_refused_by_the_profiles_own_checks_naming_the_flag() -> None:
    [error] = profile.check("demo", overrides=_server("not-a-url")).errors
    assert str(error) == "--server: cvmfs.servers: not an http(s) URL: 'not-a-url'"
    # the check across settings too: a server URL must name the repository
    [error] = profile.check("demo", overrides=_server("http://127.0.0.1:9000/cvmfs")).errors
    assert str(error) == "--server: cvmfs.servers: 'http://127.0.0.1:9000/cvmfs' names no repository"


def test_the_same_check_refuses_the_same_url_written_in_a_profile(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("extends: demo\ncvmfs:\n  servers: !replace [not-a-url]\n")
    [error] = profile.check(path).errors
    assert str(error).endswith("mine.yaml:3:22: cvmfs.servers: not an http(s) URL: 'not-a-url'")


def test_the_demo_serves_on_its_port_through_the_override_layer() -> None:
    assert demo_profile(9123).cvmfs.servers == ["http://127.0.0.1:9123/cvmfs/@fqrn@"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cernvm_build.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(Path(__file__).parents[2]), "PATH": "/usr/bin:/bin", "COLUMNS": "300"},
        timeout=120,
    )


def test_image_with_a_bad_server_fails_in_one_line_before_building(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _cli("image", "demo", "--server", "not-a-url", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0] == "error: --server: cvmfs.servers: not an http(s) URL: 'not-a-url'"
    assert lines[1].startswith("hint: ") and len(lines) == 2 and "Traceback" not in res.stderr
    assert not out.exists()


def test_profiles_show_origins_says_command_line(tmp_path: Path) -> None:
    res = _cli("profiles", "show", "demo", "--origins", "--json", "--server", GOOD, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = {r["key"]: r for r in json.loads(res.stdout)}
    assert rows["cvmfs.servers"]["from"] == "command line (--server)"
    assert rows["cvmfs.servers"]["value"] == [GOOD]
    assert rows["cvmfs.repository"]["from"] != "command line (--server)"


def test_the_override_flags_come_from_the_table(tmp_path: Path) -> None:
    res = _cli("image", "build", "--help", cwd=tmp_path)
    assert "--server URL" in res.stdout and "Stratum-1 base URLs" in res.stdout and "repeatable" in res.stdout


def test_an_https_server_is_refused_because_the_initrd_has_no_ssl(tmp_path: Path) -> None:
    [error] = profile.check("demo", overrides=_server("https://127.0.0.1:9000/cvmfs/@fqrn@")).errors
    assert str(error) == (
        "--server: cvmfs.servers: 'https://127.0.0.1:9000/cvmfs/@fqrn@': "
        "the μCernVM bootloader cannot fetch over https"
    )
    assert error.hint is not None and "http://" in error.hint
    path = tmp_path / "mine.yaml"
    path.write_text("extends: demo\ncvmfs:\n  servers: !replace [https://s1.example.org/cvmfs/@fqrn@]\n")
    [error] = profile.check(path).errors
    assert "mine.yaml:3:" in str(error) and "cannot fetch over https" in str(error)


@pytest.mark.parametrize(
    ("body", "key", "column"),
    [
        ('cvmfs:\n  servers: !replace ["http://x/cvmfs/@fqrn@\'$(reboot)"]\n', "cvmfs.servers", 22),
        ("cvmfs:\n  servers: !replace ['http://[::1]:8000/cvmfs/@fqrn@']\n", "cvmfs.servers", 22),
        ('bootloader:\n  cmdline: ["a\\u0000b"]\n', "bootloader.cmdline", 13),
    ],
    ids=["quote-and-shell", "ipv6", "nul"],
)
def test_validate_refuses_what_the_kernel_command_line_cannot_carry(
    tmp_path: Path, body: str, key: str, column: int
) -> None:
    """``profiles validate`` applies the build's own character check to each setting that becomes a
    kernel argument, at its position (the build refused these at its end, naming the wrong key)."""
    path = tmp_path / "mine.yaml"
    path.write_text("extends: demo\n" + body)
    [error] = profile.check(path).errors
    assert f"mine.yaml:3:{column}: {key}: " in str(error)
    assert "has characters a kernel command line cannot carry" in str(error) and error.hint


def test_the_build_names_the_setting_an_argument_comes_from() -> None:
    """The build's own check (a backstop) names the setting, not always bootloader.cmdline."""
    import dataclasses

    from cernvm_build.errors import BuildError
    from cernvm_build.image import build

    p = profile.load("demo")
    bad = dataclasses.replace(
        p, cvmfs=dataclasses.replace(p.cvmfs, servers=["http://[::1]:8000/cvmfs/@fqrn@"])
    )
    with pytest.raises(BuildError) as err:
        build.kernel_cmdline(bad)
    assert err.value.where.endswith(": cvmfs.servers") and "IPv6" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("bootloader: {release: 10000}\n", "bootloader.release: 10000 is out of range"),
        ("bootloader: {branch: " + "b" * 33 + "}\n", "bootloader.branch: invalid value"),
    ],
)
def test_the_parts_of_image_names_are_bounded(tmp_path: Path, body: str, message: str) -> None:
    """The release and branch are in every image's file name: a 300-digit release validated and the
    build failed at its end (ENAMETOOLONG)."""
    path = tmp_path / "mine.yaml"
    path.write_text("extends: demo\n" + body)
    [error] = profile.check(path).errors
    assert message in str(error)
