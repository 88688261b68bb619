"""argparse types for the inputs a command line names: a file or folder that is not there is one
``InputMissing`` line, exit 2 in every command, found while the line is parsed (before a repository
is opened, libvirt reached or a build begun). It was 2, 3, 5, 7 or 8 by the command's area.

What is named inside an input (a profile's ``extends``, a configuration's key file) keeps its file's
error and exit code, with that file's line; a SOURCE that may be read from ``--cache`` when its folder
is gone is checked by the reader (``cvmfs.repository``), which raises the same error.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import InputMissing

#: False while a line asking for ``--help`` is parsed (``unchecked``)
_checking = True


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Inputs taken as named, not looked for: ``--help`` prints help and exits 0 whatever else the line
    holds (argparse converts a positional before it reaches a ``--help`` after it, and a missing one
    was the missing-file error, exit 2)."""
    global _checking
    _checking = False
    try:
        yield
    finally:
        _checking = True


def _there(text: str, what: str) -> Path:
    if _checking and not os.path.lexists(text):
        raise InputMissing(text, what)
    return Path(text)


def existing_file(text: str) -> Path:
    """A file to read."""
    return _there(text, "file")


def existing_folder(text: str) -> Path:
    """A folder to read (or to mount on)."""
    return _there(text, "folder")


def existing_path(text: str) -> Path:
    """A file or a folder to read."""
    return _there(text, "file or folder")


#: a word that begins as a URL does (``s3://``, and ``s3:/b`` or ``S3://b`` mistyped): its command
#: judges it, and says what a mistyped one should be (``cvmfs publish``'s "not an s3:// URL")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")


def local_or_url(text: str) -> str:
    """A URL, taken as it is, or a local file or folder that must be there."""
    if _URL.match(text):
        return text
    _there(text, "file or folder")
    return text


def local_url_or_stdin(text: str) -> str:
    """``local_or_url``, or ``-`` for stdin (where the command reads it; elsewhere ``-`` is a file
    name, which must be there)."""
    return text if text == "-" else local_or_url(text)


def name_or_path(suffixes: tuple[str, ...]) -> Callable[[str], str]:
    """A name (a profile, a release version), or a path, which must be there: a word holding ``/`` or
    ending in one of ``suffixes``. A name not known stays its area's error (it lists the known ones)."""

    def parse(text: str) -> str:
        # a path: '~/p.yaml' quoted (or after '=') too, which the profile's resolver expands
        if "/" in text or text.endswith(suffixes):
            _there(os.path.expanduser(text), "file or folder")
        return text

    return parse


#: PROFILE: a name (profiles list) or a YAML file
profile_ref = name_or_path((".yaml", ".yml"))
#: VERSION|INDEX|DIR of the release commands
release_ref = name_or_path((".json",))
#: cernvm-launch's --iso: a cached image's name (``images add`` keeps `tiny.hdd` as it was named),
#: or a path, a word holding '/'
image_ref = name_or_path(())


def present(text: str) -> str:
    """A file or folder that must be there, kept as the text given (for commands that take a str)."""
    _there(text, "file or folder")
    return text
