"""Test trees and a file-for-file description of a directory, to compare trees after a round trip."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from pathlib import Path

XATTR = ("user.cernvm.test", b"frozen\xffvalue")


def make_tree(root: Path, *, socket_file: bool = False, fifo: bool = True) -> Path:
    """A small tree with the cases containers must carry: links, odd names, modes, xattrs."""
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "opt" / "sw" / "lib").mkdir(parents=True)
    (root / "etc" / "redhat-release").write_text("Scientific Linux CERN SLC release 4.8 (Beryllium)\n")
    (root / "etc" / "empty.conf").write_bytes(b"")
    tool = root / "usr" / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    os.link(tool, root / "usr" / "bin" / "tool-hardlink")
    su = root / "usr" / "bin" / "su-like"
    su.write_bytes(b"\x7fELF" + bytes(range(256)) * 10)
    su.chmod(0o4755)
    os.symlink("../etc/redhat-release", root / "usr" / "release-link")
    os.symlink("/etc/redhat-release", root / "usr" / "absolute-link")
    os.symlink("sw", root / "opt" / "sw-link")
    (root / "opt" / "sw" / "lib" / "libsw.so").write_bytes(os.urandom(3000) * 100)
    (root / "opt" / "dir with space").mkdir()
    (root / "opt" / "dir with space" / "Ünïcode ñame.txt").write_text("non-ascii\n")
    (root / "opt" / ("long-" * 30)).write_text("a name longer than 100 bytes\n")
    ro = root / "opt" / "read-only"
    ro.mkdir()
    (ro / "inside").write_text("x")
    ro.chmod(0o555)
    try:
        os.setxattr(root / "etc" / "redhat-release", XATTR[0], XATTR[1])
    except OSError:
        pass
    if fifo:
        os.mkfifo(root / "opt" / "pipe")
    if socket_file:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.bind(str(root / "opt" / "sock"))
        finally:
            s.close()
    return root


def describe(root: Path, *, ignore: frozenset[str] = frozenset()) -> dict[str, tuple[object, ...]]:
    """path -> (type, permission bits, sha256 or link target, hard-link group) for every node."""
    out: dict[str, tuple[object, ...]] = {}
    groups: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            if rel.split("/", 1)[0] in ignore:
                continue
            st = os.lstat(p)
            fmt = stat.S_IFMT(st.st_mode)
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISREG(fmt):
                data = hashlib.sha256(p.read_bytes()).hexdigest()
                group = groups.setdefault((st.st_dev, st.st_ino), rel) if st.st_nlink > 1 else None
                out[rel] = ("file", perm, data, group)
            elif stat.S_ISLNK(fmt):
                out[rel] = ("symlink", None, os.readlink(p), None)
            else:
                out[rel] = (stat.filemode(st.st_mode)[0], perm, None, None)
    # hard-link groups are named by their first member in sorted order, whatever os.walk's order
    by_group: dict[object, list[str]] = {}
    for rel, v in out.items():
        if v[3] is not None:
            by_group.setdefault(v[3], []).append(rel)
    for members in by_group.values():
        first = min(members)
        for rel in members:
            out[rel] = (*out[rel][:3], first)
    return out
