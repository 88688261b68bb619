"""Instance names: safe in libvirt, in file names, in XML and in shell commands."""

from __future__ import annotations

import re

from ..errors import UsageError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def validate_name(name: str) -> str:
    """Return ``name`` if usable as an instance name; else a UsageError saying which character is wrong."""
    if _NAME.fullmatch(name):
        return name
    if not name:
        problem = "is empty"
    elif len(name) > 63:
        problem = "is longer than 63 characters"
    elif not name[0].isascii() or not name[0].isalnum():
        problem = f"starts with {name[0]!r}"
    else:
        bad = next(c for c in name if not (c.isascii() and (c.isalnum() or c in "_.-")))
        problem = "contains a space" if bad == " " else f"contains {bad!r}"
    raise UsageError(
        f"bad instance name {name!r}: {problem}",
        hint="use letters, digits, '-', '_' and '.' (at most 63, starting with a letter or digit)",
    )
