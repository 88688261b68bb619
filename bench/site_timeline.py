"""A cold full build's timeline: when each process starts and ends each step, and the serial part.

    python bench/site_timeline.py --pages 1000 --kind prose --work /dev/shm/tl
    python bench/site_timeline.py --tree /tmp/old --rounds 5          # another code tree, best of 5
    python bench/site_timeline.py --rebuild --idle --rounds 5         # one-page rebuilds, render child

With ``--rebuild`` the builds traced are one-page rebuilds after a full build (each round edits the
same page's body); their render child's steps (``renderchild``: its templates' warm-up, ``warm``, and the
search shard it makes) are printed per process, with the parent's waits for it. ``--idle`` forks that
child as on an idle host (``renderchild.idle_core`` taken as true), whatever the load.

One ``cernvm-build site build --jobs J`` (cold: output and cache removed first) runs in a process
whose build steps are wrapped to log, per process, the wall time at their start and end and the
process's CPU time (``time.process_time``) spent in them; forked workers log theirs too. Printed: the
parent's steps in order, each forked step with each process's share (its runs' CPU, its start and end)
and the wait at its end, and the split of the parent's CPU into the serial part (before, between and
after the forked steps, which no other process overlaps) and its part in the forked steps. Wall
times stretch with the machine's load (printed before and after); CPU times much less so, and the
serial CPU is what caps the CPU/wall ratio: wall >= serial + (CPU - serial) / jobs. The critical
path (the serial CPU plus, for each forked step, the CPU of its busiest process, the parent's there
including its own work meanwhile) is what the wall would be on idle cores. With ``--rounds N`` the
round with the least total CPU is shown. Wrapping costs ~1 us a call (~2,000
per-page calls are not wrapped: only per-run and per-step ones).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.site_corpus import KINDS, generate

#: run in the build's process: wraps ``STEPS`` (those missing in the tree measured are skipped) as
#: each module is imported (the builder imports some only where they are used: importing them here
#: would move that cost out of the build), then runs the CLI; each event is one line "pid name wall0
#: wall1 cpu0 cpu1" (ms), written at once with O_APPEND (a forked worker ends with os._exit: nothing
#: buffered would be written)
_TRACER = r"""
import functools, os, sys, time
T0 = time.perf_counter()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
def ev(name, w0, c0):
    w1, c1 = time.perf_counter(), time.process_time()
    nums = (w0 - T0, w1 - T0, c0, c1)
    os.write(fd, (f"{os.getpid()} {name} " + " ".join(f"{n * 1e3:.1f}" for n in nums) + "\n").encode())
def wrap(owner, attr, name):
    f = getattr(owner, attr, None)
    if f is None:
        return
    @functools.wraps(f)
    def w(*a, **k):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return f(*a, **k)
        finally:
            ev(name, w0, c0)
    setattr(owner, attr, w)
PENDING = {}  # module -> its steps, wrapped once it is executed (before a module importing a name
for step in sys.argv[2].split():  # from it binds the name)
    owner, attr = step.split(":")
    PENDING.setdefault("cernvm_build.site." + owner.split(".")[0], []).append((owner.split(".")[1:], attr))
class Hook:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in PENDING:
            return None
        for finder in sys.meta_path:
            spec = None if finder is Hook else finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            for classes, attr in PENDING.pop(name):
                where = module
                for part in classes:
                    where = getattr(where, part)
                wrap(where, attr, attr)
            if IDLE and name == "cernvm_build.site.renderchild":
                module.idle_core = lambda: True
        spec.loader.exec_module = exec_module
        return spec
#: as on an idle host (--idle): the one-page rebuild's render child forks whatever the load
IDLE = os.environ.get("SITE_TIMELINE_IDLE")
if IDLE:
    PENDING.setdefault("cernvm_build.site.renderchild", [])
sys.meta_path.insert(0, Hook)
from cernvm_build.cli import main as cli_main
ev("imports", T0, 0.0)
sys.argv = ["cernvm-build", *sys.argv[3:]]
try:
    code = cli_main.main()
finally:
    ev("end", T0, 0.0)
sys.exit(code)
"""

#: the steps wrapped ("module[.Class]", function): per step or per run, never per page (a wrapper costs
#: ~1 us a call); a test checks that each exists in the code
STEPS = [
    ("build", "scan"),
    ("build", "plan_sources"),
    ("build", "render_markdown"),
    ("sources", "warm_highlighting"),
    ("build.Builder", "_aside"),
    ("build", "_warm_templates"),
    ("pages", "make_pages"),
    ("plan", "plan"),
    ("build.Builder", "_write"),
    ("write", "execute"),
    ("search", "update"),
    ("search", "shard_files"),
    ("cache.State", "md_meta"),
    ("cache.State", "close"),
    ("cache.State", "put_md"),
    ("cache.State", "put_search_extracts"),
    ("parallel", "fork_map"),
    ("parallel", "_work"),
    ("parallel._Inbox", "finish"),
    ("build.Builder", "_build"),
    # a one-page rebuild's (``--rebuild``): the plan from the state, the render child's life
    ("replan", "recorded"),
    ("build.Builder", "_tail"),
    ("renderchild.RenderChild", "start"),
    ("renderchild.RenderChild", "render"),
    ("renderchild.RenderChild", "end_call"),
    ("renderchild", "_serve"),
    ("templates.Environment", "warm"),
    ("jinjaless.Fast", "warm"),  # the render child's warm-up (jinja2's compiled code, sp34d)
    ("search", "_write_shards"),
]

Event = tuple[int, str, float, float, float, float]


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _trace(
    tree: Path, site: Path, work: Path, jobs: int, *, clean: bool = True, idle: bool = False
) -> list[Event]:
    """One traced build; ``clean``: output and cache removed first (else a rebuild); ``idle``: the
    render child forked as on an idle host (``renderchild.idle_core`` taken as true)."""
    out, cache, log = work / "out", work / "cache", work / "timeline.log"
    for d in (out, cache) if clean else ():
        shutil.rmtree(d, ignore_errors=True)
    cmd = [sys.executable, "-P", "-c", _TRACER, str(log), " ".join(f"{o}:{a}" for o, a in STEPS)]
    cmd += ["site", "build", "--site", str(site), "--out", str(out), "--json", "--jobs", str(jobs)]
    env = {**os.environ, "PYTHONPATH": str(tree), "CERNVM_CACHE_DIR": str(cache)}
    if idle:
        env["SITE_TIMELINE_IDLE"] = "1"
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"build failed: {done.stderr.strip()[-1000:]}")
    events = []
    for line in log.read_text().splitlines():
        pid, name, *nums = line.split()
        w0, w1, c0, c1 = map(float, nums)
        events.append((int(pid), name, w0, w1, c0, c1))
    return events


def _total_cpu(events: list[Event]) -> float:
    """CPU ms of all processes: each one's largest CPU reading (a fork's child starts from 0)."""
    last: dict[int, float] = {}
    for pid, _name, _w0, _w1, _c0, c1 in events:
        last[pid] = max(last.get(pid, 0.0), c1)
    return sum(last.values())


def _report(events: list[Event]) -> None:
    parent = events[0][0]
    own = [e for e in events if e[0] == parent]
    wall = max(e[3] for e in own)  # (the CLI may end the process before "end" is logged)
    print(f"{'step':24} {'wall ms from start':>20} {'CPU ms':>8}")
    for _pid, name, w0, w1, c0, c1 in sorted(own, key=lambda e: e[2]):
        if name in ("end", "_work", "finish", "shard_files", "put_search_extracts"):
            continue
        print(f"{name:24} {w0:9.1f} {w1:9.1f} {c1 - c0:9.1f}")
    forked = 0.0
    busiest = 0.0  # each forked step's busiest process's CPU ms, summed
    gaps: list[float] = []  # the parent's CPU ms outside forked steps: before the first, between, after
    mark = 0.0  # its CPU at the end of the last forked step
    print("\nforked steps (each process: its runs' CPU ms, wall ms of its first run's start and last end):")
    for _pid, _name, w0, w1, c0, c1 in (e for e in own if e[1] == "fork_map"):
        works = [e for e in events if e[1] == "_work" and w0 <= e[2] <= w1]
        if not works or all(e[0] == parent for e in works):
            continue  # not forked: in-process (few items, one job)
        forked += c1 - c0
        busiest += max(c1 - c0, *(e[5] - e[4] for e in works if e[0] != parent))
        gaps.append(c0 - mark)
        mark = c1
        ends = [e[3] for e in works]
        shares = ", ".join(
            f"{'parent' if e[0] == parent else e[0]} {e[5] - e[4]:.0f} ({e[2]:.0f}-{e[3]:.0f})" for e in works
        )
        print(f"  {w0:8.1f}-{w1:8.1f}: {shares}; the first to end waited {max(ends) - min(ends):.0f} ms")
    total = _total_cpu(events)
    serial = max(e[5] for e in own) - forked
    gaps.append(max(e[5] for e in own) - mark)
    print(
        "the parent's serial CPU ms before, between and after the forked steps:",
        " / ".join(f"{g:.0f}" for g in gaps),
    )
    print(
        f"\nwall {wall:.0f} ms; CPU {total:.0f} ms (all processes); the parent's serial CPU {serial:.0f} ms"
        f" ({serial / total:.0%}), its CPU in forked steps {forked:.0f} ms; CPU/wall {total / wall:.2f}"
    )
    # what the wall would be on idle cores (start-up aside): CPU times stretch with load far less
    # than wall times, so this compares trees on a busy machine where the wall cannot
    print(f"critical path {serial + busiest:.0f} ms (the serial CPU + each forked step's busiest process)")
    _others(events, parent)


def _others(events: list[Event], parent: int) -> None:
    """The steps of processes the parent forked outside the forked steps (a rebuild's render child),
    and the parent's waits for them: wall in a call to the child beyond its own CPU there."""
    workers = {e[0] for e in events if e[1] == "_work"}
    others = [e for e in events if e[0] not in workers and e[0] != parent]
    if not others:
        return
    print("\nother processes (step: wall ms from start, CPU ms):")
    for pid, name, w0, w1, c0, c1 in sorted(others, key=lambda e: (e[0], e[2])):
        print(f"  {pid} {name:22} {w0:9.1f} {w1:9.1f} {c1 - c0:9.1f}")
    waits = [(n, w1 - w0 - (c1 - c0)) for p, n, w0, w1, c0, c1 in events if p == parent and n in _CALLS]
    print("the parent's waits for them (ms):", ", ".join(f"{n} {w:.1f}" for n, w in waits) or "none")


#: the parent's calls of the render child: their wall beyond their CPU is waiting for it
_CALLS = ("render", "end_call")


def _rebuilds(
    tree: Path, site: Path, work: Path, jobs: int, rounds: int, idle: bool = False
) -> list[list[Event]]:
    """One-page rebuilds traced (``--rebuild``): a full build and a no-change rebuild first, then each
    round edits the body of the same page (no other page shows it) and rebuilds."""
    _trace(tree, site, work, jobs)
    _trace(tree, site, work, jobs, clean=False)
    files = sorted((site / "content").rglob("*.md"))
    page = files[len(files) // 2]
    runs = []
    for r in range(rounds):
        page.write_text(page.read_text().replace("\n\n", f"\n\nEdited {r}. ", 1))
        runs.append(_trace(tree, site, work, jobs, clean=False, idle=idle))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--kind", choices=KINDS, default="synthetic", help="the corpus (site_corpus --kind)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="builds; the one with the least CPU is shown")
    ap.add_argument(
        "--tree",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="folder holding the cernvm_build package measured (default: this checkout)",
    )
    ap.add_argument("--work", type=Path, default=None, help="corpus, output and cache (default: a temp dir)")
    ap.add_argument(
        "--rebuild", action="store_true", help="one-page rebuilds after a full build, not cold ones"
    )
    ap.add_argument(
        "--idle", action="store_true", help="fork the render child as on an idle host, whatever the load"
    )
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="site-timeline-"))
    work.mkdir(parents=True, exist_ok=True)
    site = generate(work / "corpus", args.pages, kind=args.kind)["ours"]
    load = _load()
    tree = args.tree.resolve()
    # the package's bytecode first, as an installed copy has it: with PYTHONDONTWRITEBYTECODE set (this
    # project's CI and sandboxes) every traced build compiled its modules from source again, ~0.2 CPU-s
    # of a one-page rebuild's parent (its imports, and the render step's ``_import_later``) that
    # ``bench/site.py`` does not measure, so the critical path shown was not the bench's (sp34a)
    compileall.compile_dir(tree / "cernvm_build", quiet=1)
    if args.rebuild:
        runs = _rebuilds(tree, site, work, args.jobs, args.rounds, args.idle)
    else:
        runs = [_trace(tree, site, work, args.jobs) for _ in range(args.rounds)]
    what = "one-page rebuild" if args.rebuild else "cold build"
    print(
        f"{args.pages} {args.kind} pages, {what}, --jobs {args.jobs}, load {load} before, {_load()} after\n"
    )
    _report(min(runs, key=_total_cpu))
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
