"""Front matter: a YAML block between ``---`` lines at the top of a Markdown file."""

from __future__ import annotations

from typing import Any

import yaml

from .. import yamlerror
from ..errors import BuildError, Location

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def split(text: str, file: str) -> tuple[dict[str, Any], str, int]:
    """Return (front matter, body, line number of the body's first line, 1-based)."""
    if not text.startswith("---\n") and not text.startswith("---\r\n"):
        return {}, text, 1
    lines = text.splitlines(keepends=True)
    for i in range(1, len(lines)):
        if lines[i].rstrip("\r\n") in ("---", "..."):
            raw = "".join(lines[1:i])
            body = "".join(lines[i + 1 :])
            return parse(raw, file, first_line=2), body, i + 2
    raise BuildError(
        "front matter is not closed",
        where=Location(file=file, line=1, column=1),
        hint="end the YAML block with a line holding only '---'",
    )


def parse(raw: str, file: str, first_line: int = 1) -> dict[str, Any]:
    try:
        # libyaml's loader when present: the pure-Python one dominates builds of small pages
        meta = yaml.load(raw, Loader=_LOADER)
    except yaml.YAMLError as e:
        problem = yamlerror.describe(e, first_line)
        raise BuildError(
            f"front matter is not valid YAML: {problem.what}",
            where=Location(file=file, line=problem.line or first_line, column=problem.column),
            hint="front matter is YAML: 'key: value' lines; quote values that contain ':' or '#'",
        ) from None
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise BuildError(
            "front matter must be a mapping of keys to values",
            where=Location(file=file, line=first_line),
            hint="write 'title: My page' style lines between the '---' markers",
        )
    return meta
