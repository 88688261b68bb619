from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="package", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A cache of our own: the reader's cache remembers the newest manifest it verified per
    repository name, and these tests create repositories of the same name in every session."""
    old = os.environ.get("CERNVM_CACHE_DIR")
    os.environ["CERNVM_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("CERNVM_CACHE_DIR", None)
    else:
        os.environ["CERNVM_CACHE_DIR"] = old
