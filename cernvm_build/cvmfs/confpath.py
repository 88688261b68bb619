"""Paths written into server configuration files (nginx, squid).

Neither format has one escaping rule that every directive honours, so a path goes in only when it
needs none: letters, digits and ``._/+@:-``. Anything else (a space, a quote, a newline that would
start a directive of its own) is refused with the path and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CvmfsError

_PLAIN = re.compile(r"^[A-Za-z0-9._/+@:-]+$")


def plain_path(path: Path, what: str, program: str) -> str:
    """``path`` as text for a ``program`` configuration, or a one-line error naming ``what`` it is."""
    text = str(path)
    if not _PLAIN.match(text):
        raise CvmfsError(
            f"{text}: the {what} path holds characters a {program} configuration cannot carry unescaped",
            hint="use a path of letters, digits and ._/+@:- only",
        )
    return text
