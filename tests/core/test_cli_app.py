"""The CLI framework: one-line errors with hints, documented exit codes, no tracebacks."""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.cli import app
from cernvm_build.cli.main import AREAS, build_parser, main
from cernvm_build.errors import EXIT_CODES, BuildError, Location


def _parser_with(handler: app.Handler) -> argparse.ArgumentParser:
    parser = app.ArgumentParser(prog="t")
    sub = parser.add_subparsers()
    app.subparser(sub, "go", help="go", handler=handler, json=True)
    return parser


def test_user_error_is_one_line_with_hint_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    def fail(args: argparse.Namespace, out: app.Output) -> int:
        raise BuildError("no kernel", hint="set kernel.package", where=Location("p.yaml", 3, 5, "kernel"))

    code = app.run(_parser_with(fail), ["go"])
    err = capsys.readouterr().err
    assert code == BuildError.exit_code == 7
    assert "error: p.yaml:3:5: kernel: no kernel" in err
    assert "hint: set kernel.package" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("place", "line"),
    [
        ("under-a-file", "under-a-file/x: Not a directory"),  # launchHomeFolder=FILE
        ("/dev/full", "error: No space left on device"),  # a full disk's write names no file
    ],
)
def test_a_place_that_cannot_be_used_is_one_line(
    place: str, line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an unwritable launch home, a full disk: OSError tracebacks where no code expected them (pr24b finding 3)
    (tmp_path / "under-a-file").write_text("")

    def write(args: argparse.Namespace, out: app.Output) -> int:
        target = Path(place) if place.startswith("/") else tmp_path / place / "x"
        with open(target, "wb", buffering=0) as f:
            f.write(b"x")
        return 0

    assert app.run(_parser_with(write), ["go"]) == 1
    err = capsys.readouterr().err
    assert line in err and "hint: " in err and "Traceback" not in err
    assert len(err.splitlines()) == 2


def test_a_symlink_loop_resolved_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Path.resolve() raises RuntimeError for a loop before Python 3.13: `cernvm-launch create
    # --sharedFolder LOOP` was a traceback (pr24b finding 7)
    (tmp_path / "loop").symlink_to("loop")

    def resolve(args: argparse.Namespace, out: app.Output) -> int:
        (tmp_path / "loop" / "x").resolve()
        return 0

    assert app.run(_parser_with(resolve), ["go"]) == 1
    err = capsys.readouterr().err
    assert "loop/x: a loop of symbolic links" in err and "Traceback" not in err

    def other(args: argparse.Namespace, out: app.Output) -> int:
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError):
        app.run(_parser_with(other), ["go"])


def test_an_oserror_of_the_code_stays_a_bug() -> None:
    def bad(args: argparse.Namespace, out: app.Output) -> int:
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):
        app.run(_parser_with(bad), ["go"])

    def on_a_descriptor(args: argparse.Namespace, out: app.Output) -> int:
        fd = os.open(__file__, os.O_RDONLY)
        try:
            os.listdir(fd)  # ENOTDIR naming the descriptor (an int): it was a TypeError from fsdecode
        finally:
            os.close(fd)
        return 0

    with pytest.raises(NotADirectoryError):
        app.run(_parser_with(on_a_descriptor), ["go"])


def test_json_mode_emits_only_json(capsys: pytest.CaptureFixture[str]) -> None:
    def data(args: argparse.Namespace, out: app.Output) -> int:
        out.info("chatter goes to stderr")
        out.print("human text is suppressed")
        out.data({"a": 1})
        return 0

    assert app.run(_parser_with(data), ["go", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == '{\n  "a": 1\n}'


def test_json_mode_error_is_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    # with --json, stdout was empty on an error: a script had nothing to parse (pr24b finding 4)
    def fail(args: argparse.Namespace, out: app.Output) -> int:
        raise BuildError("no kernel", hint="set kernel.package", where=Location("p.yaml", 3, 5, "kernel"))

    assert app.run(_parser_with(fail), ["go", "--json"]) == BuildError.exit_code
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "error": "p.yaml:3:5: kernel: no kernel",
        "message": "no kernel",
        "where": "p.yaml:3:5: kernel",
        "hint": "set kernel.package",
        "exit_code": BuildError.exit_code,
    }
    assert "error: p.yaml:3:5: kernel: no kernel" in captured.err  # people still read it there

    def half(args: argparse.Namespace, out: app.Output) -> int:
        out.data({"a": 1})
        raise BuildError("late")

    assert app.run(_parser_with(half), ["go", "--json"]) == BuildError.exit_code
    assert json.loads(capsys.readouterr().out) == {"a": 1}  # one document, the one already written

    with pytest.raises(SystemExit):
        app.run(_parser_with(half), ["go", "--json", "--bogus"])
    assert json.loads(capsys.readouterr().out)["exit_code"] == 2
    with pytest.raises(SystemExit):
        app.run(_parser_with(half), ["go", "--bogus"])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["image", "verify", "/nonexistent-lf33a", "-h"]])
def test_help_onto_a_full_stdout_is_one_line_and_exit_1(argv: list[str]) -> None:
    """argparse drops its help's failed write: ``--help >/dev/full`` exited 0, nothing written; cut
    short by its reader (``| head -1``) it stays exit 0, with no "Exception ignored" at the exit."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-P", "-m", "cernvm_build.cli.main", *argv]
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: No space left on device\n") and done.stderr.count("\n") == 2
    read, write = os.pipe()
    with subprocess.Popen(command, stdout=write, stderr=subprocess.PIPE, text=True, env=env) as p:
        os.close(write)
        os.read(read, 1)
        os.close(read)  # the reader leaves after one byte
        err = p.communicate(timeout=120)[1]
    assert p.returncode == 0 and err == "", err


def test_json_mode_onto_a_full_stdout_is_one_line(tmp_path: Path) -> None:
    # the error's JSON document went to the stdout that had just failed: a traceback (pr24b finding 11)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-P", "-m", "cernvm_build.cli.main", "profiles", "list", "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            timeout=120,
        )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: No space left on device\n")


def _entry_point(*words: str, close: tuple[int, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    """``cernvm-build WORDS`` as its own process, started with the descriptors ``close`` closed."""

    def closed() -> None:
        for fd in close:
            os.close(fd)

    return subprocess.run(
        [sys.executable, "-P", "-m", "cernvm_build.cli.main", *words],
        stdin=subprocess.DEVNULL if 0 not in close else None,
        stdout=subprocess.PIPE if 1 not in close else None,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **env},
        preexec_fn=closed,
        timeout=120,
    )


@pytest.mark.parametrize("words", [("profiles", "schema"), ("profiles", "list", "--json")])
def test_a_closed_stdout_is_no_traceback(words: tuple[str, ...]) -> None:
    # `cernvm-build profiles schema >&-`: Python leaves sys.stdout None, and the command's write was an
    # AttributeError traceback (pr28b finding 1); the closed descriptor is /dev/null now
    done = _entry_point(*words, close=(1,))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_a_closed_stdin_reads_as_empty(tmp_path: Path) -> None:
    # `cvmfs publish REPO - <&-` was an AttributeError traceback (sys.stdin None); now stdin is empty,
    # and the descriptor the next open file would have taken is not free (pr28b finding 1)
    probe = (
        "import os, sys\n"
        "from cernvm_build.cli.app import standard_streams\n"
        "standard_streams()\n"
        "print(repr(sys.stdin.read()), sys.stdin.name, os.open(os.devnull, os.O_RDONLY) > 2)\n"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        preexec_fn=lambda: os.close(0),
        timeout=60,
    )
    assert done.stdout == "'' <stdin> True\n", done.stderr


def test_help_under_a_locale_that_is_not_utf8_is_no_traceback() -> None:
    # LC_ALL=en_US.ISO-8859-1 (here: its stdout encoding, without the locale): the 'μ' of μCernVM was a
    # UnicodeEncodeError traceback in `--help`, `profiles schema`, `cvmfs ls` (pr28b finding 2)
    done = _entry_point("--help", PYTHONIOENCODING="latin-1")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "\\u03bcCernVM boot images" in done.stdout
    schema = _entry_point("profiles", "schema", PYTHONIOENCODING="latin-1")
    assert schema.returncode == 0, schema.stderr
    assert "\u03bcCernVM" in json.loads(schema.stdout)["properties"]["bootloader"]["description"]


@pytest.mark.parametrize(
    "env",
    [
        {"PYTHONIOENCODING": "latin-1"},
        {"PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"},
        {"PYTHONUTF8": "0", "LC_ALL": "POSIX"},
    ],
    ids=["latin-1", "C", "POSIX"],
)
def test_yaml_under_a_locale_that_is_not_utf8_loads_as_the_values(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """``profiles show --resolved``'s YAML under a locale that lacks a value's character: stdout wrote
    it as ``\\u03bc`` in a plain scalar, which loads as six other characters; in the C locale with
    Python's UTF-8 mode off (stdout's errors ``surrogateescape``) it was a UnicodeEncodeError traceback."""
    import yaml

    mine = tmp_path / "mu.yaml"
    mine.write_text('format: 1\nextends: el9\ndescription: "\u03bcCernVM f\u00fcr \u00dcn\u00efcode"\n')
    done = _entry_point("profiles", "show", str(mine), "--resolved", **env)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert yaml.safe_load(done.stdout)["description"] == "\u03bcCernVM f\u00fcr \u00dcn\u00efcode"
    assert _entry_point("--help", **env).returncode == 0


def test_an_unknown_flag_of_a_subcommand_names_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse reports it from the top parser: its usage and "see 'cernvm-build --help'" (pr24b finding 13)
    with pytest.raises(SystemExit) as e:
        main(["profiles", "list", "--bogus"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("usage: cernvm-build profiles list ")
    assert "hint: see 'cernvm-build profiles list --help'" in err


def _leaves(
    parser: argparse.ArgumentParser, words: list[str]
) -> list[tuple[list[str], argparse.ArgumentParser]]:
    """Every leaf command below ``parser`` with the words that name it (aliases once)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(words, parser)]
    seen: dict[int, str] = {}
    for sub in subs:
        for name, p in dict(sub.choices).items():
            seen.setdefault(id(p), name)
    return [
        x
        for sub in subs
        for name, p in dict(sub.choices).items()
        if seen[id(p)] == name
        for x in _leaves(p, [*words, name])
    ]


def _every_leaf() -> list[tuple[str, list[str], int]]:
    """(program, the leaf's words, how many positionals it needs) for both CLIs."""
    from cernvm_build.cli import launch

    out = []
    for program, root in (("cernvm-build", build_parser()), ("cernvm-launch", launch.build_parser())):
        for words, leaf in _leaves(root, []):
            needed = [a for a in leaf._actions if not a.option_strings and a.nargs not in ("?", "*")]
            json_flag = ["--json"] if any("--json" in a.option_strings for a in leaf._actions) else []
            required = [
                w
                for a in leaf._actions
                if a.option_strings and a.required
                for w in (a.option_strings[0], ".")
            ]
            # "." for a positional: a path that is there (a missing input is its own usage error, lf32a)
            out.append((program, words, json_flag + required, [str((a.choices or ["."])[0]) for a in needed]))
    return out


@pytest.mark.parametrize(("program", "words", "flags", "positionals"), _every_leaf(), ids=lambda v: str(v))
def test_every_leaf_s_unknown_flag_is_one_document_naming_its_own_help(
    program: str,
    words: list[str],
    flags: list[str],
    positionals: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pr28c: in a group with a default subcommand (image, container, release), a mistyped flag of
    `image el9 --plna` or `image build el9 --output x` was hinted "see 'cernvm-build image --help'",
    which lists no flag of `image build`; with --json every leaf's usage error is stdout's one document.
    A near flag is named: Python 3.11's argparse suggests nothing."""
    from cernvm_build.cli import launch

    entry = main if program == "cernvm-build" else launch.main
    argv = [*words, *flags, "--verbsoe", *positionals]
    if words[-1] == "ssh":  # its COMMAND takes every word after the target
        argv = [*words, "--verbsoe", "x"]
    with pytest.raises(SystemExit) as e:
        entry(argv)
    got = capsys.readouterr()
    assert e.value.code == 2, got
    hint = f"did you mean '--verbose'? see '{program} {' '.join(words)} --help'"
    if words == ["help"]:  # (no flag of its own)
        hint = hint.removeprefix("did you mean '--verbose'? ")
    assert f"hint: {hint}" in got.err, got.err
    if "--json" in flags:
        assert json.loads(got.out)["hint"] == hint


def test_a_concept_s_flag_is_spelt_alike_in_every_command() -> None:
    """pr28c: `--jobs` was `-j/--jobs` in cvmfs and image but `--jobs` alone in site, mirror and release;
    the output was `--out` in 20 commands and `-o/--output` in four (`image build --output` failed;
    `image seed --out` worked only as an abbreviation of --output)."""
    from cernvm_build.cli import launch

    alike = {"--jobs": {"-j"}, "--output": {"--out"}}
    wrong = []
    for root in (build_parser(), launch.build_parser()):
        for words, leaf in _leaves(root, [root.prog]):
            for action in leaf._actions:
                for flag, also in alike.items():
                    if flag in action.option_strings and not also <= set(action.option_strings):
                        wrong.append(f"{' '.join(words)} {'/'.join(action.option_strings)}")
    assert not wrong, wrong


def test_every_json_flag_says_an_error_is_a_document_too() -> None:
    """pr28c: --json's help said only "print the result as JSON"; a script's author could not learn
    from it that a failure is a JSON document too, nor its keys."""
    from cernvm_build.cli import launch

    for root in (build_parser(), launch.build_parser()):
        for words, leaf in _leaves(root, [root.prog]):
            for a in leaf._actions:
                if "--json" in a.option_strings:
                    assert '"error", "message", "where", "hint", "exit_code"' in (a.help or ""), words


def test_a_profile_setting_s_flag_shows_one_item_as_its_example() -> None:
    """pr28c: `image build --help` said of --server "...e.g. http://x/cvmfs/@fqrn@; http(s) URL; e.g.
    [http://x/cvmfs/@fqrn@]": the same example twice, the second as a YAML list the flag does not take."""
    image = next(a for a in build_parser(["image"])._actions if isinstance(a, argparse._SubParsersAction))
    build = next(a for a in image.choices["image"]._actions if isinstance(a, argparse._SubParsersAction))
    server = next(a for a in build.choices["build"]._actions if "--server" in a.option_strings)
    assert server.help is not None and "[" not in server.help and server.help.count("e.g.") == 1, server.help


def test_every_option_s_help_names_its_default() -> None:
    """pr28c: `container build --out` (build/containers), `cvmfs publish --base-path` (/) and
    `cernvm-launch console --lines` (50) did not say what they are when not given."""
    from cernvm_build.cli import launch

    unnamed = []
    for root in (build_parser(), launch.build_parser()):
        for words, leaf in _leaves(root, [root.prog]):
            for a in leaf._actions:
                if not a.option_strings or a.default in (None, False, True, [], 0, "", argparse.SUPPRESS):
                    continue
                text = (a.help or "") % {"default": a.default} if a.help else ""
                if "default" not in text and str(a.default) not in text:
                    unnamed.append(f"{' '.join(words)} {'/'.join(a.option_strings)}: {a.default!r}")
    assert not unnamed, unnamed


@pytest.mark.parametrize("listed", ["'image', 'cvmfs', 'site'", "image, cvmfs, site"])
def test_a_mistyped_choice_is_hinted_whichever_way_argparse_lists_the_choices(listed: str) -> None:
    # Python 3.12.7+ and 3.13 list the choices unquoted (str(), gh-117766): no hint was found there
    message = f"argument area: invalid choice: 'imgae' (choose from {listed})"
    assert app._meant(message, build_parser()) == "'image'"


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (["imgae", "el9"], "'image'"),
        (["site", "biuld"], "'build'"),
        (["image", "el9", "--output", "x"], "'--out'"),  # the command spells it --out
        (["release", "2026.11-1", "--profils", "el9"], "'--profiles'"),
        (["mirror", "verify", "ymu", "s3://b/p"], "'yum'"),
    ],
)
def test_a_mistyped_word_is_hinted_what_it_was_near(
    argv: list[str], meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert f"hint: did you mean {meant}? see " in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["mirror", "yum", "SRC", "bucket/p"],
        ["mirror", "apt", "SRC", "bucket/p"],
        ["mirror", "sync", "SRC", "bucket/p"],
        ["mirror", "verify", "yum", "bucket/p"],
        ["site", "publish", "bucket/p", "--no-build"],
    ],
)
def test_a_destination_that_is_no_s3_url_is_a_usage_error_in_every_command(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr28c: the same mistake had exit code 2 in site/release publish and 9 ("mirror failed") in mirror."""
    pytest.importorskip("boto3")
    argv = [str(tmp_path) if w == "SRC" else w for w in argv]
    assert main([*argv, "--json"]) == 2
    assert "'bucket/p' is not an s" in json.loads(capsys.readouterr().out)["error"].lower()


@pytest.mark.parametrize("where", ["imports", "parse"])
def test_ctrl_c_before_the_command_begins_is_an_interrupt_not_a_traceback(
    where: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr28c: Ctrl-C in a command's first ~0.3 s (its area's modules imported, its line parsed) was a
    KeyboardInterrupt traceback and exit 1 (or death by SIGINT), and no --json document."""
    from cernvm_build.cli import main as main_module

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    if where == "imports":
        monkeypatch.setattr(main_module, "build_parser", interrupted)
    else:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    try:
        code = main(["profiles", "list", "--json"])
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped main(): a traceback for the user")
    got = capsys.readouterr()
    assert code == 130 and json.loads(got.out)["exit_code"] == 130 and got.err == "interrupted\n"


@pytest.mark.parametrize("flag", ["--json", "--jso", "--js"])
def test_a_usage_error_of_a_json_line_is_a_document_however_json_is_abbreviated(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr28c: argparse takes `--js` for --json, so the command's own errors were JSON documents, but a
    usage error of the same line (found before the flags are) was plain text with an empty stdout."""
    with pytest.raises(SystemExit):
        main(["profiles", "show", flag])  # NAME missing
    assert json.loads(capsys.readouterr().out)["exit_code"] == 2


def test_usage_error_exit_code_2() -> None:
    with pytest.raises(SystemExit) as e:
        main(["--no-such-flag"])
    assert e.value.code == 2


def test_help_lists_exit_codes() -> None:
    text = build_parser().format_help()
    for code in EXIT_CODES:
        assert f"  {code:<4} " in text


def test_help_shows_no_none_under_a_group_heading() -> None:
    # a subcommand group without a description printed "None" under "commands:" (pr24b finding 1)
    from cernvm_build.cli.launch import build_parser as launch_parser

    def lines(parser: argparse.ArgumentParser) -> list[str]:
        return [line.strip() for line in parser.format_help().splitlines()]

    top = build_parser(["profiles", "list"])
    profiles = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices["profiles"]
    for parser in (build_parser(), build_parser(["--help"]), launch_parser(), profiles):
        assert "None" not in lines(parser)


@pytest.mark.parametrize("argv", [["profiles", "list"], ["profiles", "show", "demo", "--resolved"]])
def test_quiet_leaves_out_the_result_not_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # -q says "only errors", yet a command's printed result (a table, a line) still came (pr24b finding 2)
    assert main([*argv, "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main([*argv, "-q", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)


def test_quiet_keeps_warnings_and_twice_quiet_leaves_them_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """lf32a: -q hid progress and notes but a warning still came, with no way to hide it. As apt, pip
    and git: -q hides progress, notes and results shown for people, a warning stays on stderr; -qq
    (or --quiet --quiet) leaves only errors. Through the one reporter (``Output.warn``), here a
    private key readable by others."""
    keys = tmp_path / "keys"
    assert main(["cvmfs", "keygen", "x.test", "--out", str(keys), "-qq"]) == 0
    assert capsys.readouterr() == ("", "")
    (keys / "x.test.key").chmod(0o644)
    warned = "private key readable by others (mode 0644)"
    for n, quiet in enumerate(([], ["-q"], ["-qq"], ["--quiet", "--quiet"])):
        argv = ["cvmfs", "create", str(tmp_path / f"r{n}"), "--fqrn", "x.test", "--keys", str(keys)]
        assert main([*argv, *quiet]) == 0
        out, err = capsys.readouterr()
        assert (warned in err) == (len(quiet) < 2 and quiet != ["-qq"]), (quiet, err)
        if quiet:
            assert out == "" and err.count("\n") == (1 if quiet == ["-q"] else 0), (quiet, out, err)
        else:
            assert out and err.count("\n") >= 1, (out, err)
    with pytest.raises(SystemExit):
        main(["cvmfs", "create", "--help"])
    assert "-qq: only errors" in " ".join(capsys.readouterr().out.split())


def test_a_command_line_parses_its_area_alone_and_help_lists_them_all() -> None:
    def listed(argv: list[str]) -> set[str]:
        sub = next(a for a in build_parser(argv)._actions if isinstance(a, argparse._SubParsersAction))
        return set(sub.choices)

    assert listed(["site", "build", "--json"]) == {"site"}
    every = set(AREAS)
    assert listed(["--help"]) == listed(["--help", "site"]) == listed(["sit", "build"]) == every
    assert listed(["--hel", "site"]) == listed(["--he", "site"]) == every  # argparse's abbreviations
    assert listed([]) == listed(["--version"]) == every


def test_every_leaf_is_named_by_its_words_not_its_groups_usage_text() -> None:
    """A group with a default subcommand writes its usage over several lines; argparse named the
    leaves after that text: 'release verify --help' and its usage-error hint began "cernvm-build
    release [build] VERSION [options]\\n  cernvm-build release {verify,rebuild,publish} ... verify"."""

    def leaves(parser: argparse.ArgumentParser, words: list[str]) -> list[tuple[list[str], str]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(words, parser.prog)]
        return [x for sub in subs for name, p in dict(sub.choices).items() for x in leaves(p, [*words, name])]

    found = leaves(build_parser(), ["cernvm-build"])
    assert len(found) > 40
    for words, prog in found:
        assert prog == " ".join(words), words


def test_both_entry_points_document_and_use_the_one_exit_code_map() -> None:
    """cernvm-launch lists the same codes in its --help and exits with them (no map of its own)."""
    pytest.importorskip("libvirt")
    from cernvm_build.cli import launch

    text = launch.build_parser().format_help()
    assert all(f"  {code:<4} {meaning}" in text for code, meaning in EXIT_CODES.items())
    with pytest.raises(SystemExit) as e:
        launch.main(["--no-such-flag"])
    assert e.value.code == 2  # a usage error, as for cernvm-build


def test_console_script_runs_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cernvm_build.cli.main", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("cernvm-build ")


def test_every_argument_of_the_release_commands_says_what_it_is() -> None:
    """`release rebuild --help` and `release publish --help` listed VERSION|INDEX|DIR with no word."""
    group = next(a for a in build_parser(["release"])._actions if isinstance(a, argparse._SubParsersAction))
    inner = next(a for a in group.choices["release"]._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("build", "verify", "rebuild", "publish"):
        for action in inner.choices[name]._actions:
            assert action.help, (name, action.dest)


def test_every_leaf_help_shows_an_example_of_itself() -> None:
    """pr19d finding 6: `release verify --help` (the README's archivist step), `release rebuild --help`
    and `release publish --help` had no example and no word on what they check; every other leaf had."""

    def leaves(
        parser: argparse.ArgumentParser, words: list[str]
    ) -> list[tuple[list[str], argparse.ArgumentParser]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(words, parser)]
        return [x for sub in subs for name, p in dict(sub.choices).items() for x in leaves(p, [*words, name])]

    for words, parser in leaves(build_parser(), ["cernvm-build"]):
        text = parser.format_help()
        # a default subcommand ('image [build] PROFILE') is shown without its word
        shown = {" ".join(words), " ".join(w for w in words if w != "build")}
        assert any(f"  {s} " in text for s in shown), " ".join(words)


def test_an_interrupt_says_whether_a_re_run_finishes_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """note19: an interrupt of a long build, publish or mirror said only "interrupted", not that the same
    command run again finishes the job; a preview or a check (whose Ctrl-C is how it ends) says no more."""
    from cernvm_build.cvmfs import publish

    def interrupted(*_a: object, **_kw: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C in the middle of the publish

    monkeypatch.setattr(publish, "publish_tree", interrupted)
    keys, stratum, src = (tmp_path / n for n in ("keys", "srv", "src"))
    src.mkdir()
    assert main(["cvmfs", "keygen", "t.cernvm.test", "--out", str(keys), "-q"]) == 0
    assert main(["cvmfs", "create", str(stratum), "--fqrn", "t.cernvm.test", "--keys", str(keys), "-q"]) == 0
    capsys.readouterr()
    assert main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(keys)]) == 130
    assert capsys.readouterr().err.endswith("interrupted; re-run the same command to finish\n")
    assert app.stopped_line("interrupted", "cernvm-build site serve") == "interrupted"
    assert app.stopped_line("terminated", "cernvm-build mirror sync").startswith("terminated; re-run")
    # the table names commands that exist (a renamed one would silently lose its line)
    leaves = set()
    for name in app.RESUMABLE:
        parser = build_parser()
        for word in name.split():
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices[word]
        leaves.add(parser.prog)
    assert leaves == {f"cernvm-build {n}" for n in app.RESUMABLE}


def test_a_table_into_a_pipe_keeps_its_cells_whole() -> None:
    """`cvmfs tag list | ...` showed root hashes cut to 'c5ab55a8eab668…' at 80 columns (pr20a N6):
    useless for --root-hash. Into a pipe, a table is as wide as its cells, whatever COLUMNS says."""
    code = (
        "from cernvm_build.cli.app import Output\n"
        "Output().table(['tag', 'root hash', 'description'], [['t1', 'ab' * 20 + 'C', 'x' * 120]])\n"
    )
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert "ab" * 20 + "C" in proc.stdout and "x" * 120 in proc.stdout


def test_a_command_line_is_parsed_without_searching_for_translations_of_argparses_words() -> None:
    """argparse looked each of its words up in gettext's catalogues as it built a parser, every time
    searching the locale folders again (~0.1-0.2 ms each, 22 in `site build`'s start, with the import
    of ``locale``): its words stay as written, and none is looked up."""
    code = (
        "import gettext, sys\n"
        "found = []\n"
        "gettext.find = lambda *a, **k: found.append(a) or []\n"
        "from cernvm_build.cli.main import build_parser\n"
        "argv = ['site', 'build', '--json', '--out', 'x']\n"
        "build_parser(argv).parse_args(argv)\n"
        "print(len(found), 'locale' in sys.modules, build_parser(argv).format_usage().split()[0])\n"
    )
    env = {**os.environ, "LANGUAGE": "de_DE:fr", "LANG": "de_DE.UTF-8"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["0", "False", "usage:"]


@pytest.mark.parametrize(
    "variable", ["XDG_CACHE_HOME", "XDG_DATA_HOME", "HOME", "CERNVM_CACHE_DIR", "CERNVM_LAUNCH_HOME"]
)
@pytest.mark.parametrize("place", ["/proc/self", "a-file", "a-file/under"])
def test_a_folder_variable_pointing_where_nothing_can_be_made_is_one_line_naming_it(
    variable: str,
    place: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # XDG_DATA_HOME=/proc/self was a FileNotFoundError traceback (ENOENT stays a bug's elsewhere); a
    # file there said "Not a directory" without naming the variable that put the folder there
    for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "CERNVM_CACHE_DIR", "CERNVM_LAUNCH_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "a-file").write_text("")
    value = place if place.startswith("/") else str(tmp_path / place)
    monkeypatch.setenv(variable, value)

    def make(args: argparse.Namespace, out: app.Output) -> int:
        from cernvm_build import paths

        paths.cache_dir("site")  # what `site build`, `image`, the demo... make first
        (paths.data_root("cernvm-launch")[1] / "images").mkdir(parents=True, exist_ok=True)  # `images add`
        home = os.environ.get("CERNVM_LAUNCH_HOME")
        if home:
            (Path(home) / "images").mkdir(parents=True, exist_ok=True)
        return 0

    assert app.run(_parser_with(make), ["go"]) == 1
    err = capsys.readouterr().err
    assert f"(${variable} is {value!r}): " in err and f"hint: point ${variable} at a folder" in err
    assert err.startswith(f"error: {value}") and len(err.splitlines()) == 2, err


def test_a_missing_file_in_the_cache_stays_a_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path))

    def read(args: argparse.Namespace, out: app.Output) -> int:
        from cernvm_build import paths

        (paths.cache_dir("site") / "gone").read_bytes()
        return 0

    with pytest.raises(FileNotFoundError):
        app.run(_parser_with(read), ["go"])


@pytest.mark.parametrize(
    ("code", "hint"),
    [(errno.ENOSPC, "free some space"), (errno.EDQUOT, "quota"), (errno.EACCES, "check the permissions")],
)
def test_an_error_below_a_cache_folder_that_takes_writes_keeps_its_own_hint(
    code: int, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rv25b: every error but ENOENT below the cache root was blamed on the variable that placed it: a
    full disk said "point $CERNVM_CACHE_DIR at a folder you can write, or unset it" and named the
    root, not the file, and the disk-full hint was lost (98769d8)."""
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path))
    file = tmp_path / "site" / "state.db"

    def write(args: argparse.Namespace, out: app.Output) -> int:
        raise OSError(code, os.strerror(code), str(file))

    assert app.run(_parser_with(write), ["go"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {file}: {os.strerror(code)}") and hint in err, err
    assert "CERNVM_CACHE_DIR" not in err, err


def test_a_temporary_siblings_error_names_what_it_becomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr28a finding 7: `cvmfs export SRC OUT/exp` into a read-only or foreign-owned OUT said
    "error: OUT/.exp.13984.04hmf979.tmp: Permission denied", a name the user never gave (and gone)."""
    temp = tmp_path / f".exp.{os.getpid()}.04hmf979.tmp"

    def write(args: argparse.Namespace, out: app.Output) -> int:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(temp / "a" / "b"))

    assert app.run(_parser_with(write), ["go"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path}/exp/a/b: {os.strerror(errno.EACCES)}"), err


HINT_REMOVE = "hint: remove it, or choose another path\n"


def test_a_file_where_a_folder_is_made_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr28a finding 12: `container --out FILE`, `cvmfs export SRC FILE/x`, $CERNVM_CACHE_DIR a file:
    mkdir(exist_ok=True) raised FileExistsError, a traceback. Another EEXIST stays a bug."""
    (tmp_path / "file").write_text("x")

    def make(args: argparse.Namespace, out: app.Output) -> int:
        (tmp_path / "file").mkdir(parents=True, exist_ok=True)
        return 0

    assert app.run(_parser_with(make), ["go"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path}/file: a file where a folder is expected\n" + HINT_REMOVE

    def exclusive(args: argparse.Namespace, out: app.Output) -> int:
        os.mkdir(tmp_path)  # a folder that exists: not the user's doing
        return 0

    with pytest.raises(FileExistsError):
        app.run(_parser_with(exclusive), ["go"])


def test_the_control_character_patterns_are_compiled_where_a_text_is_shown() -> None:
    """The two control-character classes (with the bidi ranges: ~1.3M instructions each in re's
    compiler) were compiled at import, in the start of every command, ~1 % of a one-page
    ``site build --json``, which shows no name: compiled on first use, and they still clean."""
    code = (
        "import re\n"
        "made = []\n"
        "compile = re._compiler.compile\n"
        "re._compiler.compile = lambda p, flags=0: made.append(p) or compile(p, flags)\n"
        "from cernvm_build.cli.main import build_parser\n"
        "argv = ['site', 'build', '--json', '--out', 'x']\n"
        "build_parser(argv).parse_args(argv)\n"
        "print(sum('\\u202e' in str(p) for p in made))\n"
        "from cernvm_build.termtext import visible\n"
        "print(ascii(visible('a\\x1b\\u202eb\\n')), ascii(visible('a\\tb\\n', one_line=True)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["0", r"'a\\x1b\\u202eb\n' 'a\\x09b\\x0a'"]


def test_columns_0_keeps_the_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # rich took $COLUMNS=0 as a width of 0 and wrote nothing: the command exited 3 in silence (pr28b 8)
    monkeypatch.setenv("COLUMNS", "0")
    assert main(["profiles", "show", "nosuch"]) == 3
    assert "error: no profile 'nosuch'" in capsys.readouterr().err
    assert main(["profiles", "list"]) == 0
    assert "el9" in capsys.readouterr().out


def test_a_working_folder_removed_under_the_command_is_one_line(tmp_path: Path) -> None:
    # `profiles show el9`, `cvmfs export REPO x.tar` in a removed folder: os.getcwd()'s
    # FileNotFoundError, a traceback naming no file (pr28b finding 9)
    gone = tmp_path / "gone"
    gone.mkdir()
    probe = (
        "import os, sys, runpy; os.rmdir(os.getcwd()); sys.argv[1:] = ['profiles', 'show', 'el9']; "
        "runpy.run_module('cernvm_build.cli.main', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        cwd=gone,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PWD": str(gone)},
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"error: {gone}: the current folder no longer exists\n")


@pytest.mark.parametrize("json_mode", [False, True])
@pytest.mark.parametrize("stderr", ["full", "reader left"])
def test_an_error_onto_a_full_stderr_keeps_its_exit_code(json_mode: bool, stderr: str) -> None:
    # `profiles show nosuch 2>/dev/full`: the error line's failed write left run() as an OSError,
    # exit 1 instead of 3 (with --json too, its document already on stdout) (pr28b finding 10); a
    # stderr pipe whose reader left (`2>&1 | true`) was rich's broken-pipe exit, 1 too
    read, write = os.pipe()
    os.close(read)
    with open("/dev/full", "w") if stderr == "full" else os.fdopen(write, "w") as into:
        done = subprocess.run(
            [sys.executable, "-P", "-m", "cernvm_build.cli.main", "profiles", "show", "nosuch"]
            + (["--json"] if json_mode else []),
            stdout=subprocess.PIPE,
            stderr=into,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            timeout=120,
        )
    if stderr == "full":
        os.close(write)
    assert done.returncode == 3
    if json_mode:
        assert json.loads(done.stdout)["exit_code"] == 3


@pytest.mark.parametrize("words", [("profiles", "list"), ("profiles", "list", "--json")])
def test_a_reader_that_left_ends_a_rich_table_as_a_json_document(words: tuple[str, ...]) -> None:
    # `profiles list | head -1`: rich's broken-pipe handler exited 1, the --json path 0 (pr28b 13)
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-m", "cernvm_build.cli.main", *words],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            timeout=120,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")
