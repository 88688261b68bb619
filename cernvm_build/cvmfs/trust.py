"""Which master public keys a repository is verified with, when the user names none.

For a local Stratum folder: ``<fqrn>.pub`` or ``*.pub`` in ``<dir>/../keys/`` (the fixture layout),
``<dir>/keys/`` or ``<dir>/..``; everywhere: ``$CVMFS_KEYS_DIR/<fqrn>.pub`` and
``/etc/cvmfs/keys/<fqrn>.pub`` (where the real client keeps them). Stdlib only, like the reader.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import CvmfsError
from .repository import check_local_folder, local_fqrn


def default_keys(source: str, fqrn: str | None) -> list[Path]:
    """The keys found for ``source`` (a Stratum URL or folder), possibly none."""
    dirs: list[Path] = []
    if not source.startswith(("http://", "https://")):
        d = Path(source)
        if (d / "repo").is_dir():
            d = d / "repo"
        dirs += [d.parent / "keys", d / "keys", d.parent]
        fqrn = fqrn or local_fqrn(d) or (d.parent.name if d.name == "repo" else d.name)
    if os.environ.get("CVMFS_KEYS_DIR"):
        dirs.append(Path(os.environ["CVMFS_KEYS_DIR"]))
    dirs.append(Path("/etc/cvmfs/keys"))
    for d in dirs:
        if fqrn and (d / f"{fqrn}.pub").is_file():
            return [d / f"{fqrn}.pub"]
    for d in dirs[:2]:
        if d.is_dir() and d.name == "keys":
            found = sorted(d.glob("*.pub"))
            if found:
                return found
    return []


def keys_to_verify(source: str, fqrn: str | None, given: Sequence[Path], *, verify: bool) -> list[Path]:
    """``given``, else the default keys; a CvmfsError when verifying and none is found."""
    if given or not verify:
        return list(given)
    found = default_keys(source, fqrn)
    if not found:
        # a typo in the path is said so, not "no public key found". Only here: a key found (in
        # $CVMFS_KEYS_DIR, /etc/cvmfs/keys) verifies what --cache holds of a folder gone, or a --server
        check_local_folder(source)
        raise CvmfsError(
            f"{source}: no public key found to verify the repository",
            hint="pass --key PATH (the master public key, <fqrn>.pub), or --no-verify",
        )
    return found
