"""Optional parts of the toolkit, installed as pip extras, and the one-line error when one is missing.

The core (profiles, the CernVM-FS reader, publisher and FUSE client, images, containers) installs
without a compiler. Areas that need more are extras of the ``cernvm-build`` distribution; this table
names the top-level modules each extra brings, and must agree with ``pyproject.toml``
(``tests/packaging/test_extras.py`` checks that it does).
"""

from __future__ import annotations

import importlib.util

from ..errors import MissingExtraError

DISTRIBUTION = "cernvm-build"

#: extra -> the top-level modules it installs (the ones the toolkit imports).
EXTRAS: dict[str, tuple[str, ...]] = {
    "launch": ("libvirt", "paramiko", "requests"),
    "mirror": ("boto3", "botocore", "requests"),
    "site": ("markdown_it", "markdown_it_pyrs", "mdit_py_plugins", "pygments", "requests"),
}


def missing_module(extra: str) -> str | None:
    """The first module of ``extra`` that cannot be found, or None when the extra is installed."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def error(command: str, extra: str) -> MissingExtraError:
    return MissingExtraError(f"`{command}` needs the '{extra}' extra: pip install '{DISTRIBUTION}[{extra}]'")


def extra_for(module: str, prefer: str | None = None) -> str | None:
    """The extra that installs ``module`` (a dotted name; ``prefer`` wins when several do)."""
    top = module.split(".", 1)[0]
    owners = [extra for extra, modules in EXTRAS.items() if top in modules]
    if prefer in owners:
        return prefer
    return owners[0] if owners else None


def from_import_error(err: ImportError, command: str, prefer: str | None = None) -> MissingExtraError | None:
    """The one-line error for an ImportError of a module an extra installs; None for anything else.

    Anything else (a module of the toolkit itself, a module no extra provides) is a bug and keeps
    its traceback.
    """
    if err.name is None:
        return None
    extra = extra_for(err.name, prefer)
    return error(command, extra) if extra else None
