"""The corpus of broken profiles: each gives its one precise error, in the API and in the real CLI.

Each file in broken/ starts with ``# expect: <file>:<line>:<col>: <key>: <text>``: the first error must
start with that location (file in broken/ or in profiles/) and key, and contain the text, in which
``{broken}`` and ``{profiles}`` stand for those folders.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.paths import data_dir
from cernvm_build.profile.yamlnodes import display

BROKEN = Path(__file__).parent / "broken"
CASES = sorted(BROKEN.glob("*.yaml"))
EXPECT = re.compile(r"# expect: (?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<key>[^:]*): (?P<text>.+)")


def expectation(path: Path) -> tuple[str, str, str]:
    """(location prefix, key, text) from the file's first line."""
    m = EXPECT.fullmatch(path.read_text().splitlines()[0])
    assert m, f"{path.name}: first line must be '# expect: file:line:col: key: text'"
    file = BROKEN / m["file"] if (BROKEN / m["file"]).exists() else data_dir("profiles") / m["file"]
    # {broken} and {profiles} stand for those folders as messages show them (relative to the cwd)
    text = m["text"].replace("{broken}", display(BROKEN))
    text = text.replace("{profiles}", display(data_dir("profiles")))
    return f"{display(file)}:{m['line']}:{m['col']}", m["key"], text


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 20


@pytest.fixture(scope="module")
def cli_run() -> tuple[int, str]:
    """The real CLI, in a subprocess, validating the whole corpus at once (one start-up, not 40)."""
    res = subprocess.run(
        [sys.executable, "-m", "cernvm_build.cli.main", "profiles", "validate", *map(str, CASES)],
        capture_output=True,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "COLUMNS": "400", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=120,
    )
    return res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize("path", CASES, ids=[c.stem for c in CASES])
def test_broken_profile_gives_its_one_line_error(path: Path, cli_run: tuple[int, str]) -> None:
    where, key, text = expectation(path)
    errors = profile.check(path).errors
    assert errors, "no error"
    first = str(errors[0])
    assert first.startswith(f"{where}: {key}: " if key else f"{where}: "), first
    assert text in first
    assert "\n" not in first
    assert errors[0].hint
    with pytest.raises(profile.ProfileError):
        profile.load(path)

    returncode, output = cli_run
    assert returncode == 3, output
    assert "Traceback" not in output
    line = next((ln for ln in output.splitlines() if where in ln), None)
    assert line is not None, output
    assert (f"{where}: {key}:" if key else where) in line and text in line
