"""What every benchmark shares: a result row, a side-by-side table, peak memory, a timer, environment
variables set for one run (``environ``).

A benchmark script ``bench/<area>.py`` has ``run(quick: bool) -> list[Result]`` and a ``__main__`` that
checks its flags (``flags``: ``--help``, unknown flags refused) and prints the table;
``bench/run_all.py`` runs them all and writes one JSON file plus an HTML report.
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


def flags(doc: str | None, known: dict[str, str]) -> None:
    """The command line checked before anything runs: ``-h``/``--help`` prints the script's docstring and
    its flags and exits; a flag not in ``known`` (name: what it does) is an error (exit 2). A benchmark
    boots guests or builds corpora for minutes: a mistyped flag, or ``--help``, must not start one."""
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print((doc or "").strip() + "\n\nflags:")
        for name, what in known.items():
            print(f"  {name:<22} {what}")
        raise SystemExit(0)
    for arg in args:
        if arg.startswith("-") and arg.split("=", 1)[0] not in known:
            print(f"error: unknown flag {arg!r} (hint: --help lists this benchmark's flags)", file=sys.stderr)
            raise SystemExit(2)


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


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` while inside; each variable's previous value (or absence)
    restored at the end."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children), in MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def children_cpu() -> float:
    """CPU seconds (user + sys) of this process's waited-for children so far (forked workers, tools)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cores() -> int:
    return len(os.sched_getaffinity(0))


#: Runs ``python -m MODULE ARGS`` and, at exit, writes the process's own peak RSS (VmHWM) to stderr.
#: ``wait4``'s ru_maxrss is no good for a child: Linux carries the parent's high-water mark across
#: fork (or vfork) and exec, so the child of a big process would "peak" at the parent's size.
_HWM = "@@VmHWM@@"
_WRAPPER = (
    "import os, runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
    "finally:\n"
    "    hwm = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
    f"    os.write(2, ('\\n{_HWM} ' + hwm[0] + '\\n').encode())\n"
)


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` for ``measure_process``, which then reports the process's own peak."""
    return [sys.executable, "-c", _WRAPPER, module, *args]


@dataclass
class Process:
    """One measured child process: its own wall time, CPU time and peak RSS (from ``wait4``)."""

    returncode: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    stderr: str
    timed_out: bool


def measure_process(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 600,
    address_space_mb: int | None = None,
) -> Process:
    """Run ``argv`` (stdout discarded), killed after ``timeout`` s; ``address_space_mb`` caps its
    memory so that a runaway (e.g. an unhardened reader inflating a bomb) fails instead of swapping."""
    import subprocess
    import tempfile

    def limit() -> None:
        if address_space_mb is not None:
            cap = address_space_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd, preexec_fn=limit
        )
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                timed_out = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
        rss = usage.ru_maxrss / 1024  # an upper bound (see _WRAPPER); exact when the child reports
        if _HWM in text:
            text, _, hwm = text.rpartition(_HWM)
            rss = int(hwm.split()[0]) / 1024
        return Process(proc.returncode, seconds, usage.ru_utime + usage.ru_stime, rss, text, timed_out)
