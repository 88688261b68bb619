from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cernvm_build.demo.repository import DemoRepository


#: the cache these tests found (``make deps`` filled it: packages, the Debian tree), before
#: ``_own_cache`` replaces it for the reader
SHARED_CACHE = os.environ.get("CERNVM_CACHE_DIR")


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


@pytest.fixture(scope="package")
def demo_repo(tmp_path_factory: pytest.TempPathFactory, _own_cache: None) -> DemoRepository:
    """The demo OS published once for every test here that builds its image (~15-30 s each)."""
    from cernvm_build.demo.repository import publish_demo

    return publish_demo(tmp_path_factory.mktemp("demo-repo") / "repo", release="1")
