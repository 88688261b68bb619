"""Debian's checked-hash pycs become timestamp pycs of the tree's epoch: Python imports them with
the source's stat alone (no read of the ``.py`` through CernVM-FS), and an edited source still wins."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
from pathlib import Path

from cernvm_build.osbuild.pycs import timestamp_pycs

EPOCH = 1_700_000_000


def _compiled(folder: Path, name: str, text: str, mode: py_compile.PycInvalidationMode) -> Path:
    source = folder / f"{name}.py"
    source.write_text(text)
    pyc = py_compile.compile(str(source), invalidation_mode=mode, doraise=True)
    assert pyc is not None
    return Path(pyc)


def _flags(pyc: Path) -> int:
    return int.from_bytes(pyc.read_bytes()[4:8], "little")


def _settle(tree: Path) -> None:  # as debian._scrub: every time the epoch
    for p in [tree, *tree.rglob("*")]:
        os.utime(p, (EPOCH, EPOCH), follow_symlinks=False)


def _value(tree: Path, name: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    code = f"import {name}; print({name}.VALUE)"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_a_checked_hash_pyc_is_imported_without_reading_its_source(tmp_path: Path) -> None:
    pyc = _compiled(tmp_path, "mod", "VALUE = 'compiled'\n", py_compile.PycInvalidationMode.CHECKED_HASH)
    assert timestamp_pycs(tmp_path, EPOCH) == 1
    data = pyc.read_bytes()
    assert _flags(pyc) == 0
    assert int.from_bytes(data[8:12], "little") == EPOCH
    assert int.from_bytes(data[12:16], "little") == len("VALUE = 'compiled'\n")
    # same size, same time, other bytes: only a pyc used without reading its source says "compiled"
    (tmp_path / "mod.py").write_text("VALUE = 'SOURCE!!'\n")
    _settle(tmp_path)
    assert _value(tmp_path, "mod") == "compiled\n"
    # an edit in the instance's overlay has another time and size: the source wins
    (tmp_path / "mod.py").write_text("VALUE = 'edited in the overlay'\n")
    assert _value(tmp_path, "mod") == "edited in the overlay\n"


def test_other_pycs_and_linked_sources_are_left_as_they_are(tmp_path: Path) -> None:
    unchecked = _compiled(tmp_path, "a", "VALUE = 1\n", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    stamped = _compiled(tmp_path, "b", "VALUE = 2\n", py_compile.PycInvalidationMode.TIMESTAMP)
    linked = _compiled(tmp_path, "c", "VALUE = 3\n", py_compile.PycInvalidationMode.CHECKED_HASH)
    (tmp_path / "elsewhere.py").write_text("VALUE = 3\n")
    (tmp_path / "c.py").unlink()
    (tmp_path / "c.py").symlink_to(tmp_path / "elsewhere.py")  # its target may lie outside the tree
    before = {p: p.read_bytes() for p in (unchecked, stamped, linked)}
    assert timestamp_pycs(tmp_path, EPOCH) == 0
    assert {p: p.read_bytes() for p in before} == before
