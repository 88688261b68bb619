"""Every test gets its own ``$CERNVM_CACHE_DIR`` (see ``tests.support.linked_cache``).

Module- or session-scoped fixtures that build or read repositories call ``linked_cache`` themselves,
since they are set up before this function-scoped fixture.

The hostile repositories of ``tests/support/hostile.py`` are built once per session and shared by
every consumer's tests (the reader's in tests/cvmfs, the container builds' in tests/container): the
million-entry case alone takes minutes to write on a loaded machine, and consumers only read them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import hostile, linked_cache
from tests.support.bigfs import loop_ext4
from tests.support.gpgagents import pytest_configure, pytest_sessionfinish  # noqa: F401  (session hooks)
from tests.support.s3servers import rgwserver, s3env, s3server, target  # noqa: F401  (shared fixtures)
from tests.support.tmpfsns import small_fs  # noqa: F401  (a shared fixture)

# A suite started in the background by a shell without job control (`make test &`, some CI runners)
# inherits SIGINT ignored, and Python then keeps it ignored: the tests of what Ctrl-C does to a
# create would see nothing arrive. Ctrl-C is what users press, so the suite gets Python's own handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture(scope="session")
def _bigfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    with loop_ext4(tmp_path_factory.mktemp("bigfs")) as mnt:
        yield mnt


@pytest.fixture
def big_tmp_path(_bigfs: Path | None, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh folder for a test that writes a million files: on the session's own journaled ext4
    where one could be made (``tests.support.bigfs`` says why), else ``tmp_path``."""
    if _bigfs is None:
        return tmp_path
    folder = _bigfs / request.node.name.replace("/", "_")
    folder.mkdir()
    return folder
