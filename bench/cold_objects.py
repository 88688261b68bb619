"""What one cold object costs the mount daemon's object path on the host (issue 13), in counts.

On an un-seeded first boot of μCernVM (one vCPU under TCG) the guest is never idle, so what a fetched
object costs is its guest CPU: the daemon's Python, SHA-1, inflating, and the kernel's TCP and ext4
work. Those are measured here on the host, as counts that do not move with the load of a shared
machine: Python opcodes and function calls per object (``sys.settrace`` with opcode events,
``cProfile``), system calls per object by name (``strace``, if installed), and with ``--callgrind``
instructions per object (``valgrind``: the run of 3N objects minus the run of N, over 2N). CPU µs
per object (user and system) is printed beside them, noisy.

Objects are the files of a published tree (lognormal sizes up to 128 KiB, about half compressible,
as ``bench/cvmfs_read.py`` makes them), served by ``cvmfs.serve`` in its own process. Each run opens
the repository into a fresh cache as the mount daemon does (inflated copies, holdings, the clean
marker taken) and then makes every object once: ``demand`` as a reader's miss (``Revision.whole``,
one GET each), ``ahead`` as the prefetcher's and the boot list's pipelined batches of 8
(``fetch_ahead_many``). Runs as the initrd does where it matters: no ``_hashlib`` (its SHA-1 is
Python's built-in one).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.argv[1:2] == ["--child"]:
    sys.modules["_hashlib"] = None  # type: ignore[assignment]  # as the initrd: no OpenSSL, built-in SHA-1

if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))  # run as a script

from bench.common import Result, flags, print_table  # noqa: E402

MODES = ("demand", "ahead")
BATCH = 8
BEGIN, END = b"cold-objects-begin", b"cold-objects-end"


def make_repository(work: Path, n: int) -> Path:
    """``n`` files published into ``work/srv``; returns the public key."""
    from bench.cvmfs_read import FQRN, _content, publish

    rng = random.Random(5)
    tree = work / "tree"
    for i in range(n):
        size = min(128 << 10, max(1, int(rng.lognormvariate(8.8, 1.3))))
        folder = tree / f"d{i % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}").write_bytes(_content(rng, size))
    return publish(work, tree, FQRN)[1]


def _child(url: str, key: str, mode: str, n: int, how: str) -> None:
    """One measured run (in its own process): prints a JSON line of its counts."""
    import collections
    import cProfile
    import pstats
    import resource

    from bench.cvmfs_read import FQRN
    from cernvm_build.cvmfs.plaincache import STALE_TMP_S
    from cernvm_build.cvmfs.repository import open_repository

    cache = Path(tempfile.mkdtemp(prefix="cold-objects-"))
    try:
        repo = open_repository(
            f"{url}/cvmfs/{FQRN}", fqrn=FQRN, public_keys=[Path(key)], cache_dir=cache, inflated=True
        )
        objects, plain = repo.store.cache, repo.store.plain_cache
        assert objects is not None and plain is not None
        objects.hold()
        plain.hold(sweep_before=time.time() - STALE_TMP_S)
        plain.take_clean()
        plain._settle()
        files = [e for e in repo.walk("/") if e.kind == 0o100000 and not e.chunks][:n]
        items = [(e.content_hash or "", "", e.size, e.compressed, f"file {e.path}") for e in files]
        ops: collections.Counter[str] = collections.Counter()

        def trace(frame, event, arg):  # type: ignore[no-untyped-def]
            frame.f_trace_opcodes = True
            if event == "opcode":
                ops["opcodes"] += 1
            return trace

        prof = cProfile.Profile()
        marker = os.open(os.devnull, os.O_WRONLY)
        os.write(marker, BEGIN)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        if how == "trace":
            sys.settrace(trace)
            prof.enable()
        if mode == "demand":
            for e in files:
                repo.whole(e)
        else:
            for i in range(0, len(items), BATCH):
                repo.store.fetch_ahead_many(items[i : i + BATCH], keep=False, retry=False)
        prof.disable()
        sys.settrace(None)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        os.write(marker, END)
        out: dict[str, float] = {"objects": len(files)}
        if how == "trace":
            out.update(opcodes=ops["opcodes"], calls=pstats.Stats(prof).total_calls)  # type: ignore[attr-defined]
        else:
            out.update(user_us=(r1.ru_utime - r0.ru_utime) * 1e6, sys_us=(r1.ru_stime - r0.ru_stime) * 1e6)
        print(json.dumps(out), flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _run(argv: list[str], prefix: list[str] | None = None) -> dict[str, float]:
    """A child's counts; ``argv``: url, key, mode, objects, how (``cpu`` or ``trace``)."""
    cmd = [*(prefix or []), sys.executable, str(Path(__file__).resolve()), "--child", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _syscalls(argv: list[str], log: Path) -> dict[str, int]:
    """System calls by name between the child's markers (``strace -f``)."""
    _run(argv, ["strace", "-f", "-qq", "-o", str(log)])
    counts: dict[str, int] = {}
    on = False
    for line in log.read_text(errors="replace").splitlines():
        if BEGIN.decode() in line:
            on = True
        elif END.decode() in line:
            break
        elif on and "resumed>" not in line:
            name = line.split(None, 1)[-1].split("(", 1)[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def _instructions(argv: list[str], work: Path, n: int) -> float:
    """Instructions per object: (Ir of 3n objects - Ir of n) / 2n, callgrind."""
    url, key, mode, _, how = argv
    totals = []
    for k in (n, 3 * n):
        out = work / f"cg.{k}"
        _run([url, key, mode, str(k), how], ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
        text = out.read_text(errors="replace")
        totals.append(
            int(
                next(
                    line.split()[1] for line in text.splitlines() if line.startswith(("summary:", "totals:"))
                )
            )
        )
    return (totals[1] - totals[0]) / (2 * n)


def run(quick: bool = True, objects: int | None = None, callgrind: bool = False) -> list[Result]:
    """``make bench`` calls it with ``quick`` alone: 300 objects (else 1,000), no callgrind."""
    from bench.cvmfs_read import _server_process

    n = objects or (300 if quick else 1000)
    results = []
    with tempfile.TemporaryDirectory(prefix="cold-objects-") as tmp:
        work = Path(tmp)
        key = make_repository(work, n * (3 if callgrind else 1))
        with _server_process(work / "srv") as url:
            for mode in MODES:
                argv = [url, str(key), mode, str(n)]
                cpu = _run([*argv, "cpu"])
                traced = _run([*argv, "trace"])
                per = traced["objects"]
                extra: dict[str, float | str] = {
                    "objects": per,
                    "calls": round(traced["calls"] / per, 1),
                    "user_us": round(cpu["user_us"] / per, 1),
                    "sys_us": round(cpu["sys_us"] / per, 1),
                    "load": f"{os.getloadavg()[0]:.1f}",
                }
                if shutil.which("strace"):
                    calls = _syscalls([*argv, "cpu"], work / f"strace.{mode}")
                    extra["syscalls"] = round(sum(calls.values()) / per, 2)
                    extra.update(
                        {f"sys.{k}": round(v / per, 2) for k, v in sorted(calls.items()) if v >= per / 10}
                    )
                if callgrind and shutil.which("valgrind"):
                    extra["instructions"] = round(_instructions([*argv, "cpu"], work, n))
                what = f"{mode} ({'one GET each' if mode == 'demand' else f'batches of {BATCH}'})"
                results.append(
                    Result("cvmfs.cold_objects", what, traced["opcodes"] / per, "opcodes", extra=extra)
                )
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        url, key, mode, n, how = sys.argv[2:7]
        _child(url, key, mode, int(n), how)
        raise SystemExit(0)
    flags(
        __doc__,
        {
            "--objects": "=N objects per run (default 300; make bench: 300)",
            "--callgrind": "instructions too (minutes)",
        },
    )
    given = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--objects=")), "300")
    if not (given.isascii() and given.isdigit() and 0 < int(given) <= 100_000):
        print(f"error: --objects={given}: expected a count from 1 to 100000", file=sys.stderr)
        raise SystemExit(2)
    count = int(given)
    rows = run(objects=count, callgrind="--callgrind" in sys.argv[1:])
    print_table(rows)
    for row in rows:
        print(f"{row.metric}: {row.extra}")
