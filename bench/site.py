"""Site generator benchmark: this toolkit's builder, Hugo and MkDocs on the same synthetic corpus
(bench/site_corpus.py), side by side in one run.

Figures, each the best of ``--rounds`` (3) alternated runs, medians beside them: pages/s of a full
(cold) build at N pages, on the wall clock and in CPU seconds (user + sys of the process tree); a
no-change rebuild; a rebuild after one page changed, beside Hugo's full build and
`mkdocs build --dirty`. Every generator runs as its own process through its command line
(`cernvm-build site build`, `hugo`, `mkdocs build`), with its peak memory; the "warm" one-page rebuild
is ours inside a process that has built before, as `site serve` rebuilds on every save. Our build also
writes the search index (its own, search.py); Hugo and MkDocs' figures are without one.
Aims (issue 17): full build >= 1.5x Hugo (CPU and wall); one-page rebuild <= 0.05x Hugo's full build
and <= `mkdocs build --dirty`; peak memory <= Hugo's.

    python bench/site.py            # N = 1,000 and 4,000
    python bench/site.py --quick    # N = 100 and 400
    python bench/site.py --tmp      # in the temporary folder's file system (see below)

Then ``site.full.prose.n1000`` (``--quick``: n100): ours and Hugo on real prose (``site_corpus.py
--kind prose``: the installed packages' long descriptions, code in 18 languages), full build CPU and
wall, peak memory and our one-page rebuild; what the synthetic corpus's 37 words and 3 languages hide.

Every generator reads and writes on a journaled ext4 of the bench's own where one can be made (as root,
``tests.support.bigfs``): this machine kind's root file system is ext4 without a journal, where creating
files soon after others were removed costs several times the CPU (``recently_deleted`` in ext4's inode
allocator). A build creates thousands of files, so what ran before a generator (another bench, a test
suite removing its trees) moved its CPU by more than the changes measured. ``--tmp`` measures where
the temporary folder is, as before; each run prints which file system it used.

Our package's bytecode is compiled first (``compileall``), as ``pip install`` does: where
PYTHONDONTWRITEBYTECODE is set (as in this project's CI and sandboxes) every run would otherwise compile
the builder's modules from source again, ~0.1 CPU-s that no installed copy pays (MkDocs' packages in
the venv have their bytecode).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, children_cpu, cores, flags, print_table
from bench.site_corpus import generate, kind_path, rel_path
from tests.support.bigfs import loop_ext4

VENV_BIN = Path(sys.executable).parent
#: MkDocs renders the whole navigation into every page; at thousands of pages it runs for tens of
#: minutes. It is stopped after this long and its rate reported as an upper bound.
MKDOCS_TIMEOUT = float(os.environ.get("SITE_BENCH_MKDOCS_TIMEOUT", "600"))

#: Each full build and one-page rebuild is measured this many times, the generators alternated; the
#: least wall and CPU are the figures (``best``), the medians printed beside them. One shot each, as
#: before, moved the full build's ratio by ±10 % between runs on this 2-core host.
ROUNDS = 3

#: Ours runs through its command line, as Hugo and MkDocs run through theirs: the installed entry point
#: (its start-up, argument parsing and imports are part of what a user waits for).
CERNVM_BUILD = VENV_BIN / "cernvm-build"


def ours_cmd(site: Path, out: Path) -> list[str]:
    exe = [str(CERNVM_BUILD)] if CERNVM_BUILD.exists() else [sys.executable, "-m", "cernvm_build.cli.main"]
    return [*exe, "site", "build", "--site", str(site), "--out", str(out), "--json"]


def counts(run: Run) -> Run:
    """``run`` with its JSON report shortened to "outputs rendered, Markdown rendered, search shards,
    pages planned"."""
    report = json.loads(run.out)
    keys = ("rendered", "markdown_rendered", "search_shards", "pages_planned")
    run.out = " ".join(str(report[k]) for k in keys)
    return run


@dataclass
class Run:
    seconds: float
    peak_mb: float
    cpu: float = 0.0  # user + sys seconds of the process and its children
    timed_out: bool = False
    out: str = ""
    #: (wall, CPU) medians when this is the best of several rounds (``best``)
    median: tuple[float, float] | None = None


def timed(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Run:
    """Run ``cmd``; wall-clock time and the peak RSS of the process tree (largest process)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # the process's end is waited for (its pidfd becomes readable), not polled: a poll every 20 ms
    # added 0-20 ms, ~10 on average, to every wall figure (a twelfth of a one-page rebuild's aim)
    pidfd = os.pidfd_open(proc.pid)
    try:
        ended, _, _ = select.select([pidfd], [], [], timeout or None)
    finally:
        os.close(pidfd)
    if not ended:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        cpu = usage.ru_utime + usage.ru_stime
        return Run(time.perf_counter() - start, usage.ru_maxrss / 1024, cpu, timed_out=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err.strip()[-2000:]}")
    return Run(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, out=out.strip())


def warm_rebuild(site: Path, out: Path, cache: Path, rel: str) -> Run:
    """A one-page rebuild in a process that has built before, as ``site serve`` does on every save
    (with one ``Builder``, as it does, after a first save: a builder keeps what it can of its last
    complete build, and the preview's first build after its start finds nothing changed and makes
    nothing to keep; that first save's rebuild costs what a fresh builder's does)."""
    from cernvm_build.site.build import Builder

    old = os.environ.get("CERNVM_CACHE_DIR")
    os.environ["CERNVM_CACHE_DIR"] = str(cache)
    try:
        builder = Builder(site, out)
        builder.build()  # imports, caches, OS page cache: what a running preview has
        page = site / "content" / rel
        page.write_text(page.read_text().replace("\n\n", "\n\nSaved once. ", 1))
        builder.build()  # the first save since the preview started
        page.write_text(page.read_text().replace("\n\n", "\n\nEdited again. ", 1))
        start, cpu0, kids0 = time.perf_counter(), time.process_time(), children_cpu()
        report = builder.build()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0 + children_cpu() - kids0  # forked workers are children
    finally:
        if old is None:
            os.environ.pop("CERNVM_CACHE_DIR", None)
        else:
            os.environ["CERNVM_CACHE_DIR"] = old
    counted = f"{report.rendered} {report.markdown_rendered} {report.search_shards} {report.pages_planned}"
    return Run(seconds, 0.0, cpu, out=counted)


def best(runs: list[Run]) -> Run:
    """Rounds of one measurement as one: the least wall time and the least CPU (each the figure least
    disturbed by the machine's other work; both generators get the same rule), the largest peak memory,
    the medians kept for the report."""
    walls, cpus = sorted(r.seconds for r in runs), sorted(r.cpu for r in runs)
    median = (walls[len(walls) // 2], cpus[len(cpus) // 2])
    return Run(walls[0], max(r.peak_mb for r in runs), cpus[0], out=runs[-1].out, median=median)


def medians(**runs: Run) -> dict[str, float | str]:
    """The rounds' medians beside the best figures: "wall s / CPU s" per generator."""
    return {
        f"{k}_median_wall_cpu": f"{r.median[0]:.3f} / {r.median[1]:.3f}" for k, r in runs.items() if r.median
    }


def cold_builds(
    ours: list[str], hugo: list[str], hugo_site: Path, env: dict[str, str], wipe: list[Path], rounds: int
) -> tuple[Run, Run]:
    """``rounds`` cold full builds of each generator, alternated (ours, Hugo, ours, ...): a load change
    during the run falls on both. Before each, the outputs and our cache are removed."""
    mine: list[Run] = []
    theirs: list[Run] = []
    for _ in range(rounds):
        for path in wipe:
            shutil.rmtree(path, ignore_errors=True)
        mine.append(timed(ours, env=env))
        theirs.append(timed(hugo, cwd=hugo_site))
    return best(mine), best(theirs)


def one_page_rounds(ours: list[str], env: dict[str, str], pages: list[Path]) -> Run:
    """A rebuild after one page's body changed, a different page each round."""
    runs = []
    for page in pages:
        page.write_text(
            page.read_text().replace("\n\n", "\n\nEdited. ", 1)  # body only: others link to its headings
        )
        runs.append(counts(timed(ours, env=env)))
    return best(runs)


def measure(n: int, work: Path, rounds: int) -> dict[str, Run]:
    sites = generate(work / "corpus", n)
    cache = work / "cache"
    env = {"CERNVM_CACHE_DIR": str(cache)}
    ours_out, hugo_out, mk_out = work / "ours-out", work / "hugo-out", work / "mkdocs-out"
    ours = ours_cmd(sites["ours"], ours_out)
    hugo = ["hugo", "--quiet", "-d", str(hugo_out)]
    runs: dict[str, Run] = {}
    runs["ours.full"], runs["hugo.full"] = cold_builds(
        ours, hugo, sites["hugo"], env, [ours_out, cache, hugo_out], rounds
    )
    runs["ours.noop"] = timed(ours, env=env)
    runs["hugo.again"] = timed(hugo, cwd=sites["hugo"])
    edited = [sites["ours"] / "content" / rel_path(n // 2 + i) for i in range(rounds)]
    runs["ours.one"] = one_page_rounds(ours, env, edited)
    runs["ours.one.warm"] = warm_rebuild(sites["ours"], ours_out, cache, rel_path(n // 3))
    mkdocs = [str(VENV_BIN / "mkdocs"), "build", "-q", "-d", str(mk_out)]
    runs["mkdocs.full"] = timed(mkdocs, cwd=sites["mkdocs"], timeout=MKDOCS_TIMEOUT)
    if not runs["mkdocs.full"].timed_out:
        mk_page = sites["mkdocs"] / "docs" / rel_path(n // 2)
        mk_page.write_text(mk_page.read_text().replace("\n\n", "\n\nEdited. ", 1))
        runs["mkdocs.dirty"] = timed([*mkdocs, "--dirty"], cwd=sites["mkdocs"], timeout=MKDOCS_TIMEOUT)
    return runs


def results_for(n: int, runs: dict[str, Run]) -> list[Result]:
    pages = n + 1  # the corpus pages and a home page
    ours, hugo, mk = runs["ours.full"], runs["hugo.full"], runs["mkdocs.full"]
    ours_rate, hugo_rate = pages / ours.seconds, pages / hugo.seconds
    mk_rate = pages / mk.seconds
    mk_note = f"stopped after {mk.seconds:.0f} s (rate is an upper bound)" if mk.timed_out else ""
    mem: dict[str, float | str] = {
        "ours_peak_mb": round(ours.peak_mb, 1),
        "hugo_peak_mb": round(hugo.peak_mb, 1),
        "mkdocs_peak_mb": round(mk.peak_mb, 1),
        "cores": cores(),
    }
    ours_cpu_rate, hugo_cpu_rate = pages / max(ours.cpu, 1e-6), pages / max(hugo.cpu, 1e-6)
    dirty = runs.get("mkdocs.dirty")
    out = [
        Result(
            f"site.full.n{n}",
            "full build vs Hugo (wall)",
            ours_rate,
            "pages/s",
            "Hugo",
            hugo_rate,
            ">= 1.5x Hugo",
            ours_rate >= 1.5 * hugo_rate,
            extra={**mem, **medians(ours=ours, hugo=hugo)},
        ),
        Result(
            f"site.full.n{n}",
            "full build vs Hugo (CPU)",
            ours_cpu_rate,
            "pages/CPU-s",
            "Hugo",
            hugo_cpu_rate,
            ">= 1.5x Hugo",
            ours_cpu_rate >= 1.5 * hugo_cpu_rate,
            extra={"ours_cpu_s": round(ours.cpu, 2), "hugo_cpu_s": round(hugo.cpu, 2)},
        ),
        Result(
            f"site.full.n{n}",
            "full build vs MkDocs",
            ours_rate,
            "pages/s",
            "MkDocs",
            mk_rate,
            None,
            None,
            extra={"mkdocs": mk_note} if mk_note else {},
        ),
        Result(
            f"site.noop.n{n}",
            "no-change rebuild",
            runs["ours.noop"].seconds,
            "s",
            "Hugo rebuild",
            runs["hugo.again"].seconds,
            None,
            None,
        ),
        Result(
            f"site.onepage.n{n}",
            "one page changed",
            runs["ours.one"].seconds,
            "s",
            "Hugo full build",
            hugo.seconds,
            "<= 0.05x Hugo full",
            runs["ours.one"].seconds <= 0.05 * hugo.seconds,
            extra={
                "rendered_markdown_written_shards_planned": runs["ours.one"].out,
                **medians(one=runs["ours.one"]),
            },
        ),
        Result(
            f"site.onepage.n{n}",
            "one page changed (CPU)",
            runs["ours.one"].cpu,
            "CPU-s",
            "Hugo full build",
            hugo.cpu,
            "<= 0.05x Hugo full",
            runs["ours.one"].cpu <= 0.05 * hugo.cpu,
        ),
        Result(
            f"site.onepage.n{n}",
            "one page changed vs mkdocs --dirty",
            runs["ours.one"].seconds,
            "s",
            "mkdocs build --dirty",
            dirty.seconds if dirty else None,
            "<= mkdocs --dirty",
            (runs["ours.one"].seconds <= dirty.seconds) if dirty else None,
        ),
        Result(
            f"site.onepage.n{n}",
            "one page changed vs mkdocs --dirty (CPU)",
            runs["ours.one"].cpu,
            "CPU-s",
            "mkdocs build --dirty",
            dirty.cpu if dirty else None,
            "<= mkdocs --dirty",
            (runs["ours.one"].cpu <= dirty.cpu) if dirty else None,
        ),
        Result(
            f"site.onepage.n{n}",
            "one page changed, warm (serve)",
            runs["ours.one.warm"].seconds,
            "s",
            "Hugo full build",
            hugo.seconds,
            "<= 0.05x Hugo full",
            runs["ours.one.warm"].seconds <= 0.05 * hugo.seconds,
            extra={"rendered_markdown_written_shards_planned": runs["ours.one.warm"].out},
        ),
        Result(
            f"site.onepage.n{n}",
            "one page changed, warm (serve, CPU)",
            runs["ours.one.warm"].cpu,
            "CPU-s",
            "Hugo full build",
            hugo.cpu,
            "<= 0.05x Hugo full",
            runs["ours.one.warm"].cpu <= 0.05 * hugo.cpu,
        ),
        Result(
            f"site.memory.n{n}",
            "peak memory",
            ours.peak_mb,
            "MB",
            "Hugo",
            hugo.peak_mb,
            "<= Hugo",
            ours.peak_mb <= hugo.peak_mb,
            extra={"mkdocs_peak_mb": round(mk.peak_mb, 1)},
        ),
    ]
    return out


def measure_kind(kind: str, n: int, work: Path, rounds: int) -> list[Result]:
    """Ours and Hugo on a corpus of another ``kind`` (bench/site_corpus.py): full builds, CPU and
    wall, peak memory, and our one-page rebuild (MkDocs is left out: ~15 s at 1,000 prose pages)."""
    sites = generate(work / "corpus", n, kind=kind)
    env = {"CERNVM_CACHE_DIR": str(work / "cache")}
    ours_cmdline = ours_cmd(sites["ours"], work / "ours-out")
    hugo_cmdline = ["hugo", "--quiet", "-d", str(work / "hugo-out")]
    wipe = [work / "ours-out", work / "cache", work / "hugo-out"]
    ours, hugo = cold_builds(ours_cmdline, hugo_cmdline, sites["hugo"], env, wipe, rounds)
    edited = [sites["ours"] / "content" / kind_path(kind, n // 2 + i) for i in range(rounds)]
    one = one_page_rounds(ours_cmdline, env, edited)
    pages = n + 1
    name = f"site.full.{kind}.n{n}"
    return [
        Result(
            name,
            "full build vs Hugo (wall)",
            pages / ours.seconds,
            "pages/s",
            "Hugo",
            pages / hugo.seconds,
            ">= 1.5x Hugo",
            hugo.seconds >= 1.5 * ours.seconds,
            extra={"ours_peak_mb": round(ours.peak_mb, 1), "hugo_peak_mb": round(hugo.peak_mb, 1)},
        ),
        Result(
            name,
            "full build vs Hugo (CPU)",
            pages / max(ours.cpu, 1e-6),
            "pages/CPU-s",
            "Hugo",
            pages / max(hugo.cpu, 1e-6),
            ">= 1.5x Hugo",
            hugo.cpu >= 1.5 * ours.cpu,
            extra={"ours_cpu_s": round(ours.cpu, 2), "hugo_cpu_s": round(hugo.cpu, 2)},
        ),
        Result(
            f"site.onepage.{kind}.n{n}",
            "one page changed (CPU)",
            one.cpu,
            "CPU-s",
            "Hugo full build",
            hugo.cpu,
            "<= 0.05x Hugo full",
            one.cpu <= 0.05 * hugo.cpu,
            extra={
                "rendered_markdown_written_shards_planned": one.out,
                "wall_s": round(one.seconds, 3),
                **medians(one=one),
            },
        ),
    ]


COMPILE = (
    "import compileall, os, cernvm_build; "
    "compileall.compile_dir(os.path.dirname(cernvm_build.__file__), quiet=1)"
)


def run(quick: bool, here: bool = False, rounds: int = ROUNDS) -> list[Result]:
    sizes = (100, 400) if quick else (1000, 4000)
    if shutil.which("hugo") is None:
        raise SystemExit("hugo is not installed: apt-get install hugo (make deps)")
    # the package the measured processes import (see the module docstring)
    subprocess.run([sys.executable, "-c", COMPILE], check=True)
    results: list[Result] = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"site-bench-{n}-") as tmp, contextlib.ExitStack() as stack:
            fs = None if here else stack.enter_context(loop_ext4(Path(tmp)))
            rows = results_for(n, measure(n, fs or Path(tmp), rounds))
            rows[0].extra["file_system"] = "journaled ext4 (loop)" if fs else "the temporary folder's"
            results.extend(rows)
    n = 100 if quick else 1000
    with tempfile.TemporaryDirectory(prefix=f"site-bench-prose-{n}-") as tmp, contextlib.ExitStack() as stack:
        fs = None if here else stack.enter_context(loop_ext4(Path(tmp)))
        results.extend(measure_kind("prose", n, fs or Path(tmp), rounds))
    return results


if __name__ == "__main__":
    flags(
        __doc__,
        {
            "--quick": "a smaller run (fewer rounds or inputs)",
            "--tmp": "build in /tmp instead of /dev/shm",
            "--rounds": f"--rounds=N: cold builds and one-page rebuilds per generator (default {ROUNDS})",
        },
    )
    given = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--rounds=")]
    if given and not (given[-1].isdigit() and int(given[-1]) > 0):
        raise SystemExit(f"error: --rounds={given[-1]}: give a whole number of rounds, at least 1")
    rows = run("--quick" in sys.argv, here="--tmp" in sys.argv, rounds=int(given[-1]) if given else ROUNDS)
    print_table(rows)
    for r in rows:
        for key, value in r.extra.items():
            print(f"  {r.bench} {r.metric}: {key} = {value}")
