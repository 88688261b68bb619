"""CernVM-FS in Python: read, verify, pin, serve and mount repositories (the publisher lives beside).

The reader core (everything the reader and the FUSE mount import) uses only the standard library, so
it runs inside the μCernVM initrd. The publisher modules need ``cryptography`` and are never imported
from here: import them explicitly (``cernvm_build.cvmfs.publish`` ...).

    from cernvm_build.cvmfs import open_repository, SnapshotSpec
    with open_repository("http://host/cvmfs/sft.cern.ch", public_keys=[Path("sft.cern.ch.pub")]) as repo:
        for entry in repo.walk("/"):
            ...
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import Any

    from .catalog import Chunk, DirEntry
    from .history import Tag
    from .manifest import Manifest
    from .repository import Repository, SnapshotSpec, open_repository

__all__ = ["Chunk", "DirEntry", "Manifest", "Repository", "SnapshotSpec", "Tag", "open_repository"]

_HOMES = {
    "Chunk": "catalog",
    "DirEntry": "catalog",
    "Tag": "history",
    "Manifest": "manifest",
    "Repository": "repository",
    "SnapshotSpec": "repository",
    "open_repository": "repository",
}


def __getattr__(name: str) -> Any:
    # Lazy, so importing one submodule (e.g. in the initrd) does not pull in the rest.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
