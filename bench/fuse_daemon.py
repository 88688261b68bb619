"""The FUSE daemon's CPU per request kind (issue 13: the μCernVM boot's extra is in the guest's one CPU,
much of it the mount daemon's), on the host: this tree's daemon next to a reference tree's (``--ref
DIR``: e.g. ``git archive main cernvm_build | tar -x -C DIR``), in alternating rounds.

A Debian-like tree (by default the host's ``/usr/lib/python3.11`` and ``/usr/share/perl``: many small
files, as a boot reads) is published and served on 127.0.0.1 from its own process; each round mounts
it as the initrd does (``--no-magic-xattrs --prefetch-in-order``, plain cache on a fresh folder,
its FUSE layer — the kernel's protocol itself, or libfuse3 for a tree before issue 13 —, 1 MiB
read-ahead), walks it like a boot (``lstat`` every entry, read every regular file
whole), unmounts, remounts on the now warm cache and walks again. Figures: the daemon's whole CPU
seconds per walk (``schedstat`` of all its threads, the fetching ones too) and, from ``mount
--stats``, the handlers' CPU microseconds per request by kind, both as medians over the rounds, ours
beside the reference's (after one round not counted). CPU, not wall time: other work shares the
machine; on 2 cores at load 4-10 the same code beside itself came out 0.87-1.10x warm (cold
1.00-1.10x) in four runs: a difference inside that is not shown.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))  # run as a script

from bench.common import Result, flags, print_table  # noqa: E402
from bench.cvmfs_read import _server_process, publish  # noqa: E402

FQRN = "daemon.cernvm.test"
SOURCES = ["/usr/lib/python3.11", "/usr/share/perl"]
LIBFUSE3 = "/usr/lib/x86_64-linux-gnu/libfuse3.so.3"


def _publish(work: Path, sources: list[str]) -> tuple[Path, Path]:
    tree = work / "tree"
    for src in sources:
        shutil.copytree(src, tree / src.strip("/"), symlinks=True, ignore_dangling_symlinks=True)
    return publish(work, tree, FQRN)


def _walk(root: Path) -> int:
    """lstat every entry, read every regular file whole (as a boot reads: small files at once)."""
    n = 0
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if name in names and (st.st_mode & 0o170000) == 0o100000:
                with open(p, "rb", buffering=0) as f:
                    while f.read(1 << 20):
                        pass
            n += 1
    return n


def _pids(mnt: Path) -> Iterator[str]:
    """The daemons serving (or starting to serve) ``mnt``, by their command line."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if str(mnt).encode() in cmd and b"cernvm_build.cvmfs.mount" in cmd:
                    yield pid


def _daemon_pid(mnt: Path) -> str:
    for pid in _pids(mnt):
        return pid
    raise RuntimeError(f"no daemon serving {mnt}")


def _cpu(pid: str) -> float:
    """The daemon's CPU seconds so far, in ns steps (``schedstat`` of each of its threads: the
    clock ticks of ``/proc/PID/stat`` are 10 ms, a tenth of a warm walk)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total / 1e9


def _read_ahead(mnt: Path) -> str | None:
    """1 MiB read-ahead on the mount, as the initrd sets it (``10-cvmfs.sh``): READs of up to 1 MiB;
    returns a note where it could not be set."""
    dev = os.stat(mnt).st_dev
    knob = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    try:
        knob.write_text("1024")
    except OSError as e:
        # not fatal (a user may mount FUSE but not write /sys), but READs are then at most the
        # default's size, not the initrd's: the per-READ figures are not a boot's
        return f"read-ahead not set to 1 MiB ({e.strerror}): READs use the default"
    return None


def _stats(path: Path) -> dict[str, tuple[int, float]]:
    out = {}
    for line in path.read_text().splitlines():
        name, count, _wall, cpu = line.split()
        out[name] = (int(count), float(cpu))
    return out


def _mounted(mnt: Path) -> bool:
    """Whether ``mnt`` is a mount point, also when its daemon is gone (``os.path.ismount`` says no
    then: its ``lstat`` fails with ENOTCONN)."""
    target = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _fusermount(*args: str) -> bool:
    """``fusermount3 args``: True if it unmounted. Never raises: ``_end`` runs in a ``finally``, where
    its error (fusermount3 missing, hung) would replace the one being raised (a failed mount's, a
    Ctrl-C); the daemons are then killed all the same."""
    try:
        return subprocess.run(["fusermount3", *args], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _end(mnt: Path, wait: float = 10.0) -> bool:
    """Unmount ``mnt`` and end its daemon, whatever state the start or the walk left them in (a
    Ctrl-C or a timeout while the mount starts leaves a daemon that goes on: it called setsid).
    True if the daemon ended by itself within ``wait`` seconds after the unmount (then it wrote its
    last counts); False if it had to be killed."""
    if _mounted(mnt):
        if not _fusermount("-u", str(mnt)):  # busy: detach now, the daemon ends when the last user closes
            _fusermount("-uz", str(mnt))
        deadline = time.monotonic() + wait
        while any(True for _ in _pids(mnt)) and time.monotonic() < deadline:
            time.sleep(0.1)  # the daemon writes its last counts as it ends
    pids = list(_pids(mnt))
    for pid in pids:  # not mounted (yet) or did not end: it will not write its counts now
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + wait
    while any(True for _ in _pids(mnt)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a killed process stays in /proc until its parent (init) reaps it
    if _mounted(mnt):  # it mounted between the check and the kill: its mount is dead now
        _fusermount("-uz", str(mnt))
    return not pids


def _round(tree: str, url: str, pub: Path, work: Path, notes: set[str] | None = None) -> dict[str, float]:
    """Cold and warm walks through a daemon from ``tree``; returns the figures of both (and adds to
    ``notes`` what makes them differ from a boot's)."""
    mnt, cache = work / "mnt", work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    mnt.mkdir(exist_ok=True)
    out: dict[str, float] = {}
    for phase in ("cold", "warm"):
        stats = work / f"stats-{phase}"
        stats.unlink(missing_ok=True)  # the same path every round: never read another's counts
        cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", url]
        cmd += ["--public-key", str(pub), "--cache", str(cache), "--stats", str(stats)]
        cmd += ["--no-magic-xattrs", "--prefetch-in-order", str(mnt)]
        env = os.environ | {"FUSE_LIBRARY_PATH": LIBFUSE3, "PYTHONPATH": tree}
        try:
            try:
                # run from the tree: ``-m`` puts the working directory first on sys.path
                subprocess.run(
                    cmd,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    timeout=300,
                    env=env,
                    cwd=tree,
                )
            except subprocess.CalledProcessError as e:
                why = (e.stderr or "").strip().splitlines() or [f"exit status {e.returncode}"]
                raise RuntimeError(f"mounting {tree}'s daemon on {mnt} failed: {why[-1]}") from None
            note = _read_ahead(mnt)
            if note is not None and notes is not None:
                notes.add(note)
            pid = _daemon_pid(mnt)
            c0 = _cpu(pid)
            out[f"{phase} entries"] = _walk(mnt)
            time.sleep(0.3)  # fetches ahead finishing
            out[f"{phase} daemon cpu s"] = _cpu(pid) - c0
        finally:
            ended = _end(mnt)
        if not ended or not stats.exists():
            raise RuntimeError(
                f"the daemon on {mnt} did not end within 10 s of its unmount or ended without writing"
                " its counts (hint: a loaded host: run again)"
            )
        for name, (count, cpu) in _stats(stats).items():
            if name[0] not in "@~" and count:
                out[f"{phase} {name} n"] = count
                out[f"{phase} {name} us"] = cpu / count * 1e6
            elif name[0] == "~":
                out[f"{phase} {name} s"] = cpu
    return out


def run(
    quick: bool = True, rounds: int | None = None, ref: str | None = None, sources: list[str] | None = None
) -> list[Result]:
    if rounds is None:
        rounds = 1 if quick else 3  # as run_all asks: a quick run is one cold and warm mount per tree
    trees = {"this": str(ROOT)} | ({"ref": ref} if ref else {})
    with tempfile.TemporaryDirectory(prefix="fuse-daemon-") as tmp:
        work = Path(tmp)
        stratum, pub = _publish(work, sources or SOURCES)
        got: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
        notes: set[str] = set()
        with _server_process(stratum) as url:
            # a first round of the reference, not counted: the server's process and the page cache
            # of its objects start cold, which only the first daemon to run would pay
            _round(trees["ref" if ref else "this"], url, pub, work, notes)
            for r in range(rounds):
                order = list(trees) if r % 2 == 0 else list(reversed(trees))
                for name in order:
                    got[name].append(_round(trees[name], url, pub, work, notes))
    results = []
    keys = sorted({k for rows in got["this"] for k in rows if k.endswith((" cpu s", " us", " s"))})
    for key in keys:
        med = {name: statistics.median(row.get(key, 0.0) for row in rows) for name, rows in got.items()}
        n = (
            statistics.median(row.get(key[:-3] + " n", 0) for row in got["this"])
            if key.endswith(" us")
            else 0
        )
        unit = "µs" if key.endswith(" us") else "s"
        results.append(
            Result(
                "cvmfs.fuse_daemon",
                key.rsplit(" ", 1)[0],
                med["this"],
                unit,
                reference="ref tree" if ref else None,
                reference_value=med.get("ref"),
                # the per-request figures carry what makes them unlike a boot's
                extra=({"requests": n} | ({"note": "; ".join(sorted(notes))} if notes else {})) if n else {},
            )
        )
    return results


if __name__ == "__main__":
    flags(
        __doc__,
        {
            "--ref": "DIR: the reference tree (PYTHONPATH)",
            "--rounds": "N (default 3)",
            "--source": "DIR to publish (repeatable)",
        },
    )
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", action="append")
    args = parser.parse_args()
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        rows = run(quick=False, rounds=args.rounds, ref=args.ref, sources=args.source)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for note in sorted({str(r.extra["note"]) for r in rows if "note" in r.extra}):
        print(f"note: {note}", file=sys.stderr)
    print_table(rows)
    for r in rows:
        shown = {k: v for k, v in r.extra.items() if k != "note"}
        if shown:
            print(f"{r.metric}: {shown}")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
