from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.export import export_directory
from cernvm_build.cvmfs.publish import create_repository
from cernvm_build.cvmfs.repository import Repository, SnapshotSpec, open_repository

from .helpers import FQRN


@pytest.fixture(scope="session")
def keyset() -> keymod.KeySet:
    return keymod.generate_keys(FQRN)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory, keyset: keymod.KeySet) -> Path:
    d = tmp_path_factory.mktemp("keys")
    keyset.save(d)
    return d


@pytest.fixture
def stratum(tmp_path: Path, keyset: keymod.KeySet) -> Path:
    s = tmp_path / "stratum"
    create_repository(s, FQRN, keyset, timestamp=int(time.time()))
    return s


@pytest.fixture
def reader(key_dir: Path) -> Callable[..., Repository]:
    """Open a stratum with the reader (full signature chain), optionally pinned."""

    def open_(stratum: Path | str, **snap: str) -> Repository:
        return open_repository(
            stratum,
            fqrn=FQRN,
            public_keys=[key_dir / f"{FQRN}.pub"],
            snapshot=SnapshotSpec(**snap) if snap else None,
        )

    return open_


@pytest.fixture
def export(reader: Callable[..., Repository], tmp_path: Path) -> Callable[..., Path]:
    counter = [0]

    def export_(stratum: Path, **snap: str) -> Path:
        counter[0] += 1
        dest = tmp_path / f"export{counter[0]}"
        with reader(stratum, **snap) as repo:
            export_directory(repo, dest, devices=True)  # the round trip includes device nodes
        return dest

    return export_
