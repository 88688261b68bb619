"""SHA256SUMS in the format ``sha256sum -c`` reads, and its detached OpenPGP signature."""

from __future__ import annotations

from pathlib import Path

from ..errors import IntegrityError
from ..fsutil import atomic_write
from ..releaseindex import ReleaseArtifact

NAME = "SHA256SUMS"


def render(artifacts: list[ReleaseArtifact] | tuple[ReleaseArtifact, ...]) -> str:
    return "".join(f"{a.sha256}  {a.path}\n" for a in sorted(artifacts, key=lambda a: a.path))


def write(release_dir: Path, artifacts: list[ReleaseArtifact] | tuple[ReleaseArtifact, ...]) -> Path:
    path = release_dir / NAME
    atomic_write(path, render(artifacts).encode())
    return path


def parse(path: Path) -> dict[str, str]:
    """``{relative path: sha256}``; a malformed line is an IntegrityError naming file and line."""
    sums: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise IntegrityError(
                f"{path}:{n}: not a 'sha256  path' line", hint="the file was damaged or edited"
            )
        sums[name] = digest
    return sums
