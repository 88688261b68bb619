"""Every test gets its own ``$CERNVM_CACHE_DIR`` (see ``tests.support.linked_cache``).

Module- or session-scoped fixtures that build or read repositories call ``linked_cache`` themselves,
since they are set up before this function-scoped fixture.

The hostile repositories of ``tests/support/hostile.py`` are built once per session and shared by
every consumer's tests (the reader's in tests/cvmfs, the container builds' in tests/container): the
million-entry case alone takes minutes to write on a loaded machine, and consumers only read them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import hostile, linked_cache
from tests.support.s3servers import rgwserver, s3env, s3server, target  # noqa: F401  (shared fixtures)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = linked_cache(tmp_path_factory.mktemp("cache"))
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def hostile_base(tmp_path_factory: pytest.TempPathFactory) -> hostile.Repo:
    return hostile.publish_base(tmp_path_factory.mktemp("hostile-base"))


@pytest.fixture(scope="session")
def hostile_corpus(
    tmp_path_factory: pytest.TempPathFactory, hostile_base: hostile.Repo
) -> Callable[[str], hostile.Repo]:
    """``get(name)``: the case ``name`` built on first use, then shared (consumers only read it)."""
    root = tmp_path_factory.mktemp("hostile-corpus")
    built: dict[str, hostile.Repo] = {}

    def get(name: str) -> hostile.Repo:
        if name not in built:
            built[name] = hostile.build_case(name, root / name, hostile_base)
        return built[name]

    return get
