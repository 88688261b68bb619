"""SHA256SUMS in the format ``sha256sum -c`` reads, and its detached OpenPGP signature."""

from __future__ import annotations

from pathlib import Path

from ..errors import IntegrityError, utf8_text
from ..fsutil import TooLarge, atomic_write, read_capped
from ..releaseindex import ReleaseArtifact

NAME = "SHA256SUMS"
#: the most of a SHA256SUMS read: a line is ~150 bytes, so this is ~100,000 artifacts
MAX_SUMS = 16 << 20


def render(artifacts: list[ReleaseArtifact] | tuple[ReleaseArtifact, ...]) -> str:
    return "".join(f"{a.sha256}  {a.path}\n" for a in sorted(artifacts, key=lambda a: a.path))


def write(release_dir: Path, artifacts: list[ReleaseArtifact] | tuple[ReleaseArtifact, ...]) -> Path:
    path = release_dir / NAME
    atomic_write(path, render(artifacts).encode())
    return path


def parse(path: Path) -> dict[str, str]:
    """``{relative path: sha256}``; a malformed line is an IntegrityError naming file and line. Read
    as ``sha256sum -c`` would judge it: a name listed twice (the last line would otherwise win over a
    wrong first one) and CR line ends are refused, as is text that is not UTF-8."""
    try:
        data = read_capped(path, MAX_SUMS)  # a huge file was read whole, and copied to decode it
    except TooLarge as e:
        raise IntegrityError(f"{path}: {e.strerror}", hint="the file was damaged or edited") from None
    except OSError as e:  # a FIFO or a folder (not a regular file), no permission
        raise IntegrityError(
            f"{path}: cannot read: {e.strerror}", hint="the file was damaged or edited"
        ) from None
    text = utf8_text(data, str(path), "the file was damaged or edited", IntegrityError)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    sums: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or "\r" in line:
            raise IntegrityError(
                f"{path}:{n}: not a 'sha256  path' line", hint="the file was damaged or edited"
            )
        if name in sums:
            raise IntegrityError(
                f"{path}:{n}: '{name[:200]}' is listed a second time", hint="the file was damaged or edited"
            )
        sums[name] = digest
    return sums
