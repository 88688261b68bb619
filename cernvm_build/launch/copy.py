"""``scp`` as users know it: ``SOURCE... DEST`` with the remote side ``[user@]NAME:PATH``, ``-r``
for folders, globs on either side (the remote shell expands the remote ones), both directions.

Uploads go file by file over one SSH connection (``mkdir -p`` for the folders, ``cat >`` per file:
the minimal guests have no sftp-server); downloads are one ``tar -c`` in the guest, unpacked here as
data (no absolute paths, ``..`` or links out) into a temporary folder beside the destination; each
source is moved into place once it arrived whole, so a failed copy leaves nothing half-written.
Only the names asked for are accepted from the guest (a guest that sends others is refused before
anything is placed), and an existing folder is merged into, never removed, as scp does.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import shlex
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import SSHError, UsageError
from ..fsutil import scratch_beside
from . import ready, ssh
from .remote import split_user

_GLOB = set("*?[")
_NO_R = "is a folder (copy folders with scp -r)"


def _remote(spec: str) -> tuple[str, str] | None:
    """``[user@]NAME:PATH`` -> (``[user@]NAME``, PATH); a local path (also one with a ``/`` before
    its first ``:``, or an existing file) -> None."""
    head, sep, path = spec.partition(":")
    if not sep or "/" in head or Path(spec).exists():
        return None
    return head, path


def copy(
    conn: Any, sources: list[str], dest: str, *, recursive: bool = False, home: Path | None = None
) -> list[str]:
    """Copy ``sources`` to ``dest`` (all local and dest remote, or the reverse); where they landed.
    ``home``: the launch home, whose instance folder must be the one on record (``ready.target``)."""
    if not sources:
        raise UsageError("scp needs a SOURCE and a DEST")
    remote_srcs = [_remote(s) for s in sources]
    remote_dest = _remote(dest)
    if remote_dest is not None and not any(remote_srcs):
        return _upload(conn, sources, remote_dest, recursive, home)
    if remote_dest is None and all(remote_srcs):
        machines = {r[0] for r in remote_srcs if r}
        if len(machines) > 1:
            raise UsageError(
                "all SOURCEs must be on the same instance", hint="copy from one instance at a time"
            )
        return _download(conn, machines.pop(), [r[1] for r in remote_srcs if r], Path(dest), recursive, home)
    raise UsageError(
        "either every SOURCE is local and DEST is NAME:PATH, or every SOURCE is NAME:PATH and DEST is local",
        hint="e.g. scp -r results analysis:/tmp/   or   scp 'analysis:/tmp/*.root' .",
    )


def _local_sources(sources: list[str], recursive: bool) -> list[Path]:
    paths: list[Path] = []
    for s in sources:
        found = [s] if os.path.lexists(s) or not _GLOB & set(s) else sorted(glob.glob(s))
        if not found or not all(os.path.lexists(f) for f in found):
            raise UsageError(f"no such file: {s}")
        for f in found:
            p = Path(f)
            if p.is_dir() and not recursive:
                raise UsageError(f"{s} is a folder", hint="copy folders with scp -r")
            paths.append(p)
    return paths


def _upload(
    conn: Any, sources: list[str], remote: tuple[str, str], recursive: bool, home: Path | None
) -> list[str]:
    locals_ = _local_sources(sources, recursive)
    user, name = split_user(remote[0])
    target = remote[1] or "."
    client = ready.connect(conn, name, user, home)
    try:
        is_dir = ssh.status(client, f"test -d {shlex.quote(target)}")[0] == 0
        if (len(locals_) > 1 or target.endswith("/")) and not is_dir:
            raise SSHError(
                f"{target} is not a folder on the instance", hint="create it first, or name one file"
            )
        landed = []
        for src in locals_:
            dest = f"{target.rstrip('/') or '/'}/{src.name}" if is_dir else target
            if src.is_dir():
                _put_tree(client, src, dest)
            else:
                ssh.put(client, src, dest)
            landed.append(dest)
        return landed
    finally:
        client.close()


def _put_tree(client: Any, src: Path, dest: str) -> None:
    folders, files = [dest], []
    for root, dirs, names in os.walk(src):
        dirs.sort()
        rel = PurePosixPath(Path(root).relative_to(src).as_posix())
        folders += [str(PurePosixPath(dest) / rel / d) for d in dirs]
        files += [(Path(root) / n, str(PurePosixPath(dest) / rel / n)) for n in sorted(names)]
    code, err = ssh.status(client, "mkdir -p -- " + " ".join(shlex.quote(f) for f in folders))
    if code != 0:
        raise SSHError(f"cannot make {dest} on the instance: {err or f'exit {code}'}", hint="check the path")
    for local, remote_path in files:
        if local.is_symlink() or not local.is_file():
            continue  # as scp -r: links are followed only when they point at files
        ssh.put(client, local, remote_path)


def _remote_pattern(path: str) -> tuple[str, str, str]:
    """(folder, name, raw name) for ``cd FOLDER && tar -c NAME``: the folder is quoted; the name is
    left to the remote shell's globbing when it has glob characters and nothing else it would
    interpret. ``vm:`` and ``vm:.`` name the folder itself: the raw name is ``.``."""
    p = PurePosixPath(path or ".")
    folder, leaf = str(p.parent), p.name or "."
    if _GLOB & set(folder):
        raise UsageError(f"{path}: globs only in the last part of a remote path")
    if _GLOB & set(leaf) and all(c.isalnum() or c in "*?[]-_.+,=@%" for c in leaf):
        return shlex.quote(folder), leaf, leaf
    return shlex.quote(folder), shlex.quote(leaf), leaf


def _wanted(leaf: str) -> Callable[[str], bool]:
    """Which top-level names the guest may send for ``leaf``: the name itself, or for a glob what
    the shell would expand it to (a leading dot only when the pattern has one; ``.`` and ``..``,
    which dash's ``.*`` yields, are dropped in the guest, ``_pick``). bash and dash read ``[^a]`` as
    ``[!a]``, fnmatch as ``^`` or ``a``."""
    if not _GLOB & set(leaf):
        return lambda top: top == leaf
    pattern = leaf.replace("[^", "[!")
    return lambda top: (
        top not in ("", ".", "..")
        and (leaf.startswith(".") or not top.startswith("."))
        and fnmatch.fnmatchcase(top, pattern)
    )


def _pick(leaf: str, raw: str) -> str:
    """Shell code setting ``$@`` to the names ``leaf`` stands for in the guest: a glob's matches
    less ``.`` and ``..`` (tar would send the whole folder, or its parent)."""
    if not _GLOB & set(raw):
        return f"set -- {leaf}; "
    return f'set --; for f in {leaf}; do case "$f" in .|..) ;; *) set -- "$@" "$f";; esac; done; '


def _download(
    conn: Any, machine: str, paths: list[str], dest: Path, recursive: bool, home: Path | None
) -> list[str]:
    user, name = split_user(machine)
    into_dir = dest.is_dir()
    if len(paths) > 1 and not into_dir:
        raise UsageError(f"{dest} is not a folder", hint="copying several files needs a folder as DEST")
    if not dest.parent.is_dir() and not into_dir:
        raise UsageError(f"no such folder: {dest.parent}")
    client = ready.connect(conn, name, user, home)
    moves: list[tuple[Path, Path]] = []
    parent = dest if into_dir else dest.parent
    # pid-named (``..scp.<pid>.<rnd>.tmp``): a copy SIGKILLed mid-transfer left its ``.scp-<rnd>``
    # (the half-copied files) in DEST for ever; the next copy into DEST reclaims a dead one's
    with contextlib.closing(client), scratch_beside(parent / ".scp") as tmp:
        for i, path in enumerate(paths):
            folder, leaf, raw = _remote_pattern(path)
            part = tmp / str(i)
            part.mkdir()
            check = "" if recursive else f'for f; do [ -d "$f" ] && echo "$f: {_NO_R}" >&2 && exit 1; done; '
            # "--": a name is never one of tar's options; a guest file named '--checkpoint-action=exec=…'
            # that '*' matched ran its command as the login user (pr26c 5); nor a folder cd's ('vm:-r/x'
            # was "cd: Illegal option -r")
            command = f'cd -- {folder} || exit 1; {_pick(leaf, raw)}{check}tar -cf - -- "$@"'
            for top in ssh.get_tree(client, command, part, _wanted(raw)):
                moves.append((part / top, dest / top if into_dir and top != "." else dest))
        # every conflict before anything moves: a refusal leaves DEST as it was, not half merged
        problem = next(filter(None, (_conflict(src, final) for src, final in moves)), "")
        if problem:
            raise SSHError(problem, hint="remove it or copy elsewhere; nothing was copied")
        for src, final in moves:
            _place(src, final)
    return [str(final) for _, final in moves]


def _conflict(src: Path, final: Path) -> str:
    """What ``_place`` would refuse in moving ``src`` to ``final`` (a file over a folder, a folder
    over a file, at any depth of a merge), or ""."""
    folder = src.is_dir() and not src.is_symlink()
    if final.is_dir() and not final.is_symlink():
        if not folder:
            return f"cannot copy {src.name} over the folder {final}"
        try:
            children = sorted(src.iterdir())
        except OSError as e:
            return f"cannot read {src}: {e.strerror or e}"
        return next(filter(None, (_conflict(c, final / c.name) for c in children)), "")
    if folder and os.path.lexists(final):
        return f"cannot copy the folder {src.name} over the file {final}"
    return ""


def _place(src: Path, final: Path) -> None:
    """Move ``src`` to ``final`` as scp writes: a folder merges into an existing folder (what was
    there stays), a file replaces a file; a folder never replaces a file, nor a file a folder."""
    folder = src.is_dir() and not src.is_symlink()
    try:
        if folder and final.is_dir() and not final.is_symlink():
            for child in sorted(src.iterdir()):
                _place(child, final / child.name)
            return
        problem = _conflict(src, final)  # checked before anything moved; again, as DEST may change
        if problem:
            raise SSHError(problem, hint="remove it or copy elsewhere")
        os.replace(src, final)
    except OSError as e:
        raise SSHError(
            f"cannot write {final}: {e.strerror or e}", hint="check the folder's permissions"
        ) from None
