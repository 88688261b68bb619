"""Configuration files and precedence, as the original cernvm-launch."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.errors import ConfigFileError
from cernvm_build.launch import config


def test_defaults_are_the_originals(tmp_path: Path) -> None:
    s = config.resolve(global_file=tmp_path / "missing.conf")
    assert (s.cpus, s.memory, s.disk, s.api_port, s.cernvm_version) == (1, 2048, 20000, 22, "latest")


def test_precedence_cli_over_create_file_over_global(tmp_path: Path) -> None:
    glob = tmp_path / "global.conf"
    glob.write_text("# global\ncpus=2\nmemory=1024\ndisk=5000\n")
    per = tmp_path / "vm.conf"
    per.write_text("memory = 3000\n\nsharedFolder=/srv/data\n")
    s = config.resolve({"disk": 7000, "cpus": None}, per, glob)
    assert s.cpus == 2  # global (CLI gave None)
    assert s.memory == 3000  # per-create file beats global
    assert s.disk == 7000  # command line beats both
    assert s.shared_folder == Path("/srv/data")


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("colour=blue", "conf:2:1: colour: unknown key 'colour'"),
        ("cpus=many", "conf:2:6: cpus: bad value 'many': must be a whole number"),
        ("memory=10", "conf:2:8: memory: bad value '10': must be between 64"),
        ("sharedFolder=relative/path", "sharedFolder: bad value 'relative/path': must be an absolute path"),
        ("just text", "conf:2:1: expected key=value"),
    ],
)
def test_bad_files_name_file_line_and_key(tmp_path: Path, line: str, expect: str) -> None:
    conf = tmp_path / "conf"
    conf.write_text(f"cpus=1\n{line}\n")
    with pytest.raises(ConfigFileError) as e:
        config.parse_conf(conf)
    assert expect.replace("conf:", f"{conf}:") in str(e.value) or expect in str(e.value)


def test_missing_per_create_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not found"):
        config.resolve(create_file=tmp_path / "nope.conf", global_file=tmp_path / "g")
