"""``bench/cvmfs_read.py``'s rounds (issue 14): the two clients alternate, and every figure is the
median and the best of each over the rounds, side by side, with the load seen."""

from __future__ import annotations

import pytest

from bench.cvmfs_read import Samples, _alternate


def test_the_clients_alternate_and_neither_always_goes_first() -> None:
    s = Samples()
    order: list[str] = []
    _alternate(4, lambda r: order.append(f"ours{r}"), lambda r: order.append(f"real{r}"), s)
    assert order == ["ours0", "real0", "real1", "ours1", "ours2", "real2", "real3", "ours3"]
    assert len(s.loads) == 8  # before and after every round


def test_each_figure_is_the_median_and_the_best_of_each_client_with_both_ratios() -> None:
    s = Samples()
    s.loads = [1.5, 4.25]
    for ours, real in ((3.0, 4.0), (1.0, 2.0), (2.0, 6.0), (9.0, 5.0)):
        s.add("ours cold", ours, ours / 2)
        s.add("real cold", real, real)
    wall, cpu = s.results("cvmfs.fuse", "cold", "ours cold", ("real cold", "cvmfs2, cold"), aim=1.0)
    # medians of [1, 2, 3, 9] and [2, 4, 5, 6]; bests 1 and 2
    assert (wall.value, wall.reference_value) == (2.5, 4.5)
    assert wall.extra["best_s"] == 1.0 and wall.extra["ref_best_s"] == 2.0
    assert wall.extra["median_ratio"] == pytest.approx(0.56) and wall.extra["best_ratio"] == 0.5
    assert wall.ok is True and wall.extra["rounds"] == 4 and wall.extra["load"] == "1.5-4.2"
    assert (cpu.value, cpu.reference_value) == (1.25, 4.5) and cpu.metric == "cold, CPU"
    # judged on the medians: a single lucky round does not meet the aim
    slow = s.results("cvmfs.fuse", "cold", "ours cold", ("real cold", "cvmfs2"), aim=0.5)[0]
    assert slow.ok is False
    alone = s.results("cvmfs.fuse", "cold", "ours cold", None)[0]
    assert alone.reference_value is None and alone.ok is None
