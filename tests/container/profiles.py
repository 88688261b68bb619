"""The profile the container tests build from: a local repository (its server is never asked; the
tests pass ``--source``), OCI output, one bootloader branch per test file."""

from __future__ import annotations

from pathlib import Path


def local_profile(
    fqrn: str, key: Path, *, branch: str, tag: str | None = None, path: str = "/", description: str = ""
) -> str:
    snapshot = f"  snapshot: {{tag: {tag}}}\n" if tag else ""
    return (
        "extends: base\n"
        f'description: "{description or branch}"\n'
        "os: {release: 9, distribution: AlmaLinux}\n"
        "cvmfs:\n"
        f"  repository: {fqrn}\n"
        f"  path: {path}\n"
        "  servers: !replace [http://127.0.0.1:9/cvmfs/@fqrn@]\n"
        f"  public_keys: !replace [{key}]\n"
        f"{snapshot}"
        f"bootloader: {{branch: {branch}}}\n"
        "container:\n"
        "  formats: !replace [oci]\n"
    )


def publish_lines(cli: str, fqrn: str, work: Path) -> str:
    """Shell lines that make keys and a repository in ``work`` and publish ``work/tree`` into it (the
    full-disk tests' setup inside their mount namespace; exit 98/97/96 name the step that failed)."""
    return (
        f"{cli} cvmfs keygen {fqrn} --out {work}/keys -q || exit 98\n"
        f"{cli} cvmfs create {work}/repo --fqrn {fqrn} --keys {work}/keys -q || exit 97\n"
        f"{cli} cvmfs publish {work}/repo {work}/tree --keys {work}/keys -q || exit 96\n"
    )
