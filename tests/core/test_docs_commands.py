"""The commands README.md and docs/*.md show are the CLI's: a new user copies them as written.

Every ``cernvm-build``/``cernvm-launch`` line of a README code block is parsed by the real parser
(a renamed flag or command fails here, not on the user's machine), and every command the prose names
in backticks (`` `cernvm-launch scp` ``) is a command, its ``--flags`` that command's. Placeholders
(URL, KEYID) are plain arguments to argparse, so nothing runs.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import re
import shlex
from pathlib import Path

import pytest

from cernvm_build.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
#: README, docs/ and the cvmfs.io pages the toolkit ships (a guide's command is copied as a README's is)
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "cernvm_build/data/site/content").rglob("*.md")),
]
PROGRAMS = ("cernvm-build", "cernvm-launch")
SEPARATORS = {"&&", "||", "|", ";", ">", ">>", "2>", "<"}


def _parser(program: str) -> argparse.ArgumentParser:
    if program == "cernvm-build":
        return build_parser()
    launch = pytest.importorskip("cernvm_build.cli.launch", reason="needs the 'launch' extra")
    parser: argparse.ArgumentParser = launch.build_parser()
    return parser


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of the file's fenced code blocks, a ``\\`` continuation joined to its line."""
    out: list[tuple[int, str]] = []
    fenced = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        start, text = pending if pending else (number, "")
        text += line
        if text.endswith("\\"):
            pending = (start, text[:-1] + " ")
            continue
        pending = None
        out.append((start, text))
    return out


def _commands(line: str) -> list[tuple[str, list[str]]]:
    """Each ``cernvm-*`` command of a shell line (several with ``&&``, one after ``echo x |``)."""
    if not re.search(r"(?<![\w/-])cernvm-(?:build|launch) ", line):
        return []  # a diagram's line (ARCHITECTURE): not shell
    words = shlex.split(line, comments=True)
    found = []
    for i, word in enumerate(words):
        if word in PROGRAMS:
            args = []
            for arg in words[i + 1 :]:
                if arg in SEPARATORS:
                    break
                args.append(arg)
            found.append((word, args))
    return found


def _code_commands() -> list[tuple[str, str, list[str]]]:
    return [
        (f"{path.name}:{number}", program, args)
        for path in DOCS
        for number, line in _code_lines(path)
        for program, args in _commands(line)
    ]


def _ids(value: object) -> str:
    return value if isinstance(value, str) else ""


@pytest.mark.parametrize(("where", "program", "args"), _code_commands(), ids=_ids)
def test_every_command_of_a_code_block_parses(
    where: str, program: str, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cernvm_build.cli import inputs

    # the examples' files (my-el9.yaml, keys/) are examples: the line is parsed, not its files looked up
    monkeypatch.setattr(inputs, "_there", lambda text, what: Path(text))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            _parser(program).parse_args(args)
        except SystemExit as e:
            assert not e.code, f"{where}: {program} {shlex.join(args)}: {err.getvalue().strip()}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _prose_mentions() -> list[tuple[str, str, list[str]]]:
    out = []
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for program, rest in re.findall(r"`(cernvm-build|cernvm-launch) ([^`]+)`", line):
                out.append((f"{path.name}:{number}", program, rest.split()))
    return out


def test_every_command_the_prose_names_exists() -> None:
    """A command named in running text (`` `cernvm-launch copy` `` once, for ``scp``: pr24c finding 1)
    is one of the CLI's, and its ``--flags`` are that command's."""
    parsers = {program: _parser(program) for program in PROGRAMS}
    wrong = []
    for where, program, words in _prose_mentions():
        parser = parsers[program]
        for word in words:
            choices = _subparsers(parser)
            # `image el9`, `release V`: the default command's; not a near miss of a subcommand
            # (`release verfy` read as a release named so, and no misspelt command was found, rv33a)
            if (
                word not in choices
                and "build" in choices
                and not word.startswith("-")
                and not difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
            ):
                parser = choices["build"]
                break
            if not choices or not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            if word not in choices:
                wrong.append(f"{where}: {program} {word}: no such command")
                break
            parser = choices[word]
        options = _options(parser)
        for word in words:
            flag = word.split("=")[0].rstrip(",.")
            flag = re.sub(r"^-([a-zA-Z])\1+$", r"-\1", flag)  # -vv: -v twice
            if re.fullmatch(r"--?[a-zA-Z][\w-]*", flag) and flag not in options:
                wrong.append(
                    f"{where}: {program} {' '.join(words)}: {flag} is not an option of {parser.prog}"
                )
    assert not wrong, "\n".join(wrong)
