"""Hostile repositories (issue 12): what a zlib bomb and a million-entry directory cost ``cvmfs export``,
next to a plain export of a normal repository of the same size; and what the hardening costs on a
normal export, the current code next to the code before it (commit b517710), in the same run.

- bomb: ``/dir/file`` is 1 GiB of zeros stored as a ~1 MB zlib object (the hostile corpus's
  ``bomb-file``), refused — vs the same repository with a normal 1 MiB file in its place.
- million: one directory of N empty files (N = 1,000,000; 100,000 with ``--quick``), exported — vs
  the same N files in directories of 1,000.
- hardening: export of the 20,000-file tree (5,000 with ``--quick``) by the current ``cernvm_build``
  and by b517710's (``git archive b517710 cernvm_build``), interleaved runs, the best of each; aim:
  current / before < 1.05 (wall and CPU).

Every export runs the real CLI in its own process (its own peak RSS, VmHWM; memory capped at 4 GiB so
that a reader without limits fails instead of swapping the host).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))  # run as a script

from bench.common import Process, Result, flags, measure_process, print_table, python_module  # noqa: E402
from tests.support import hostile  # noqa: E402

BEFORE = "b517710"  # main before the hardening of issue 12
CAP_MB = 4096


def _export(repo: hostile.Repo, dest: Path, pythonpath: Path, cache: Path) -> Process:
    argv = python_module("cernvm_build.cli.main", "cvmfs", "export", *repo.cli_args(), str(dest))
    env = dict(os.environ, PYTHONPATH=str(pythonpath), CERNVM_CACHE_DIR=str(cache), COLUMNS="200")
    try:
        return measure_process(argv, env=env, cwd=dest.parent, timeout=1800, address_space_mb=CAP_MB)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


def _error(p: Process) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit {p.returncode}")[:160]


def _normal_file(base: hostile.Repo, dest: Path) -> hostile.Repo:
    """The base repository with a normal 1 MiB file where the bomb case puts its bomb."""
    repo = hostile.copy_repo(base, dest)
    data = random.Random(1).randbytes(1 << 20)
    with hostile.Editor(repo) as ed:
        name = ed.put(data)
        hostile.set_column(ed.catalog(), "/dir/file", hash=bytes.fromhex(name), size=len(data))
    return repo


def _spread(base: hostile.Repo, dest: Path, n: int) -> hostile.Repo:
    """The base repository plus ``n`` empty files in directories of 1,000 (/spread/dNNNN/fNNNNNNN)."""
    repo = hostile.copy_repo(base, dest)
    unpack = struct.Struct("<qq").unpack
    with hostile.Editor(repo, level=1) as ed:
        db = ed.catalog()
        hostile.add_row(db, "/", "spread", mode=stat.S_IFDIR | 0o755, size=4096)
        db.execute("BEGIN")
        for d in range((n + 999) // 1000):
            parent = f"/spread/d{d:04d}"
            hostile.add_row(db, "/spread", parent.rsplit("/", 1)[1], mode=stat.S_IFDIR | 0o755, size=4096)
            p1, p2 = hostile.md5_pair(parent)
            sql = (
                f"INSERT INTO catalog VALUES (?, ?, {p1}, {p2}, 1, NULL, 0, {stat.S_IFREG | 0o644}, "
                f"{hostile.TS}, NULL, {hostile.FLAG_FILE}, ?, '', 0, 0, NULL)"
            )
            names = [f"f{i:07d}" for i in range(d * 1000, min(n, (d + 1) * 1000))]
            db.executemany(
                sql,
                ((*unpack(hashlib.md5(f"{parent}/{x}".encode()).digest()), x) for x in names),
            )
        db.execute("COMMIT")
    return repo


def _million(base: hostile.Repo, dest: Path, n: int) -> hostile.Repo:
    """The corpus's ``million`` case, with ``n`` entries in its one directory."""
    saved = hostile.MILLION
    hostile.MILLION = n
    try:
        return hostile.build_case("million", dest, base)
    finally:
        hostile.MILLION = saved


def _row(bench: str, metric: str, p: Process, ref: Process, ref_name: str, what: str) -> list[Result]:
    extra: dict[str, float | str] = {
        "seconds": round(p.seconds, 2),
        "reference_seconds": round(ref.seconds, 2),
        "exit": p.returncode,
        "reference_exit": ref.returncode,
    }
    if p.returncode:
        extra["error"] = _error(p)
    return [
        Result(
            bench,
            f"{metric}: peak RSS",
            p.peak_rss_mb,
            "MB",
            reference=ref_name,
            reference_value=ref.peak_rss_mb,
            aim="< 256 MB, " + what,
            ok=p.peak_rss_mb < 256 and not p.timed_out,
            extra=extra,
        ),
        Result(bench, f"{metric}: time", p.seconds, "s", reference=ref_name, reference_value=ref.seconds),
    ]


def _old_code(work: Path) -> Path:
    """b517710's ``cernvm_build``, extracted from git."""
    out = work / "before"
    out.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", BEFORE, "cernvm_build"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def _tree_repo(work: Path, n_files: int, total_mb: int) -> hostile.Repo:
    """The cvmfs_read benchmark's synthetic tree, published (in a child process: memory is its own)."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "cvmfs_read.py"),
            "--make",
            str(work),
            str(n_files),
            str(total_mb),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    stratum, pub = Path(out[0]), Path(out[1])
    return hostile.Repo(stratum, pub.parent, stratum.name)


def run(quick: bool = True) -> list[Result]:
    n_entries = 100_000 if quick else hostile.MILLION
    n_files, total_mb, repeats = (5000, 40, 3) if quick else (20000, 200, 5)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        work = Path(tmp)
        base = hostile.publish_base(work / "base")
        cache = work / "cache"

        # -- the bomb, next to a normal file of the same stored size --------------------------------
        bomb = hostile.build_case("bomb-file", work / "bomb", base)
        normal = _normal_file(base, work / "normal")
        p_bomb = _export(bomb, work / "out", ROOT, cache)
        p_norm = _export(normal, work / "out", ROOT, cache)
        results += _row(
            "hostile.export", "zlib bomb (1 GiB in 1 MB)", p_bomb, p_norm, "normal 1 MiB file", "refused"
        )
        results[-2].ok = results[-2].ok and p_bomb.returncode != 0

        # -- a directory of N entries, next to N entries in directories of 1,000 ---------------------
        many = _million(base, work / "many", n_entries)
        spread = _spread(base, work / "spread", n_entries)
        p_many = _export(many, work / "out", ROOT, cache)
        p_spread = _export(spread, work / "out", ROOT, cache)
        label = f"{n_entries:,} entries in one directory"
        results += _row("hostile.export", label, p_many, p_spread, "same in dirs of 1,000", "exported")
        results[-2].ok = results[-2].ok and p_many.returncode == 0

        # -- the hardening's cost on a normal export: now vs before (b517710) -------------------------
        tree = _tree_repo(work / "tree", n_files, total_mb)
        before = _old_code(work)
        runs: dict[str, list[Process]] = {"now": [], "before": []}
        for _ in range(repeats):  # interleaved, so that load from elsewhere hits both alike
            for name, path in (("now", ROOT), ("before", before)):
                p = _export(tree, work / "out", path, cache)
                if p.returncode:
                    raise RuntimeError(f"export by the {name} code failed: {_error(p)}")
                runs[name].append(p)
        for metric, unit, key in (("wall", "s", "seconds"), ("CPU", "s", "cpu_seconds")):
            now = min(getattr(p, key) for p in runs["now"])
            old = min(getattr(p, key) for p in runs["before"])
            results.append(
                Result(
                    "hostile.hardening",
                    f"export {n_files:,} files: {metric}",
                    now,
                    unit,
                    reference=f"before ({BEFORE})",
                    reference_value=old,
                    aim="< 1.05 x before",
                    ok=now < 1.05 * old,
                    extra={
                        "runs": repeats,
                        "all": " ".join(f"{getattr(p, key):.2f}" for p in runs["now"]),
                        "all_before": " ".join(f"{getattr(p, key):.2f}" for p in runs["before"]),
                        "peak_rss_mb": round(max(p.peak_rss_mb for p in runs["now"]), 1),
                        "peak_rss_mb_before": round(max(p.peak_rss_mb for p in runs["before"]), 1),
                    },
                )
            )
    return results


if __name__ == "__main__":
    flags(__doc__, {"--full": "the full-size run (the default is the quick one)"})
    rows = run(quick="--full" not in sys.argv)
    print_table(rows)
    for r in rows:
        print(f"{r.bench} {r.metric}: {r.extra}")
