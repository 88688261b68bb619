"""A context named by a path or a file:// URL that cannot be read: one line with what to do (rv34a: a
folder, or a file:// URL of a missing file, was 'cannot read user data: Is a directory' without a hint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.errors import ConfigFileError
from cernvm_build.launch.contextsrc import read_context


@pytest.mark.parametrize(
    ("name", "why", "hint"),
    [
        ("folder", "is a folder, not a file", "name the user-data file itself"),
        ("file:missing.txt", "no such file", "check the path"),
    ],
)
def test_an_unreadable_local_context_says_what_to_do(tmp_path: Path, name: str, why: str, hint: str) -> None:
    (tmp_path / "folder").mkdir()
    source = (
        f"file://{tmp_path}/{name.removeprefix('file:')}"
        if name.startswith("file:")
        else str(tmp_path / name)
    )
    with pytest.raises(ConfigFileError) as e:
        read_context(source)
    assert e.value.message == f"cannot read user data: {why}"
    assert str(e.value.where) == source and hint in (e.value.hint or "")
