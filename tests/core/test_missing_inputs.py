"""Every command given a file or folder that is not there: one line naming it, exit 2 (lf32a).

It was 2, 3, 5, 7 or 8 by the command's area (a profile file 3, a Stratum folder 5, a site folder or
release index 7, a boot image 8), and `cernvm-launch create` reached libvirt before it read its
user data. ``cli.inputs`` checks what the command line names while it is parsed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cernvm_build.cli import launch
from cernvm_build.cli.main import build_parser, main
from cernvm_build.errors import UsageError
from tests.core.test_cli_app import _leaves

#: a path under a folder that is not there either
M = "/nonexistent-lf32a/missing"
FIXTURE = str(Path(__file__).resolve().parents[1] / "cvmfs" / "data" / "fixture.cernvm.test")

#: (program, the leaf's words) -> a command line naming an input that is not there
CASES: dict[tuple[str, str], list[str]] = {
    ("cernvm-build", "profiles show"): [f"{M}.yaml"],
    ("cernvm-build", "profiles validate"): [f"{M}.yaml"],
    ("cernvm-build", "profiles diff"): ["el9", f"{M}.yaml"],
    ("cernvm-build", "cvmfs info"): [M],
    ("cernvm-build", "cvmfs ls"): [FIXTURE, "--key", M],
    ("cernvm-build", "cvmfs cat"): [FIXTURE, "/x", "--blacklist", M],
    ("cernvm-build", "cvmfs verify"): [M],
    ("cernvm-build", "cvmfs export"): [M, "/nonexistent-lf32a/out"],
    ("cernvm-build", "cvmfs tag list"): [M],
    ("cernvm-build", "cvmfs tag add"): [M, "t", "--keys", FIXTURE],
    ("cernvm-build", "cvmfs tag remove"): [FIXTURE, "t", "--keys", M],
    ("cernvm-build", "cvmfs serve"): [M],
    ("cernvm-build", "cvmfs replicate"): [M, "/nonexistent-lf32a/replica"],
    ("cernvm-build", "cvmfs nginx-config"): [M],
    ("cernvm-build", "cvmfs mount"): [FIXTURE, M],
    ("cernvm-build", "cvmfs monitor"): ["--config", M],
    ("cernvm-build", "cvmfs stats"): [M],
    ("cernvm-build", "cvmfs create"): ["/nonexistent-lf32a/repo", "--fqrn", "x.test", "--keys", M],
    ("cernvm-build", "cvmfs publish"): [FIXTURE, M, "--keys", FIXTURE],
    ("cernvm-build", "cvmfs resign"): [M, "--keys", FIXTURE],
    ("cernvm-build", "os"): [f"{M}.yaml"],
    ("cernvm-build", "image build"): ["demo", "--sign-key", M],
    ("cernvm-build", "image seed"): ["demo", "--trace", M, "-o", "/nonexistent-lf32a/s.qcow2"],
    ("cernvm-build", "image inspect"): [f"{M}.iso"],
    ("cernvm-build", "image verify"): [f"{M}.iso"],
    ("cernvm-build", "container build"): [f"{M}.yaml"],
    ("cernvm-build", "container verify"): [f"{M}.oci"],
    ("cernvm-build", "container push"): [f"{M}.oci", "localhost:5000/x:1"],
    ("cernvm-build", "hub ingest"): ["x", "--hub-stratum", M, "--hub-keys", M],
    ("cernvm-build", "site build"): ["--site", M],
    ("cernvm-build", "site check"): ["--site", M],
    ("cernvm-build", "site serve"): ["--site", M],
    ("cernvm-build", "site publish"): ["s3://bucket/www", "--site", M],
    ("cernvm-build", "mirror yum"): [M, "s3://bucket/yum"],
    ("cernvm-build", "mirror apt"): [M, "s3://bucket/apt"],
    ("cernvm-build", "mirror verify"): ["yum", "s3://bucket/yum", "--gpg-key", M],
    ("cernvm-build", "mirror sync"): [M, "s3://bucket/x"],
    ("cernvm-build", "release build"): ["2026.11-1", "--previous", f"{M}/index.json"],
    ("cernvm-build", "release verify"): [f"{M}/index.json"],
    ("cernvm-build", "release rebuild"): [M],
    ("cernvm-build", "release publish"): [f"{M}/index.json", "s3://bucket/releases"],
    ("cernvm-build", "demo"): ["--profile", f"{M}.yaml", "--plan"],
    ("cernvm-launch", "create"): [f"{M}.txt", "--yes"],
    ("cernvm-launch", "import"): [f"{M}.ova"],
    ("cernvm-launch", "images add"): [f"{M}.hdd"],
    ("cernvm-launch", "images pull"): ["el9", "--key", M],
    ("cernvm-launch", "context"): [f"{M}.txt"],
}

#: leaves that read no file or folder the command line names, and why
NO_INPUT = (
    {
        ("cernvm-build", w): why
        for w, why in {
            "profiles list": "names only",
            "profiles schema": "prints",
            "profiles reference": "prints",
            "cvmfs squid-config": "writes",
            "cvmfs keygen": "writes its --out folder",
        }.items()
    }
    | {
        ("cernvm-launch", w): "an instance's or image's name (its own error, exit 8)"
        for w in ("destroy", "list", "pause", "ssh", "start", "stop", "console", "ip", "wait", "forward")
    }
    | {
        ("cernvm-launch", "images list"): "names only",
        ("cernvm-launch", "images remove"): "an image's name",
        ("cernvm-launch", "help"): "a command's name",
        # the operands are `[user@]NAME:PATH` or local paths, told apart once libvirt lists the instances:
        # a local SOURCE that is not there is a UsageError too (exit 2), after the connection
        ("cernvm-launch", "scp"): "operands resolved after connecting",
    }
)


def _all_leaves() -> set[tuple[str, str]]:
    return {
        (program, " ".join(words))
        for program, root in (("cernvm-build", build_parser()), ("cernvm-launch", launch.build_parser()))
        for words, _ in _leaves(root, [])
    }


def test_every_command_is_walked() -> None:
    """A new command is listed here: with a command line naming a missing input, or why it has none."""
    assert set(CASES) | set(NO_INPUT) == _all_leaves()
    assert not set(CASES) & set(NO_INPUT)


@pytest.mark.parametrize(("program", "words"), sorted(CASES), ids=lambda v: str(v))
def test_a_missing_input_is_one_line_and_exit_2(
    program: str, words: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/nonexistent-lf32a/home")  # no user's configuration, no libvirt reached
    entry = main if program == "cernvm-build" else launch.main
    argv = [*words.split(), *CASES[(program, words)]]
    assert entry(argv) == UsageError.exit_code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[0].startswith(f"error: {M}") and ": no such " in lines[0], err
    assert len(lines) == 2 and lines[1].startswith("hint: "), err
    leaf = dict(
        (" ".join(w), p) for w, p in _leaves(build_parser() if entry is main else launch.build_parser(), [])
    )
    if any("--json" in a.option_strings for a in leaf[words]._actions):
        assert entry([*argv, "--json"]) == 2
        doc = json.loads(capsys.readouterr().out)
        assert doc["exit_code"] == 2 and doc["where"].startswith(M) and doc["message"].startswith("no such ")


@pytest.mark.parametrize("help_word", ["--help", "-h"])
@pytest.mark.parametrize(("program", "words"), sorted(CASES), ids=lambda v: str(v))
def test_help_is_printed_whatever_input_the_line_names(
    program: str,
    words: str,
    help_word: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--help`` prints the command's help and exits 0 beside a missing input: argparse converted the
    input before it reached the ``--help`` after it, and the line was the missing-file error, exit 2."""
    monkeypatch.setenv("HOME", "/nonexistent-lf32a/home")
    entry = main if program == "cernvm-build" else launch.main
    argv = [*words.split(), *CASES[(program, words)], help_word]
    with pytest.raises(SystemExit) as stopped:
        entry(argv)
    assert stopped.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: ") and err == "", err
    # after a '--' it is a word, not an option: the line is refused as before (the input, or the word)
    try:
        code = entry([*argv[:-1], "--", help_word])
    except SystemExit as e:
        code = e.code
    assert code == 2 and not capsys.readouterr().out.startswith("usage: ")


def test_a_missing_input_whose_path_is_not_utf8_is_one_line_with_its_byte(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The missing input's line names a path ``os.fsdecode`` made from bytes that are not UTF-8: a lone
    surrogate no terminal takes, which made the CLI's own error handler a UnicodeEncodeError traceback."""
    odd = M + os.fsdecode(b"\xff")
    assert main(["cvmfs", "info", odd]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {M}\\xff: no such ") and "Traceback" not in err, err
    assert main(["cvmfs", "info", odd, "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == 2 and doc["where"] == odd


@pytest.mark.parametrize(
    ("program", "argv"),
    [
        ("cernvm-launch", ["context", "-"]),
        ("cernvm-build", ["cvmfs", "stats", "-"]),
        ("cernvm-build", ["mirror", "yum", "-", "s3://bucket/yum"]),
    ],
)
def test_a_dash_is_stdin_only_where_the_command_reads_it(
    program: str,
    argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'-' passed every URL-or-path input as if it were stdin: these then read a file '-' (exit 3, 5, or 9
    after looking for S3 credentials), where a missing input is exit 2."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "/nonexistent-lf32a/home")
    entry = main if program == "cernvm-build" else launch.main
    assert entry(argv) == 2
    assert capsys.readouterr().err.startswith("error: -: no such file or folder"), argv


@pytest.mark.parametrize("stratum", ["s3:/bucket/r", "S3:/bucket/r", "http:/host/cvmfs/r"])
@pytest.mark.parametrize(
    "command", [["publish", "{s}", FIXTURE], ["tag", "add", "{s}", "t"], ["resign", "{s}"]]
)
def test_a_mistyped_s3_url_is_said_so_by_every_stratum_command(
    stratum: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """pr28c's line for a mistyped s3:// URL (a local folder 's3:' it would be): the parse-time check
    of STRATUM took 's3:/b/r' for a missing folder ("check the path") before the command could say so."""
    argv = ["cvmfs", *(w.format(s=stratum) for w in command), "--keys", FIXTURE]
    assert main(argv) == 2
    assert "is not an s3:// URL" in capsys.readouterr().err


def test_a_profile_path_under_home_is_found_as_the_resolver_finds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quoted '~/p.yaml' (no shell expanded it) is a profile the resolver finds (``resolve.find``
    expands it): the parse-time check refused it as missing."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "p.yaml").write_text("extends: [el9]\n")
    assert main(["profiles", "show", "~/p.yaml"]) == 0
    assert "extends: [el9]" in capsys.readouterr().out
    assert main(["profiles", "show", "~/q.yaml"]) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["create", "--sharedFolder", M, "--yes", "--no-start"],
        ["create", "--seed", f"{M}.qcow2", "--yes", "--no-start"],
        ["create", "--iso", f"{M}.hdd", "--yes", "--no-start"],
        ["import", "--sharedFolder", M, FIXTURE],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_missing_input_named_by_a_launch_flag_is_exit_2_before_the_image(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each a flag's input, not the leaf's one case above: a missing --sharedFolder or --seed was exit 8
    after the image had been resolved and verified (a missing --iso: 'neither a file nor a cached
    image', exit 8), where the README promises exit 2 for every file the command line names."""
    monkeypatch.setenv("HOME", "/nonexistent-lf32a/home")
    monkeypatch.setenv("CERNVM_LAUNCH_HOME", str(tmp_path / "home"))
    assert launch.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {M}") and ": no such " in err, err
    assert "creating" not in err and not (tmp_path / "home").exists()
