"""Where the toolkit finds its data and keeps its caches.

The data the toolkit ships (profiles, init fragments and boot menus, launch templates, the cvmfs.io
site, the demo OS overlay) lives inside the package under ``cernvm_build/data/<area>`` and is found with
``importlib.resources``, so a checkout, an editable install and a wheel read the same files.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

#: The areas under ``cernvm_build/data/``.
DATA_AREAS = ("profiles", "bootloader", "launch", "site", "demo", "os")


def package_dir() -> Path:
    """The directory of the ``cernvm_build`` package (the initrd copies its modules from here)."""
    return Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped data of one area: ``profiles``, ``bootloader``, ``launch``, ``site`` or ``demo``."""
    if name not in DATA_AREAS:
        raise ValueError(f"unknown data area {name!r} (one of {', '.join(DATA_AREAS)})")
    from importlib import resources  # here: most commands are given their data's folder (--site …)

    root = resources.files("cernvm_build").joinpath("data", name)
    # Builders copy trees and hand directories to jinja2 and cpio, so the data must be real files.
    # Wheels are always unpacked; only a zipped install (zipimport) would land here.
    if not isinstance(root, Path):
        raise RuntimeError(f"cernvm_build is installed as a zip ({root}); install it unpacked (pip/pipx do)")
    return root


def cache_root() -> tuple[str, Path]:
    """The cache root and the variable that placed it: ``$CERNVM_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/cernvm-build``, else ``$HOME/.cache/cernvm-build``."""
    root = os.environ.get("CERNVM_CACHE_DIR")
    if root:
        return "CERNVM_CACHE_DIR", Path(root)
    return _xdg("XDG_CACHE_HOME", ".cache", "cernvm-build")


def data_root(name: str) -> tuple[str, Path]:
    """``$XDG_DATA_HOME/name``, else ``$HOME/.local/share/name``, and the variable that placed it."""
    return _xdg("XDG_DATA_HOME", ".local/share", name)


def launch_root() -> tuple[str, Path]:
    """The launch home a variable places and that variable: ``$CERNVM_LAUNCH_HOME`` (``~`` expanded;
    it may be relative: ``launch.instances.default_home`` refuses that), else ``data_root``'s
    ``cernvm-launch``. The one rule of ``default_home`` (which also knows the system daemon's folder and
    a legacy ``~/.cernvm``, no variable's) and ``variable_behind``."""
    value = os.environ.get("CERNVM_LAUNCH_HOME")
    if not value:
        return data_root("cernvm-launch")
    if value == "~" or value.startswith("~/"):
        # ``home``'s rule: expanduser takes any $HOME, and with an empty one '~/vms' was '/vms'
        return "CERNVM_LAUNCH_HOME", home() / value[2:]
    return "CERNVM_LAUNCH_HOME", Path(os.path.expanduser(value))


def _xdg(variable: str, default: str, name: str) -> tuple[str, Path]:
    xdg = os.environ.get(variable, "")
    if os.path.isabs(xdg):
        return variable, Path(xdg) / name
    # the XDG base directory spec: a relative one is invalid and ignored (a relative $XDG_CACHE_HOME
    # was used, and the cache landed in ./rel/cernvm-build of whatever folder the command ran in)
    return "HOME", home() / default / name


def home() -> Path:
    """The user's home folder: ``$HOME`` when it is an absolute path, else the password database's.

    ``Path.home()`` takes any ``$HOME``: an empty one (``env HOME= ...``) put the cache in
    ``/.cache`` and a relative one in ``./rel/.cache`` of whatever folder the command ran in."""
    value = os.environ.get("HOME", "")
    if os.path.isabs(value):
        return Path(value)
    import pwd

    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        from .errors import UsageError

        raise UsageError(
            f"no home folder: $HOME {value[:200]!r} is not an absolute path and user {os.getuid()} has no"
            " entry in the password database",
            hint="set $HOME to the full path of your home folder (or $XDG_CACHE_HOME and $XDG_DATA_HOME)",
        ) from None


def cache_dir(*parts: str) -> Path:
    """A folder under the cache root (``cache_root``), made if missing."""
    path = cache_root()[1].joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def variable_behind(path: str, errno_: int | None) -> tuple[str, Path] | None:
    """The environment variable that placed the toolkit's own folder (the cache root, the launch
    home) ``path`` failed at, and that folder; None when ``path`` is none of them, above or below.

    Making such a folder where the variable points (``/proc``, a file, a read-only mount) fails in
    ways no code can prevent: the user's answer is the variable. A missing file below a folder that
    exists is not, unless that folder is on a file system that holds no files: that stays the code's
    bug (``cli.app`` lets it be a traceback). Nor is another error below a folder that takes writes
    (a full disk, a file of root's in the cache): its own hint, naming the file (``_unwritable``).
    """
    # (a relative launch home is refused by ``default_home`` before anything is made)
    roots = [cache_root(), launch_root()]
    failed = Path(path)
    for variable, root in roots:
        if not root.is_absolute():
            continue
        if root == failed or (failed in root.parents and not root.is_dir()):
            return variable, root  # making the folder itself, or a folder above it, failed
        if root in failed.parents and (
            not root.is_dir() or _holds_no_files(root) or _unwritable(root, errno_)
        ):
            return variable, root
    return None


def _unwritable(folder: Path, errno_: int | None) -> bool:
    """The folder itself refuses writes (a read-only mount, a folder not the user's): the variable is
    the answer. A full disk, a quota or one file's permissions below a folder that takes writes are
    not: they keep their own hint, naming the file (``cli.app``)."""
    return errno_ != errno.ENOENT and not os.access(folder, os.W_OK | os.X_OK)


def _holds_no_files(folder: Path) -> bool:
    """A file system of no blocks (``/proc``, ``/sys``): making a folder in it is ENOENT, which
    elsewhere is a file the code expected and did not find."""
    try:
        return os.statvfs(folder).f_blocks == 0
    except OSError:
        return False
