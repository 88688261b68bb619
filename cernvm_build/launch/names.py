"""Instance and cached-image names: safe in libvirt, in file names, in XML and in shell commands."""

from __future__ import annotations

import re

from ..errors import ImageError, UsageError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# A cached image's name is a file name in the cache and a storage volume's: no '/', no leading dot,
# and none of the cache's own side files (NAME.sha256, NAME.json)
#: a user to log in as (``sshUser``, ``user@NAME``, the metadata's ``ssh_user``): it ends up on
#: OpenSSH's command line (``ssh -X``), where one beginning with '-' would be an option
USER_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}"  # "first.last" and "Admin" are users too
_USER = re.compile(USER_PATTERN)
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")


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


def is_user(user: str) -> bool:
    return bool(_USER.fullmatch(user))


def validate_user(user: str, where: str) -> str:
    """Return ``user`` if usable as a login name; else a UsageError naming ``where`` it came from."""
    if is_user(user):
        return user
    raise UsageError(
        f"bad user name {user[:100]!r} in {where}",
        hint="a user name is letters, digits, '_', '.' and '-' (at most 32), not starting with '.' or '-'",
    )


def image_name(name: str, where: str) -> str:
    """``name`` if it can name a cached image; else one ImageError saying so."""
    if _IMAGE_NAME.fullmatch(name) and not name.endswith((".sha256", ".json")):
        return name
    raise ImageError(
        f"{name[:100]!r} cannot name a cached image",
        where=where,
        hint="letters, digits and . _ + - (no '/', not starting with '.', not ending .sha256 or .json);"
        " 'images add FILE --as NAME' names it",
    )
