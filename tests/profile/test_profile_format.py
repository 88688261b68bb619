"""Profile format versions: format 1 by default, upgrades keep origins, aliases warn, newer is refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.profile import model, reference, schema, settings, upgrade
from cernvm_build.profile.yamlnodes import Node, load_file

Write = Callable[[str, str], Path]


def test_every_shipped_profile_says_its_format() -> None:
    for name in profile.list_profiles(include_abstract=True):
        assert profile.own_settings(name).get("format") == settings.FORMAT, name


def test_a_file_without_format_is_read_as_format_1(write: Write) -> None:
    path = write("old", "extends: el9\n")
    assert upgrade.file_format(load_file(path)) == 1
    assert profile.check(path).errors == []


def test_a_newer_format_is_a_clear_error_naming_the_line(write: Write) -> None:
    path = write("future", "extends: el9\nformat: 99\n")
    with pytest.raises(profile.ProfileError) as e:
        profile.load(path)
    assert str(e.value).endswith(
        "future.yaml:2:9: format: written for profile format 99 by a newer cernvm-build "
        "(this one reads formats 1..1)"
    )
    assert e.value.hint is not None and "upgrade cernvm-build" in e.value.hint


def test_a_format_that_is_no_version_is_reported_by_the_table(write: Write) -> None:
    for text, message in (("format: 0\n", "0 is out of range"), ("format: one\n", "expected an integer")):
        errors = profile.check(write("odd", "extends: el9\n" + text)).errors
        assert errors and message in str(errors[0]) and "format" in str(errors[0])


def _rename_proxy(tree: Node) -> Node:
    return upgrade.rename(tree, "cvmfs.proxy", "cvmfs.http_proxy")


def test_an_upgrade_step_renames_keys_and_keeps_where_they_were_written(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a pretend format 2 in which cvmfs.proxy became cvmfs.http_proxy: files of format 1 still load
    monkeypatch.setattr(upgrade, "FORMAT", 2)
    monkeypatch.setattr(upgrade, "STEPS", {1: _rename_proxy})
    path = write("v1", "extends: el9\ncvmfs:\n  proxy: http://squid.example:3128\n")
    outcome = profile.check(path)
    assert outcome.errors == []
    assert outcome.profile is not None and outcome.profile.cvmfs.http_proxy == "http://squid.example:3128"
    assert outcome.origins["cvmfs.http_proxy"].endswith("v1.yaml:3:10")


def test_a_renamed_key_is_read_with_a_warning(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upgrade, "ALIASES", {"cvmfs.proxy": "cvmfs.http_proxy"})
    path = write("alias", "extends: el9\ncvmfs:\n  proxy: DIRECT\n")
    outcome = profile.check(path)
    assert outcome.errors == [] and outcome.profile is not None
    [warning] = outcome.warnings
    assert str(warning).endswith(
        "alias.yaml:3:3: cvmfs.proxy: 'cvmfs.proxy' is deprecated: it was renamed to 'cvmfs.http_proxy'"
    )
    both = write("both", "extends: el9\ncvmfs:\n  proxy: DIRECT\n  http_proxy: DIRECT\n")
    assert "both 'cvmfs.proxy' (deprecated) and 'cvmfs.http_proxy' are set" in str(
        profile.check(both).errors[0]
    )


def test_the_model_and_the_table_name_the_same_settings() -> None:
    table_keys = {s.key for s in settings.SETTINGS} - {"abstract", "format"}
    model_keys = set(model.leaf_keys(profile.Profile)) - {"source", "inputs"}
    assert table_keys == model_keys


def test_aarch64_is_refused_with_the_reason(write: Write) -> None:
    errors = profile.check(write("arm", "extends: el9\nos: {arch: aarch64}\n")).errors
    assert "os.arch: 'aarch64' is not supported: the μCernVM initrd" in str(errors[0])
    assert errors[0].hint is not None and "x86_64" in errors[0].hint


def test_the_cli_refuses_a_newer_format_in_one_line(write: Write) -> None:
    path = write("future", "extends: el9\nformat: 2\n")
    res = subprocess.run(
        [sys.executable, "-m", "cernvm_build.cli.main", "profiles", "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 3 and "Traceback" not in res.stderr
    assert "format: written for profile format 2 by a newer cernvm-build" in res.stderr


def test_load_hands_warnings_to_the_caller(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upgrade, "ALIASES", {"cvmfs.proxy": "cvmfs.http_proxy"})
    seen: list[profile.ProfileError] = []
    p = profile.load(write("alias", "extends: el9\ncvmfs:\n  proxy: DIRECT\n"), warn=seen.append)
    assert p.cvmfs.http_proxy == "DIRECT" and [w.message for w in seen] == [
        "'cvmfs.proxy' is deprecated: it was renamed to 'cvmfs.http_proxy'"
    ]


def test_the_schema_and_the_reference_describe_the_format_key() -> None:
    from_schema = schema.schema()["properties"]["format"]
    assert from_schema["minimum"] == 1 and from_schema["maximum"] == settings.FORMAT
    text = reference.markdown()
    assert "## Format versions" in text and "| `format` | integer | `1` |" in text
