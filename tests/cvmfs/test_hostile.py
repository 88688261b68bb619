"""Hostile repositories (issue 12, reader side): every consumer refuses them with one line, in
bounded memory and time, writing nothing outside its output."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.cvmfs.repository import open_repository
from tests.support import hostile

SMALL = [name for name, case in hostile.CASES.items() if not case.big]


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> hostile.Repo:
    return hostile.publish_base(tmp_path_factory.mktemp("hostile-base"))


@pytest.mark.parametrize("name", SMALL)
def test_corpus_is_correctly_signed(name: str, base: hostile.Repo, tmp_path: Path) -> None:
    """Every hostile repository passes the signature chain: the reader must defend by itself."""
    repo = hostile.build_case(name, tmp_path / name, base)
    with open_repository(repo.stratum, fqrn=repo.fqrn, public_keys=[repo.pub]) as r:
        assert r.manifest is not None
        assert r.manifest.root_hash != base_root(base)


def base_root(base: hostile.Repo) -> str:
    from cernvm_build.cvmfs import manifest

    return manifest.parse((base.stratum / ".cvmfspublished").read_bytes()).root_hash
