"""``cernvm-build profiles ...`` and ``cernvm-build demo`` as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from cernvm_build import profile
from cernvm_build.cli.main import main
from cernvm_build.paths import data_dir
from cernvm_build.profile.yamlnodes import display

REPO = Path(__file__).resolve().parents[2]
Write = Callable[[str, str], Path]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_list_json_shows_el4_to_el9_and_demo(capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "profiles", "list", "--json")
    assert isinstance(rows, list)
    by_name = {r["name"]: r for r in rows}
    assert sorted(by_name) == ["debian12", "demo", "el4", "el5", "el6", "el7", "el8", "el9"]
    assert by_name["el4"]["repository"] == "cernvm-slc4.cern.ch" and by_name["el4"]["frozen"] is True
    assert by_name["el7"]["snapshot"] == "tag HEAD4" and by_name["el7"]["path"] == "/cvm4"


def test_list_table_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("el4", "el5", "el6", "el7", "el8", "el9", "demo"):
        assert name in out


def test_show_resolved_json_is_the_full_merged_profile(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "profiles", "show", "el4", "--resolved", "--json")
    assert data == json.loads(json.dumps(profile.load("el4").to_dict()))
    assert isinstance(data, dict)
    # inherited from base and preserved, not written in el4.yaml
    assert data["image"]["formats"] == ["iso", "hdd", "qcow2"]
    assert data["preservation"]["checksums_required"] is True
    assert data["bootloader"]["cmdline"] == ["vsyscall=emulate"]


def test_show_resolved_yaml_is_a_profile_validate_accepts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """README: ``profiles show el9 --resolved`` then ``profiles validate my-el9.yaml``; the YAML had
    ``source:`` and ``inputs:`` keys, each "unknown setting" (pr24c finding 3): they are comments now."""
    assert main(["profiles", "show", "el9", "--resolved"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# ") and text.splitlines()[0].endswith("el9.yaml")
    assert "# input: " in text and "base.yaml" in text
    (tmp_path / "my-el9.yaml").write_text(text)
    assert main(["profiles", "validate", str(tmp_path / "my-el9.yaml")]) == 0, capsys.readouterr().err


def test_the_references_template_examples_are_settings() -> None:
    """docs/profile-reference.md showed templates as `label: "..."`: no such setting (pr24c finding 8)."""
    import re

    from cernvm_build.profile import settings

    text = (REPO / "docs" / "profile-reference.md").read_text()
    section = text.split("## Templates", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"`([\w.]+): \"[^`]*\{\{", section)
    assert examples and all(key in settings.BY_KEY for key in examples), examples


def test_show_without_resolved_is_the_file_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "profiles", "show", "el4", "--json")
    assert isinstance(data, dict)
    assert data["extends"] == ["base", "preserved"] and "image" not in data


def test_validate_all_shipped_and_given_paths(capsys: pytest.CaptureFixture[str], write: Write) -> None:
    assert main(["profiles", "validate"]) == 0
    good = write("good", "extends: minimal\n")
    bad = write("bad", "extends: minimal\nimage: {formats: [floppy]}\n")
    assert main(["profiles", "validate", str(good), str(bad)]) == 3
    err = capsys.readouterr().err
    assert "bad.yaml:2:" in err and "image.formats" in err and "good.yaml" not in err
    assert main(["profiles", "validate", "--json", str(good), str(bad)]) == 3
    data = json.loads(capsys.readouterr().out)
    assert [d["valid"] for d in data] == [True, False]
    assert data[1]["errors"][0]["hint"]


def test_validate_reports_every_problem_not_only_the_unknown_keys(
    capsys: pytest.CaptureFixture[str], write: Write
) -> None:
    """pr19d: `profiles validate` stopped at the unknown keys; the type and URL errors appeared only
    after fixing them. Every problem, each with file:line:column, key and hint; exit 3. A build's
    load keeps raising the first."""
    text = (
        "extends: minimal\n"
        "bogus: 1\n"
        "cvmfs:\n"
        "  servers: [ftp://x/cvmfs/@fqrn@]\n"
        "image: {formats: [floppy]}\n"
        "description: '{{ missing.key }}'\n"  # templated: not rendered, so not reported
    )
    bad = write("bad", text)
    assert main(["profiles", "validate", "--json", str(bad)]) == 3
    errors = json.loads(capsys.readouterr().out)[0]["errors"]
    assert [e["error"].split(": ")[:2] for e in errors] == [
        [f"{display(bad)}:2:1", "bogus"],
        [f"{display(bad)}:4:13", "cvmfs.servers"],
        [f"{display(bad)}:5:19", "image.formats"],
    ]
    assert all(e["hint"] for e in errors)
    # pr33b: the place as fields too (only inside "error" before), "where" as every error document has it
    assert [(e["line"], e["column"], e["key"]) for e in errors] == [
        (2, 1, "bogus"),
        (4, 13, "cvmfs.servers"),
        (5, 19, "image.formats"),
    ]
    assert errors[0]["where"] == f"{display(bad)}:2:1: bogus"
    with pytest.raises(profile.ProfileError, match="bogus: unknown setting"):
        profile.load(bad)


def test_validate_a_missing_file_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    # lf32a: a file the command line names that is not there is exit 2 in every command (it was 3)
    assert main(["profiles", "validate", "no/such/profile.yaml"]) == 2
    assert "no/such/profile.yaml: no such file or folder" in capsys.readouterr().err


def test_schema_is_json_schema_that_the_shipped_files_satisfy(capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema

    schema = run_json(capsys, "profiles", "schema")
    assert isinstance(schema, dict)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in profile.find_profiles().values():
        assert list(validator.iter_errors(profile.own_settings(path))) == [], path
    assert list(validator.iter_errors({"os": {"release": "seven"}}))
    assert list(validator.iter_errors({"image": {"formats": ["floppy"]}}))
    assert list(validator.iter_errors({"cvmfs": {"repositry": "x"}}))


def test_reference_doc_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    from cernvm_build.profile import reference
    from cernvm_build.profile.settings import SETTINGS

    text = reference.markdown()
    assert (REPO / "docs" / "profile-reference.md").read_text() == text, (
        "regenerate: cernvm-build profiles reference -o docs/profile-reference.md"
    )
    for s in SETTINGS:
        assert f"`{s.key}`" in text
    assert main(["profiles", "reference"]) == 0
    assert capsys.readouterr().out == text


def test_reference_output_file_is_written(tmp_path: Path) -> None:
    assert main(["profiles", "reference", "-o", str(tmp_path / "ref.md")]) == 0
    assert (tmp_path / "ref.md").read_text().startswith("# Profile reference")


def test_reference_output_that_is_a_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o naming a folder was an IsADirectoryError traceback (mm18c): the cvmfs commands' one line."""
    assert main(["profiles", "reference", "-o", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert f"--output {tmp_path}: a folder, not a file" in err and "Traceback" not in err


def test_demo_shows_the_profile_and_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "demo", "--plan", "--json")
    assert isinstance(data, dict)
    assert data["profile"]["cvmfs"]["repository"] == "demo.cernvm.test"
    outputs = [s["output"] for s in data["plan"]]
    for fmt in ("iso", "hdd", "qcow2"):
        assert f"ucernvm-demo.2026.11-1.cernvm.x86_64.{fmt}" in outputs
    assert {s["stage"] for s in data["plan"]} >= {"cvmfs", "bootloader", "image", "container"}


@pytest.mark.parametrize("argv", [["profiles"], ["profiles", "list"], ["profiles", "show"], ["demo"]])
def test_help_teaches_on_every_level(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    # a description with examples, not only the usage line
    assert f"cernvm-build {' '.join(argv)}" in text and text.count("\n") > 8


def test_the_installed_command_runs_the_demo() -> None:
    exe = Path(sys.executable).parent / "cernvm-build"
    res = subprocess.run([str(exe), "demo", "--plan"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "demo.cernvm.test" in res.stdout and "plan" in res.stdout


def test_show_origins_names_the_file_behind_each_value(capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "profiles", "show", "el4", "--origins", "--json")
    assert isinstance(rows, list)
    by_key = {r["key"]: r for r in rows}
    shipped = display(data_dir("profiles"))
    assert by_key["os.release"]["from"].startswith(f"{shipped}/el4.yaml:")
    assert by_key["bootloader.cmdline"]["from"].startswith(f"{shipped}/preserved.yaml:")
    assert by_key["bootloader.cmdline"]["value"] == ["vsyscall=emulate"]
    assert by_key["cvmfs.snapshot.date"]["from"] == "default"
    # pr19d finding 4: `format` (the file's, not in the resolved profile) was shown as None
    assert by_key["format"]["value"] == 1 and by_key["format"]["from"].startswith(f"{shipped}/el4.yaml:")


def test_show_without_resolved_prints_the_file_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "el4"]) == 0
    out = capsys.readouterr().out
    assert "servers: !replace" in out and "# Scientific Linux CERN 4" in out


def test_validate_a_folder_checks_every_profile_in_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "validate", str(data_dir("profiles"))]) == 0
    assert "10 profile(s) valid" in capsys.readouterr().err
    assert main(["profiles", "validate", str(Path(__file__).parent / "broken")]) == 3


def test_diff_lists_the_settings_that_differ(capsys: pytest.CaptureFixture[str], write: Write) -> None:
    rows = run_json(capsys, "profiles", "diff", "el4", "el5", "--json")
    assert isinstance(rows, list)
    by_key = {r["key"]: r for r in rows}
    assert by_key["os.release"] == {"key": "os.release", "el4": 4, "el5": 5}
    assert "cvmfs.path" not in by_key  # both /cvm3
    # a copy elsewhere of the same settings is the same platform; one change shows up
    copy = write("el7", (data_dir("profiles") / "el7.yaml").read_text())
    assert main(["profiles", "diff", "el7", str(copy), "--exit-code"]) == 0
    assert "same settings" in capsys.readouterr().out
    changed = write("changed", "extends: el7\nname: el7\ncvmfs: {snapshot: {tag: cernvm-system-4.5.0.0}}\n")
    assert main(["profiles", "diff", "el7", str(changed), "--exit-code", "--json"]) == 1
    out = capsys.readouterr().out
    assert json.loads(out)[0]["key"] == "cvmfs.snapshot.tag"


def test_diff_is_a_library_call() -> None:
    """``profile.compare.diff``: what the CLI's table and JSON are made of."""
    from cernvm_build.profile import compare, load

    found = compare.diff(load("el4"), load("el5"))
    assert compare.SettingDifference("os.release", 4, 5) in found
    assert compare.diff(load("el7"), load("el7")) == []


def test_list_shows_an_invalid_profile_instead_of_failing_on_it(
    capsys: pytest.CaptureFixture[str], write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("broken", "extends: el7\nos: {release: 42}\n")
    (tmp_path / "minimal.yaml").unlink()
    monkeypatch.setenv("CERNVM_PROFILE_PATH", str(tmp_path))
    assert main(["profiles", "list", "--json"]) == 3
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "out of range" in rows["broken"]["error"] and rows["el7"]["repository"] == "cernvm-prod.cern.ch"


def test_list_shows_an_invalid_profile_as_plain_text(
    capsys: pytest.CaptureFixture[str], write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Table cells are data (never markup): the word is not ``[red]invalid[/red]`` and the error keeps
    its own brackets, not ``\\[``."""
    write("broken", "extends: el7\nos: {release: [42]}\n")
    (tmp_path / "minimal.yaml").unlink()
    monkeypatch.setenv("CERNVM_PROFILE_PATH", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["profiles", "list"]) == 3
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("broken"))
    assert " invalid " in row and "[red]" not in row and "\\" not in row, row


def test_the_group_alone_shows_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles"]) == 2
    err = capsys.readouterr().err
    assert all(c in err for c in ("list", "show", "validate", "diff", "schema", "reference"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("bootloader: {release: " + "9" * 5000 + "}\n", "'99999999999999999999…' is too large a number"),
        ("bootloader: {release: " + "9" * 40 + "}\n", "a number of about 40 digits is too large"),
    ],
    ids=["past-int-limit", "40-digits"],
)
def test_huge_numbers_in_a_profile_are_one_line_at_their_position(
    capsys: pytest.CaptureFixture[str], write: Write, body: str, message: str
) -> None:
    path = write("big", "extends: minimal\n" + body)
    assert main(["profiles", "validate", str(path)]) == 3
    err = capsys.readouterr().err
    assert message in err and "big.yaml:2:" in err and "Traceback" not in err and "9" * 30 not in err


@pytest.mark.parametrize(
    ("word", "owner"),
    [
        ("cvmfs_repos=evil.example.org", "cvmfs.repository"),
        ("cernvm_path=../..", "cvmfs.path"),
        ("cvmfs_server=evil.example.org", "cvmfs.servers"),
        ("cvmfs_proxy=http://evil.example.org:3128", "cvmfs.http_proxy"),
        ("cvmfs_root_hash=0123456789012345678901234567890123456789", "cvmfs.snapshot.root_hash"),
    ],
)
def test_a_cmdline_word_a_setting_writes_is_refused_naming_the_setting(
    capsys: pytest.CaptureFixture[str], write: Write, word: str, owner: str
) -> None:
    """pr17b finding 8: the init keeps the last of repeated words, so a bootloader.cmdline word booted
    another repository, server or path than the build verified and recorded (and cvmfs.path's
    ``..`` refusal was bypassed)."""
    path = write("hijack", f"extends: minimal\nbootloader:\n  cmdline:\n    - quiet\n    - '{word}'\n")
    assert main(["profiles", "validate", str(path)]) == 3
    err = capsys.readouterr().err
    assert "hijack.yaml:5:7" in err and f"{word!r} is {owner}'s to write" in err, err
    assert f"set {owner} instead" in err and "Traceback" not in err
    ok = write("fine", "extends: minimal\nbootloader:\n  cmdline: [cvmdebug, 'cernvm_metadata_url=none']\n")
    assert main(["profiles", "validate", str(ok)]) == 0, capsys.readouterr().err


def test_help_names_every_family_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    """The help listed EL4-EL9 and the demo, not the shipped debian12 (pr19b finding 12)."""
    for argv in (["--help"], ["profiles", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "Debian 12" in capsys.readouterr().out


def test_an_unknown_name_says_which_profile_path_folders_were_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr19d finding 9: a misspelt $CERNVM_PROFILE_PATH folder, or a .yaml file given there instead of
    its folder, was skipped in silence: 'no profile my-el9' with no word on where it was looked for."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my-el9.yaml").write_text("name: my-el9\nextends: [el9]\n")
    monkeypatch.setenv("CERNVM_PROFILE_PATH", f"{tmp_path}/mine/my-el9.yaml:{tmp_path}/nope")
    with pytest.raises(profile.ProfileError) as e:
        profile.locate("my-el9")
    assert (
        e.value.hint
        and f"{tmp_path}/mine/my-el9.yaml (not a folder), {tmp_path}/nope (not a folder)" in e.value.hint
    )
    monkeypatch.delenv("CERNVM_PROFILE_PATH")
    with pytest.raises(profile.ProfileError) as e:
        profile.locate("my-el9")
    assert e.value.hint and "add its folder to $CERNVM_PROFILE_PATH" in e.value.hint


def test_validate_a_folder_without_profiles_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr19d finding 18: `profiles validate site-profiles/` of a folder with no .yaml said
    "0 profile(s) valid" and exited 0 (a CI check of the wrong folder passed)."""
    (tmp_path / "notes.txt").write_text("x")
    assert main(["profiles", "validate", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert f"error: {tmp_path}: no profile in this folder" in err and "Traceback" not in err


@pytest.mark.timeout(60)
def test_a_profile_folder_with_a_loop_a_fifo_and_a_dangling_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # pr24b finding 6: a symlink loop named *.yaml in a $CERNVM_PROFILE_PATH folder was a RuntimeError
    # traceback of every `profiles` command (Path.resolve before 3.13), a FIFO hung `profiles list`
    import os

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my-el9.yaml").write_text("extends: el9\n")
    (folder / "loop.yaml").symlink_to("loop.yaml")
    (folder / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    os.mkfifo(folder / "fifo.yaml")
    monkeypatch.setenv("CERNVM_PROFILE_PATH", str(folder))
    monkeypatch.chdir(folder)
    assert main(["profiles", "list", "--json"]) == 0
    assert {"my-el9", "el9"} <= {r["name"] for r in json.loads(capsys.readouterr().out)}
    for name in ("loop", "fifo", "gone"):
        assert main(["profiles", "show", name]) == 3
        assert f"no profile '{name}'" in capsys.readouterr().err
    assert display(folder / "loop.yaml") == str(folder / "loop.yaml")
    with pytest.raises(profile.ProfileError, match="not a regular file"):
        profile.yamlnodes.load_file(folder / "fifo.yaml")


def test_show_resolved_yaml_loads_back_to_the_values_however_odd(
    capsys: pytest.CaptureFixture[str], write: Write
) -> None:
    """pr26b finding 6: a value holding U+202E, U+200B or NEL was printed as ``\\u202e`` in a plain
    (or single-quoted) scalar: safe for the terminal, but the saved YAML held other characters."""
    value = "a\u202eb\u200bc\x85d: #e é"
    path = write("odd", 'extends: minimal\ndescription: "a\\u202Eb\\u200Bc\\Nd: #e \u00e9"\n')
    assert main(["profiles", "show", str(path), "--resolved"]) == 0
    text = capsys.readouterr().out
    assert "\u202e" not in text and "\u200b" not in text and "\x85" not in text
    assert yaml.safe_load(text)["description"] == value


def test_a_profile_file_whose_name_is_not_utf8_is_one_invalid_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # x\xfe.yaml on $CERNVM_PROFILE_PATH: its name (the file's) went into the fingerprint's JSON, and
    # `profiles list` was a UnicodeEncodeError traceback (pr28b finding 11)
    (tmp_path / os.fsdecode(b"x\xfe.yaml")).write_text("extends: el9\n")
    (tmp_path / "named.yaml").write_text("extends: el9\n")
    monkeypatch.setenv("CERNVM_PROFILE_PATH", str(tmp_path))
    assert main(["profiles", "list", "--json"]) == 3
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "is not UTF-8" in rows[os.fsdecode(b"x\xfe")]["error"]
    assert "error" not in rows["named"]
