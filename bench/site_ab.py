"""The site builder's cold full build, two code trees alternated through the command line (an A/B of a
change, where ``bench/site.py`` compares with Hugo and MkDocs).

    git archive main cernvm_build | tar -x -C /tmp/old      # a tree: a folder holding cernvm_build/
    python bench/site_ab.py /tmp/old . --pages 1000 --rounds 6 --jobs 2 1 --work /dev/shm/ab
    python bench/site_ab.py /tmp/old . --kind prose --highlight --jobs      # real prose, 18 languages
    python bench/site_ab.py /tmp/old . --rebuild --rounds 12 --jobs         # one-page and no-change rebuilds

Each run is ``cernvm-build site build --json --jobs J`` with ``PYTHONPATH=<tree>`` into an output and
cache folder removed before it (a cold full build) on the corpus of ``bench/site_corpus.py``; the trees
alternate round by round, so load that comes and goes falls on both. Figures per tree and job count:
CPU seconds (user + sys of the process tree, forked workers included), wall seconds and minor page
faults, min and median, beside the other tree's from the same run, with the load average before and
after. ``--rebuild``: each round edits one page's body, then each tree (in alternating order) rebuilds
through the CLI into its own output and cache, built before the rounds: a one-page rebuild, then a
no-change one. The trees' bytecode is compiled first (as an installed package has it). ``--work`` on a tmpfs
(/dev/shm) keeps the file system's own cost out of the comparison: on ext4 the sys time of creating a
build's ~2,700 files and folders moved by seconds from run to run.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.site_corpus import KINDS, generate

VENV_BIN = Path(sys.executable).parent


def _run(
    tree: Path, site: Path, work: Path, jobs: int | None, *, clean: bool = True
) -> tuple[float, float, int]:
    """One build; ``clean``: output and cache removed first; ``jobs`` None: the default."""
    out, cache = work / "out", work / "cache"
    for d in (out, cache) if clean else ():
        shutil.rmtree(d, ignore_errors=True)
    exe = VENV_BIN / "cernvm-build"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cernvm_build.cli.main"]
    cmd += ["site", "build", "--site", str(site), "--out", str(out), "--json"]
    cmd += ["--jobs", str(jobs)] if jobs is not None else []
    env = {**os.environ, "PYTHONPATH": str(tree), "CERNVM_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{tree}: build failed: {err.strip()[-1000:]}")
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_minflt


#: a fresh process highlights every fenced block of the corpus in page order, as a ``--jobs 1`` build's
#: render step does (lexers made, states joined, no cache), and prints its CPU seconds for that
_HIGHLIGHT = """
import re, sys, time
from pathlib import Path
from cernvm_build.site import markdown as md
fence = re.compile(r"^```([^\\n]*)\\n(.*?)^```", re.M | re.S)
blocks = [m.groups() for p in sorted(Path(sys.argv[1]).rglob("*.md")) for m in fence.finditer(p.read_text())]
start = time.process_time()
for lang, code in blocks:
    md._highlighted(lang.strip(), code)
print(time.process_time() - start, len(blocks))
"""


def _highlight(tree: Path, site: Path) -> tuple[float, int]:
    # -P: the tree's package, not one in the current folder (``-c`` would put that first)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-P", "-c", _HIGHLIGHT, str(site / "content")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: highlighting failed: {out.stderr.strip()[-1000:]}")
    cpu, blocks = out.stdout.split()
    return float(cpu), int(blocks)


def _rebuilds(trees: dict[str, Path], site: Path, work: Path, rounds: int) -> None:
    """One-page and no-change rebuilds of each tree, alternated (``--rebuild``)."""
    folders = {name: work / f"rebuild-{name}" for name in trees}
    for name, tree in trees.items():
        _run(tree, site, folders[name], None)
        _run(tree, site, folders[name], None, clean=False)
    page = sorted((site / "content").rglob("*.md"))[len(list((site / "content").rglob("*.md"))) // 2]
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    load = _load()
    for r in range(rounds):
        text = page.read_text()
        page.write_text(text.replace("\n\n", f"\n\nEdited {r}. ", 1))  # the body: no other page shows it
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            for what in ("one page", "no change"):
                cpu, wall, _faults = _run(trees[name], site, folders[name], None, clean=False)
                got.setdefault((what, name), []).append((cpu, wall))
    for what in ("one page", "no change"):
        for name in trees:
            cpu, wall = zip(*got[(what, name)], strict=True)
            print(
                f"{what} {name}: CPU-s min {min(cpu):.3f} median {statistics.median(cpu):.3f}"
                f" | wall-s min {min(wall):.3f} median {statistics.median(wall):.3f}"
            )
    print(f"rebuilds: load {load} before, {_load()} after")


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="folder holding the reference's cernvm_build package")
    ap.add_argument("new", type=Path, help="folder holding the changed cernvm_build package")
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--kind", choices=KINDS, default="synthetic", help="the corpus (site_corpus --kind)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--jobs", type=int, nargs="*", default=[2, 1], help="job counts (none: builds skipped)")
    ap.add_argument(
        "--work", type=Path, default=None, help="corpus, outputs and caches (default: a temp dir)"
    )
    ap.add_argument(
        "--highlight", action="store_true", help="also: highlighting the corpus's code blocks, one process"
    )
    ap.add_argument("--rebuild", action="store_true", help="also: one-page and no-change rebuilds")
    args = ap.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    for tree in trees.values():
        if not (tree / "cernvm_build").is_dir():
            raise SystemExit(f"{tree} holds no cernvm_build package")
        compileall.compile_dir(tree / "cernvm_build", quiet=1)
    args.work and args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        site = generate(work / "corpus", args.pages, kind=args.kind)["ours"]
        print(f"{args.pages} {args.kind} pages, {args.rounds} rounds, work in {work}; load {_load()}")
        if args.highlight:
            got: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    cpu, blocks = _highlight(tree, site)
                    got[name].append(cpu)
            for name in trees:
                print(
                    f"highlighting {blocks} blocks {name}: CPU-s min {min(got[name]):.3f}"
                    f" median {statistics.median(got[name]):.3f}"
                )
            print(f"highlighting: load {_load()} after")
        if args.rebuild:
            _rebuilds(trees, site, work, args.rounds)
        for jobs in args.jobs:
            runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    runs[name].append(_run(tree, site, work, jobs))
            for name in trees:
                cpu, wall, faults = zip(*runs[name], strict=True)
                print(
                    f"--jobs {jobs} {name}: CPU-s min {min(cpu):.2f} median {statistics.median(cpu):.2f}"
                    f" | wall-s min {min(wall):.2f} median {statistics.median(wall):.2f}"
                    f" | minor faults median {statistics.median(faults):.0f}"
                    f" | CPU each {' '.join(f'{c:.2f}' for c in cpu)}"
                )
            print(f"--jobs {jobs}: load {_load()} after")


if __name__ == "__main__":
    main()
