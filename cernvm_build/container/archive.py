"""Deterministic tar files made of a few named members (OCI archive, docker archive).

Members are written in the order given, with owner 0:0, empty owner names, a fixed mtime and fixed
modes, so the same members give the same bytes. Big members (layers) are streamed from files. The
bytes come from the toolkit's one tar writer (``tarwrite``).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import BuildError
from ..tarwrite import TarWriter
from ..tree import DIR, FILE, Entry


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes | None = None  # small member held in memory
    path: Path | None = None  # big member streamed from a file
    is_dir: bool = False


def write_members(out: BinaryIO, members: Iterable[Member], *, mtime: int) -> None:
    tar = TarWriter(out.write, mtime=mtime, where="archive", error=BuildError)
    for m in members:
        if m.is_dir:
            tar.add(Entry(path=m.name, kind=DIR, mode=0o755), _content)
            continue
        size = len(m.data) if m.data is not None else m.path.stat().st_size if m.path is not None else 0
        tar.add(Entry(path=m.name, kind=FILE, mode=0o644, size=size, ref=m), _content)
    tar.end()


def _content(entry: Entry) -> BinaryIO:
    m = entry.ref
    assert isinstance(m, Member)
    if m.data is not None:
        return io.BytesIO(m.data)
    assert m.path is not None
    return open(m.path, "rb")


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
