"""bench/osboot: a failure on one side of a side-by-side pair is the one reported."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from bench.osboot import _both


def test_the_failing_side_is_reported_not_the_barrier_it_broke() -> None:
    together = threading.Barrier(2)

    def ucernvm() -> str:  # waits for the other side's reboot, which will not come
        together.wait()
        return "ucernvm"

    def plain() -> str:
        together.abort()  # as ``_measure`` does on a failure
        raise RuntimeError("the plain side's first boot failed")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        job_a, job_b = pool.submit(ucernvm), pool.submit(plain)
        with pytest.raises(RuntimeError, match="first boot failed"):
            _both(job_a, job_b)
        assert isinstance(job_a.exception(), threading.BrokenBarrierError)


def test_both_results_when_both_sides_end() -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert _both(pool.submit(lambda: 1), pool.submit(lambda: 2)) == (1, 2)
