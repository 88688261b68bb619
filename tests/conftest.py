"""Every test gets its own ``$CERNVM_CACHE_DIR`` (see ``tests.support.linked_cache``).

Module- or session-scoped fixtures that build or read repositories call ``linked_cache`` themselves,
since they are set up before this function-scoped fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import linked_cache
from tests.support.s3servers import rgwserver, s3env, s3server, target  # noqa: F401  (shared fixtures)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = linked_cache(tmp_path_factory.mktemp("cache"))
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(cache))
    return cache
