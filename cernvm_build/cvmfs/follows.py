"""What a file opened cold makes its reader open next, known from the file itself (issue 13).

The root mount fetches those files ahead in pipelined batches (``fuse.InOrderPrefetcher._follow``),
one round trip for several objects instead of one each, without fetching anything the reader does not
load: the dynamic loader opens a program's DT_NEEDED libraries (and theirs), systemd loads every unit a
unit names as a dependency (and theirs) and the units linked in its ``.wants``/``.requires`` folders.
Each name is resolved in the catalog as the reader resolves it (search path, symbolic links); what
cannot be resolved is left to the reader. Replayed on a Debian boot's opens (``bench/prefetch_replay.py``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from stat import S_IFREG

from .. import elf
from ..errors import CernVMError
from .catalog import DirEntry
from .catalog_rows import FLAG_EXTERNAL

#: a catalog lookup of a path, None if nothing is there (``Revision.lookup_normal``)
Lookup = Callable[[str], "DirEntry | None"]
#: a directory's entries (``Revision.listing``), None if too many
Listing = Callable[[str, int], "list[DirEntry] | None"]

#: where the dynamic loader finds a library by name (ld.so.cache's and its defaults, merged /usr or not);
#: a directory reached through a symbolic link finds nothing, the next one is looked in
LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
)
#: where systemd (as the system manager) finds a unit by name, in its order; runtime folders hold
#: nothing in a repository
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
UNIT_TYPES = (
    ".service",
    ".socket",
    ".target",
    ".mount",
    ".automount",
    ".swap",
    ".path",
    ".timer",
    ".slice",
    ".device",
)
#: the keys naming units that systemd loads with the unit (its dependencies and ordering: systemd
#: loads every unit named there, to build its transaction), not the [Install] ones (used by enable)
UNIT_KEYS = frozenset(
    (
        "Requires",
        "Requisite",
        "Wants",
        "BindsTo",
        "PartOf",
        "Upholds",
        "Conflicts",
        "Before",
        "After",
        "OnFailure",
        "OnSuccess",
        "PropagatesReloadTo",
        "ReloadPropagatedFrom",
        "PropagatesStopTo",
        "StopPropagatedFrom",
        "JoinsNamespaceOf",
        "Sockets",
        "Service",
        "Unit",
        "Slice",
    )
)
#: bytes of a unit file read, at most; entries of a ``.wants`` folder looked at, at most
UNIT_BYTES = 64 << 10
WANTS_MAX = 256
LINK_HOPS = 8


def resolve(lookup: Lookup, path: str) -> DirEntry | None:
    """The entry at ``path`` with symbolic links of its last part followed (up to LINK_HOPS)."""
    path = posixpath.normpath(path)
    for _ in range(LINK_HOPS):
        try:
            e = lookup(path)
        except CernVMError:  # a row not of that path (one through a symbolic link): nothing there
            return None
        if e is None or not e.is_symlink:
            return e
        target = e.symlink
        path = posixpath.normpath(target if target.startswith("/") else f"{posixpath.dirname(path)}/{target}")
    return None


def _whole(e: DirEntry | None) -> bool:
    return e is not None and e.kind == S_IFREG and e.size > 0 and not e.chunks and not e.flags & FLAG_EXTERNAL


def may_load(e: DirEntry) -> bool:
    """A file that may be a dynamically linked program or library (an executable or a ``.so``, whole
    in one object), its header not read yet."""
    return (
        e.size >= 1024
        and (e.mode & 0o111 != 0 or ".so" in e.name)
        and _whole(e)
        and not e.name.endswith((".sh", ".py", ".pl"))
    )


def is_unit(e: DirEntry) -> bool:
    """A systemd unit file in one of UNIT_DIRS."""
    return (
        posixpath.dirname(e.path) in UNIT_DIRS
        and e.name.endswith(UNIT_TYPES)
        and _whole(e)
        and e.size <= UNIT_BYTES
    )


def unit_names(text: str) -> Iterator[str]:
    """The unit names a unit file's dependency and ordering keys give (UNIT_KEYS), in order."""
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip() in UNIT_KEYS:
            for name in value.split():
                if name.endswith(UNIT_TYPES) and "/" not in name:
                    yield name


#: names remembered per mount, at most (libraries resolved; folders of units listed)
KEPT = 4096


class Follower:
    """Resolves the names a file gives as its reader does, through the mounted revision's catalogs;
    what was resolved once is kept for the mount (a revision never changes): each program names
    libc, each unit names a few of the same targets, and a catalog query per name and folder was
    ~2,500 queries for one Debian boot (replayed), ~20 for the folders of units read once."""

    def __init__(self, lookup: Lookup, listing: Listing) -> None:
        self.lookup = lookup
        self.listing = listing
        self._libraries: dict[str, DirEntry | None] = {}  # by name, in LIBRARY_DIRS
        self._folders: dict[str, dict[str, DirEntry]] = {}  # a folder's entries by name

    def files(self, e: DirEntry, pread: Callable[[int, int], bytes]) -> list[DirEntry]:
        """What ``e``'s reader loads next (``libraries`` or ``units``), read with ``pread``."""
        if is_unit(e):
            return self.units(e, pread(0, UNIT_BYTES).decode(errors="replace"))
        return self.libraries(e, pread)

    def libraries(self, e: DirEntry, pread: Callable[[int, int], bytes]) -> list[DirEntry]:
        """The files the dynamic loader loads for ``e`` (DT_NEEDED, through its run path, then
        LIBRARY_DIRS); none if ``e`` is no ELF file or names none."""
        try:
            info = elf.parse(pread)
        except (ValueError, OverflowError):  # a script, a damaged file
            return []
        here = posixpath.dirname(e.path)
        dirs = [d.replace("${ORIGIN}", here).replace("$ORIGIN", here) for d in info.runpath]
        found = []
        for name in info.needed:
            if "/" in name:
                continue
            lib = next(filter(None, (self._whole_at(f"{d}/{name}") for d in dirs)), None)
            if lib is None:
                lib = self._library(name)
            if lib is not None:
                found.append(lib)
        return found

    def _library(self, name: str) -> DirEntry | None:
        if name in self._libraries:
            return self._libraries[name]
        lib = next(filter(None, (self._whole_at(f"{d}/{name}") for d in LIBRARY_DIRS)), None)
        if len(self._libraries) < KEPT:
            self._libraries[name] = lib
        return lib

    def _whole_at(self, path: str) -> DirEntry | None:
        e = resolve(self.lookup, path)
        return e if e is not None and _whole(e) else None

    def units(self, e: DirEntry, text: str) -> list[DirEntry]:
        """The unit files systemd loads with unit ``e`` (its contents ``text``): those it names
        (``unit_names``; an instance by its template when it has no file of its own), the unit a
        ``.socket``, ``.timer`` or ``.path`` triggers by default, and the ones linked in its
        ``.wants`` and ``.requires`` folders."""
        names = list(unit_names(text))
        stem, _, kind = e.name.rpartition(".")
        if kind in ("socket", "timer", "path") and not any(n.startswith(f"{stem}.") for n in names):
            names.append(f"{stem}.service")
        for d in UNIT_DIRS:
            for sub in (".wants", ".requires"):
                linked = self._folder(d).get(e.name + sub)
                if linked is not None and linked.is_dir:
                    names += [n for n in self._folder(linked.path) if n.endswith(UNIT_TYPES)]
        found = []
        for name in names:
            unit = self.unit(name)
            if unit is not None:
                found.append(unit)
        return found

    def unit(self, name: str) -> DirEntry | None:
        """Unit ``name``'s file as systemd finds it (the first of UNIT_DIRS that has it; an instance
        ``a@b.service`` by its template ``a@.service``); None if masked (linked to /dev/null) or
        absent. The folders' listings are read once."""
        tries = [name]
        if "@" in name:
            tries.append(f"{name[: name.index('@') + 1]}{name[name.rindex('.') :]}")
        for n in tries:
            for d in UNIT_DIRS:
                e = self._folder(d).get(n)
                if e is None:
                    continue
                if e.is_symlink:
                    target = e.symlink if e.symlink.startswith("/") else f"{d}/{e.symlink}"
                    e = resolve(self.lookup, target)
                return e if e is not None and _whole(e) and e.size <= UNIT_BYTES else None
        return None

    def _folder(self, path: str) -> dict[str, DirEntry]:
        """``path``'s entries by name (empty if it is no folder or too large), listed once."""
        kept = self._folders.get(path)
        if kept is None:
            try:
                kept = {c.name: c for c in self.listing(path, WANTS_MAX * 4) or ()}
            except CernVMError:  # no such folder (or one through a symbolic link)
                kept = {}
            if len(self._folders) < KEPT:
                self._folders[path] = kept
        return kept
