"""What every benchmark shares: a result row, a side-by-side table, peak memory, a timer.

A benchmark script ``bench/<area>.py`` has ``run(quick: bool) -> list[Result]`` and a ``__main__`` that
prints the table; ``bench/run_all.py`` runs them all and writes one JSON file plus an HTML report.
Benchmarks print figures next to the reference they are compared to, measured in the same run.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    bench: str  # e.g. "cvmfs.publish"
    metric: str  # e.g. "throughput"
    value: float
    unit: str  # e.g. "MB/s"
    reference: str | None = None  # what it is compared to, e.g. "zlib+SHA-1 limit"
    reference_value: float | None = None
    aim: str | None = None  # e.g. ">= 60 % of reference"
    ok: bool | None = None  # whether the aim was met (None when there is no aim)
    extra: dict[str, float | str] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.reference_value:
            return self.value / self.reference_value
        return None

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def print_table(results: list[Result], file: object = sys.stdout) -> None:
    header = f"{'benchmark':<34} {'metric':<26} {'value':>12} {'reference':>30} {'ratio':>7}  aim"
    print(header, file=file)  # type: ignore[call-overload]
    print("-" * len(header), file=file)  # type: ignore[call-overload]
    for r in results:
        ref = f"{r.reference_value:.4g} {r.unit} ({r.reference})" if r.reference_value is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        mark = {True: "met", False: "MISSED", None: ""}[r.ok]
        aim = f"{r.aim or ''} {mark}"
        line = f"{r.bench:<34} {r.metric:<26} {r.value:>9.4g} {r.unit:<3} {ref:>30} {ratio:>7}  {aim}"
        print(line, file=file)  # type: ignore[call-overload]


def dump(results: list[Result]) -> str:
    return json.dumps([r.to_json() for r in results], indent=2)


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["s"]`` holds the elapsed wall-clock seconds."""
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children), in MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def cores() -> int:
    return len(os.sched_getaffinity(0))
