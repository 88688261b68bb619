"""fork_map: the site build's forked workers (pages rendered and written in parallel)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cernvm_build.errors import BuildError
from cernvm_build.site.parallel import fork_map


def _pid_and_double(shared: int, item: int) -> tuple[int, int]:
    return os.getpid(), item * shared


def test_results_keep_the_items_order_and_the_work_is_shared() -> None:
    items = list(range(100))
    got = fork_map(_pid_and_double, 2, items, jobs=3, least=2)
    assert [r for _pid, r in got] == [i * 2 for i in items]
    pids = {pid for pid, _r in got}
    # three processes, this one among them (it works a share instead of waiting)
    assert len(pids) == 3 and os.getpid() in pids


def _fail_in_a_child(parent: int, item: int) -> int:
    if os.getpid() != parent:
        raise ValueError(f"bad item {item}")
    return item


def test_a_failing_worker_is_a_build_error_naming_the_failure() -> None:
    with pytest.raises(BuildError, match="worker failed: ValueError: bad item") as e:
        fork_map(_fail_in_a_child, os.getpid(), list(range(10)), jobs=2, least=2)
    assert "--jobs 1" in str(e.value.hint)


def _die_in_a_child(parent: int, item: int) -> int:
    if os.getpid() != parent:
        os._exit(3)
    return item


def test_a_worker_that_dies_is_a_build_error() -> None:
    with pytest.raises(BuildError, match="worker process died"):
        fork_map(_die_in_a_child, os.getpid(), list(range(10)), jobs=2, least=2)


def _fail_here(parent: int, item: int) -> int:
    if os.getpid() == parent:
        raise ValueError("here")
    return item


def _children() -> set[str]:
    # this process's children, zombies too (not yet waited for); fork_map forks from this thread
    return set(Path(f"/proc/self/task/{os.getpid()}/children").read_text().split())


def test_an_error_in_this_process_ends_the_workers_and_is_raised_as_is() -> None:
    before = _children()
    with pytest.raises(ValueError, match="here"):
        fork_map(_fail_here, os.getpid(), list(range(10)), jobs=3, least=2)
    assert _children() == before  # every worker ended and waited for: none running, no zombie
