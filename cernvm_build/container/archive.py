"""Deterministic tar files made of a few named members (OCI archive, docker archive).

Members are written in the order given, with owner 0:0, empty owner names, a fixed mtime and fixed
modes, so the same members give the same bytes. Big members (layers) are streamed from files.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_COPY = 1 << 20


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes | None = None  # small member held in memory
    path: Path | None = None  # big member streamed from a file
    is_dir: bool = False


def _info(name: str, size: int, mtime: int, is_dir: bool) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name + "/" if is_dir else name)
    ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    ti.mode = 0o755 if is_dir else 0o644
    ti.size = 0 if is_dir else size
    ti.mtime = mtime
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def write_members(out: BinaryIO, members: Iterable[Member], *, mtime: int) -> None:
    for m in members:
        if m.is_dir:
            out.write(_info(m.name, 0, mtime, True).tobuf(tarfile.PAX_FORMAT, "utf-8"))
            continue
        if m.data is not None:
            out.write(_info(m.name, len(m.data), mtime, False).tobuf(tarfile.PAX_FORMAT, "utf-8"))
            out.write(m.data)
            size = len(m.data)
        else:
            assert m.path is not None
            size = m.path.stat().st_size
            out.write(_info(m.name, size, mtime, False).tobuf(tarfile.PAX_FORMAT, "utf-8"))
            with open(m.path, "rb") as f:
                shutil.copyfileobj(f, out, _COPY)
        out.write(b"\0" * (-size % tarfile.BLOCKSIZE))
    out.write(b"\0" * (tarfile.BLOCKSIZE * 2))


def directory_members(root: Path) -> list[Member]:
    """Every directory and file under ``root``, sorted, as members (for tarring an OCI layout)."""
    members: list[Member] = []

    def walk(d: Path, prefix: str) -> None:
        for p in sorted(d.iterdir(), key=lambda p: p.name.encode()):
            rel = prefix + p.name
            if p.is_dir():
                members.append(Member(rel, is_dir=True))
                walk(p, rel + "/")
            else:
                members.append(Member(rel, path=p))

    walk(root, "")
    return members
