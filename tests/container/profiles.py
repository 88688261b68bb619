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
