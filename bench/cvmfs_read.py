"""CernVM-FS reader benchmarks (issue 3): export and FUSE, each next to its reference.

- export: read a whole revision over loopback HTTP, verify every object, inflate, write the tree
  — vs the limit: plain HTTP GET + inflate of the same objects (same number of threads), no checks,
  no writes. Aim: >= 60 % of the limit.
- FUSE: ``find`` + read every file through the mount, with an empty cache (cold) and after a remount
  with the objects cached (warm) — vs the real ``cvmfs2`` 2.11.5 (``../shared/fixtures/cvmfs-real``)
  mounting the same repository from the same HTTP server in the same run (aims: cold <= 1.0x, warm
  <= 1.25x the real client's time); reading the exported tree from the local disk is in ``extra``.
  Ours runs once per front end (``libfuse3``: the daemon on the kernel's protocol, the initrd's, no
  libfuse since issue 13 — the name is kept for comparisons; ``libfuse2``: mfusepy's high-level
  API); ``extra`` has CPU seconds (daemon + reading process) beside the elapsed ones, the fairer
  figure on a loaded machine, and the load average.
- lookup-heavy: ``lstat`` of every entry of a tree of 100,000 entries (20,000 in quick mode) spread
  over nested catalogs (the publisher's automatic split), cold, through both clients.

The synthetic repository (realistic size mix, a few large chunked files) is published with the
toolkit's own publisher and served by ``cvmfs.serve``.

Trustworthy on a shared, loaded machine: the clients run in alternating rounds (``--rounds N``,
default 5 quick and 3 full; ours first in even rounds, the real client first in odd ones), each
round with fresh caches and the same server and inputs. Every figure is given twice, wall and CPU
seconds: the value and the reference are the medians over the rounds, ``extra`` has the best (least)
of each and the ratio of the bests, and the load average's range over the run. The export also
stands against the real client's cold read (issue 14's aim: <= 0.8x, wall).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import contextlib
import http.client
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.common import Result, flags, peak_rss_mb, print_table, timer  # noqa: E402
from cernvm_build.cvmfs.objects import object_path  # noqa: E402
from cernvm_build.cvmfs.repository import Repository, open_repository  # noqa: E402
from cernvm_build.fsutil import remove_tree  # noqa: E402
from tests.cvmfs_interop.real import RealTools, RealToolsMissing, find_tools, mounted  # noqa: E402
from tests.support.bigfs import loop_ext4  # noqa: E402

FQRN = "bench.cernvm.test"
JOBS = 8  # parallel downloads, the same for the export and its reference
WORDS = [b"cernvm", b"physics", b"event", b"detector", b"calibration", b"run", b"lumi", b"track", b"\n"]


_TEXT: bytes = b""


def _content(rng: random.Random, size: int) -> bytes:
    """Half random bytes, half text: compresses roughly 2:1 like a software tree."""
    global _TEXT
    if not _TEXT:
        pool = random.Random(7)
        _TEXT = b" ".join(pool.choice(WORDS) for _ in range(400_000))
    half = size // 2
    need = size - half
    text = b""
    while len(text) < need:  # a random window of the word pool, wrapped as needed
        start = rng.randrange(len(_TEXT))
        text += _TEXT[start : start + need - len(text)]
    return rng.randbytes(half) + text


def make_tree(root: Path, n_files: int, total_mb: int, seed: int = 42) -> int:
    """A tree of ``n_files`` files, ~``total_mb`` MB: many small, some medium, a few large (chunked)."""
    rng = random.Random(seed)
    total = total_mb << 20
    n_large = max(1, total_mb // 100)
    large_each = int(total * 0.4) // n_large
    small_budget = total - large_each * n_large
    n_small = n_files - n_large
    sizes = [max(0, int(rng.lognormvariate(8.5, 1.6))) for _ in range(n_small)]
    scale = small_budget / max(1, sum(sizes))
    sizes = [int(s * scale) for s in sizes] + [large_each] * n_large
    written = 0
    for i, size in enumerate(sizes):
        d = root / f"d{i % 50:02d}" / f"s{(i // 50) % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.dat").write_bytes(_content(rng, size))
        written += size
    (root / "bin").mkdir(exist_ok=True)
    os.symlink("../d00", root / "bin" / "link")
    return written


def publish(work: Path, tree: Path, fqrn: str = FQRN) -> tuple[Path, Path]:
    """Publish ``tree`` (removed after) as a new repository ``work/srv/<fqrn>`` with keys in
    ``work/keys``; returns (stratum dir, public key)."""
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.publish import create_repository, publish_tree

    stratum = work / "srv" / fqrn
    keys = generate_keys(fqrn)
    keydir = work / "keys"
    keys.save(keydir)
    create_repository(stratum, fqrn, keys)
    publish_tree(stratum, fqrn, keys, tree)
    shutil.rmtree(tree)
    return stratum, keydir / f"{fqrn}.pub"


def make_repository(work: Path, n_files: int, total_mb: int) -> tuple[Path, Path, int]:
    """Publish a synthetic tree; returns (stratum dir, public key, bytes of content)."""
    tree = work / "tree"
    size = make_tree(tree, n_files, total_mb)
    stratum, pub = publish(work, tree)
    return stratum, pub, size


def _objects(repo: Repository) -> list[str]:
    out: dict[str, None] = {}
    for e in repo.walk("/"):
        if not e.is_file:
            continue
        if e.chunks:
            for c in e.chunks:
                out[object_path(c.hash, "P")] = None
        elif e.content_hash:
            out[object_path(e.content_hash, "")] = None
    return list(out)


_conns = threading.local()


def get_blocks(url: str) -> Iterator[bytes]:
    """The body of a GET on this thread's kept-alive connection (as the reader keeps them), in 1 MiB
    blocks: the limit the benchmarks compare with."""
    u = urllib.parse.urlsplit(url)
    conn = getattr(_conns, "c", None)
    if conn is None:
        conn = _conns.c = http.client.HTTPConnection(u.netloc, timeout=30)
    conn.request("GET", u.path)
    resp = conn.getresponse()
    while block := resp.read(1 << 20):
        yield block


def _get_inflate(url: str) -> int:
    """The limit: GET and inflate, nothing else."""
    d = zlib.decompressobj()
    n = sum(len(d.decompress(block)) for block in get_blocks(url))
    return n + len(d.flush())


@contextlib.contextmanager
def _server_process(root: Path) -> Iterator[str]:
    """The Stratum server in its own process, so it does not share the GIL with what is measured."""
    code = (
        "import sys, time; from pathlib import Path; from cernvm_build.cvmfs.serve import serve; "
        "s = serve(Path(sys.argv[1])); print(s.url, flush=True); time.sleep(86400)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _read_all(root: Path) -> tuple[int, int]:
    """``find`` + read every regular file (1 MiB reads); returns (files, bytes)."""
    files = nbytes = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            files += 1
            with open(p, "rb", buffering=0) as f:
                while block := f.read(1 << 20):
                    nbytes += len(block)
    return files, nbytes


def _daemons(mnt: Path) -> Iterator[str]:
    """The processes serving ``mnt`` (ours or cvmfs2, found by the mount point on their command line)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(mnt).encode() in cmd and (b"cernvm_build.cvmfs.mount" in cmd or b"cvmfs2" in cmd[0]):
            yield pid


def _daemon_hwm_mb(mnt: Path) -> float:
    """Peak RSS of the FUSE daemon serving ``mnt``."""
    for pid in _daemons(mnt):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return 0.0


def _daemon_cpu_s(mnt: Path) -> dict[str, float]:
    """CPU seconds (user + system) each daemon serving ``mnt`` used so far, by pid: on a machine
    loaded by other work, the fairer figure than elapsed time."""
    out = {}
    for pid in _daemons(mnt):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


@contextlib.contextmanager
def _cpu(mnt: Path) -> Iterator[dict[str, float]]:
    """CPU seconds of a measured step: the daemons' plus this process's (its system time is the
    kernel's FUSE work on the reader's side). A daemon of the previous mount that ends meanwhile
    does not count (only the daemons there at the end, from what they had at the start)."""
    out: dict[str, float] = {}
    d0, p0 = _daemon_cpu_s(mnt), time.process_time()
    yield out
    d1 = _daemon_cpu_s(mnt)
    out["s"] = sum(v - d0.get(pid, 0.0) for pid, v in d1.items()) + time.process_time() - p0


#: both libfuse versions where installed: libfuse3 is the initrd's, libfuse2 mfusepy's first choice
LIBFUSE = {
    name: path
    for name, path in (
        ("libfuse3", "/usr/lib/x86_64-linux-gnu/libfuse3.so.3"),
        ("libfuse2", "/usr/lib/x86_64-linux-gnu/libfuse.so.2"),
    )
    if os.path.exists(path)
}


def _mount(url: str, pub: Path, mnt: Path, cache: Path, lib: str) -> None:
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", url]
    cmd += ["--public-key", str(pub), "--cache", str(cache), str(mnt)]
    env = os.environ | {"FUSE_LIBRARY_PATH": LIBFUSE[lib]}
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, env=env)


def _unmount(mnt: Path) -> None:
    subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=120)


def make_lookup_repository(work: Path, n_entries: int) -> tuple[Path, Path]:
    """A metadata-heavy repository: ``n_entries`` small files and links in 100-entry directories,
    split into nested catalogs by the publisher (weights scaled down from the real defaults so the
    quick tree is split too)."""
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.nesting import AutoCatalogs
    from cernvm_build.cvmfs.publish import create_repository, publish_tree

    tree = work / "lookup-tree"
    for i in range(n_entries // 100):
        d = tree / f"g{i // 20:03d}" / f"d{i:05d}"
        d.mkdir(parents=True)
        for j in range(95):
            (d / f"file{j:02d}").write_bytes(b"%d" % (j % 7))
        for j in range(5):
            os.symlink(f"file{j:02d}", d / f"link{j}")
    stratum = work / "srv-lookup" / FQRN
    keys = generate_keys(FQRN)
    keys.save(work / "keys-lookup")
    create_repository(stratum, FQRN, keys)
    publish_tree(stratum, FQRN, keys, tree, autocatalogs=AutoCatalogs(max(10_000, n_entries // 10), 1_000))
    shutil.rmtree(tree)
    return stratum, work / "keys-lookup" / f"{FQRN}.pub"


def _lstat_all(root: Path) -> int:
    """``lstat`` every entry (each one a lookup and a getattr through the client)."""
    n = 0
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            os.lstat(os.path.join(dirpath, name))
            n += 1
    return n


def _lookup_heavy(work: Path, n_entries: int, rounds: int, where: str) -> list[Result]:
    out = subprocess.run(
        [sys.executable, __file__, "--make-lookup", str(work), str(n_entries)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    stratum, pub = Path(out[0]), Path(out[1])
    s = Samples()
    s.fs = where
    counts: set[int] = set()
    with _server_process(stratum.parent) as base:
        url = f"{base}/cvmfs/{FQRN}"
        try:
            tools: RealTools | str = find_tools(work / "real-tools-lookup")
        except RealToolsMissing as e:
            tools = str(e)

        def ours(r: int) -> None:
            for lib in LIBFUSE:
                mnt = work / f"mnt-lookup-{lib}-{r}"
                mnt.mkdir()
                cache = work / f"cache-lookup-{lib}-{r}"
                _mount(url, pub, mnt, cache, lib)
                try:
                    with _cpu(mnt) as c, timer() as t:
                        counts.add(_lstat_all(mnt))
                finally:
                    _unmount(mnt)
                shutil.rmtree(cache, ignore_errors=True)
                s.add(f"lstat {lib}", t["s"], c["s"])

        def real(r: int) -> None:
            if isinstance(tools, str):
                return
            with (
                mounted(tools, f"{base}/cvmfs/@fqrn@", FQRN, pub, work / f"real-lookup-{r}") as rmnt,
                _cpu(rmnt) as c,
                timer() as t,
            ):
                counts.add(_lstat_all(rmnt))
            shutil.rmtree(work / f"real-lookup-{r}", ignore_errors=True)
            s.add("lstat real", t["s"], c["s"])

        _alternate(rounds, ours, real, s)
    assert len(counts) == 1, f"the clients list different numbers of entries: {sorted(counts)}"
    n = counts.pop()
    results = []
    for lib in LIBFUSE:
        ref = None if isinstance(tools, str) else ("lstat real", "real cvmfs2 2.11.5, cold")
        results += s.results("cvmfs.fuse", f"lstat {n} entries, cold, {lib}", f"lstat {lib}", ref)
        if isinstance(tools, str):
            results[-1].extra["real_cvmfs2"] = tools
    return results


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class Samples:
    """Each client's figures over the rounds (wall and CPU seconds), and the load average seen."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = collections.defaultdict(list)
        self.cpu: dict[str, list[float]] = collections.defaultdict(list)
        self.loads: list[float] = []
        #: the FUSE daemons' peak memory, by client and step
        self.hwm: dict[str, float] = {}
        #: where the caches, the export and the repository were
        self.fs = ""

    def add(self, key: str, wall: float, cpu: float) -> None:
        self.wall[key].append(wall)
        self.cpu[key].append(cpu)

    def load(self) -> None:
        self.loads.append(os.getloadavg()[0])

    def results(
        self, bench: str, metric: str, key: str, ref: tuple[str, str] | None, aim: float | None = None
    ) -> list[Result]:
        """Two rows, wall and CPU seconds: value and reference are the medians over the rounds,
        ``extra`` holds the best (least) of each and their ratio; ``ok`` is judged on the medians."""
        out = []
        for what, samples in (("wall", self.wall), ("CPU", self.cpu)):
            mine = samples[key]
            extra: dict[str, float | str] = {
                "rounds": len(mine),
                "fs": self.fs,
                "median_s": round(_median(mine), 3),
                "best_s": round(min(mine), 3),
                "load": f"{min(self.loads):.1f}-{max(self.loads):.1f}",
            }
            row = Result(bench, f"{metric}, {what}", _median(mine), "s", extra=extra)
            if ref is not None and samples.get(ref[0]):
                theirs = samples[ref[0]]
                row.reference, row.reference_value = f"{ref[1]}, median", _median(theirs)
                extra |= {
                    "ref_median_s": round(_median(theirs), 3),
                    "ref_best_s": round(min(theirs), 3),
                    "median_ratio": round(_median(mine) / _median(theirs), 2),
                    "best_ratio": round(min(mine) / min(theirs), 2),
                }
                if aim is not None:
                    row.aim, row.ok = f"<= {aim}x (medians)", _median(mine) <= aim * _median(theirs)
            out.append(row)
        return out


def _alternate(rounds: int, ours: Callable[[int], None], real: Callable[[int], None], s: Samples) -> None:
    """The two clients in alternation, ours first in even rounds and the real one first in odd ones
    (so neither always follows the other), the load average noted around every round."""
    for r in range(rounds):
        s.load()
        for step in (ours, real) if r % 2 == 0 else (real, ours):
            step(r)
        s.load()


def _fuse_round(url: str, pub: Path, work: Path, r: int, lib: str, disk: tuple[int, int], s: Samples) -> None:
    """The project's FUSE mount on ``lib``: find + read all with an empty cache of its own, then
    remounted on that cache (warm)."""
    mnt = work / f"mnt-{lib}-{r}"
    mnt.mkdir()
    cache = work / f"cache-{lib}-{r}"
    for label in ("cold", "warm"):
        _mount(url, pub, mnt, cache, lib)
        try:
            with _cpu(mnt) as c, timer() as t:
                got = _read_all(mnt)
            s.hwm[f"{lib} {label}"] = max(s.hwm.get(f"{lib} {label}", 0.0), _daemon_hwm_mb(mnt))
        finally:
            _unmount(mnt)
        assert got == disk, "FUSE read differs from the export"
        s.add(f"{lib} {label}", t["s"], c["s"])
        time.sleep(0.2)
    shutil.rmtree(cache, ignore_errors=True)


def _real_round(
    tools: RealTools, base: str, pub: Path, work: Path, r: int, disk: tuple[int, int], s: Samples
) -> None:
    """The real cvmfs2 on the same server: the same reads, cold (an empty cache of its own) and
    warm (remounted on it)."""
    cache = work / f"real-cache-{r}"
    cache.mkdir()
    config = {"CVMFS_CACHE_BASE": str(cache), "CVMFS_RELOAD_SOCKETS": str(cache)}
    for label in ("cold", "warm"):
        with (
            mounted(tools, f"{base}/cvmfs/@fqrn@", FQRN, pub, work / f"real-{label}-{r}", **config) as mnt,
            _cpu(mnt) as c,
            timer() as t,
        ):
            got = _read_all(mnt)
        assert got == disk, "real cvmfs2 read differs from the export"
        s.add(f"real {label}", t["s"], c["s"])
        time.sleep(0.2)
    shutil.rmtree(cache, ignore_errors=True)


def _export_round(url: str, pub: Path, work: Path, r: int, s: Samples) -> tuple[Path, int]:
    """The limit (GET + inflate of every object, no checks, no writes), then the export."""
    from cernvm_build.cvmfs.export import export_directory

    with open_repository(url, public_keys=[pub]) as repo:
        urls = [f"{url}/{o}" for o in _objects(repo)]
    cpu0 = time.process_time()
    with timer() as t_ref, cf.ThreadPoolExecutor(JOBS) as pool:
        ref_bytes = sum(pool.map(_get_inflate, urls))
    s.add("limit", t_ref["s"], time.process_time() - cpu0)
    dest = work / f"export-{r}"
    cpu0 = time.process_time()
    with timer() as t_exp, open_repository(url, public_keys=[pub]) as repo:
        res = export_directory(repo, dest, jobs=JOBS)
    s.add("export", t_exp["s"], time.process_time() - cpu0)
    assert res.bytes == ref_bytes, f"the export wrote {res.bytes} bytes, the objects inflate to {ref_bytes}"
    return dest, res.files


def default_rounds(quick: bool) -> int:
    return 5 if quick else 3


def run(quick: bool = True, rounds: int | None = None) -> list[Result]:
    n_files, total_mb = (2000, 60) if quick else (20000, 500)
    rounds = rounds or default_rounds(quick)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-cvmfs-read-") as tmp, loop_ext4(Path(tmp)) as fs:
        # On a journaled file system of its own where one can be made (as root): this machine
        # kind's root file system is ext4 without a journal, where creating files soon after others
        # were removed costs several times the CPU (``tests.support.bigfs`` says why). That hit the
        # export (which creates 3,000 nodes) and both clients' cache files by what ran before them:
        # it was most of the spread between runs (cvmfs2's own system time 0.5-3.5 s).
        work = fs or Path(tmp)
        where = "journaled ext4 (loop)" if fs else "the temporary folder's file system"
        # Published in a child process, so this process's peak memory is the reader's own.
        out = subprocess.run(
            [sys.executable, __file__, "--make", str(work), str(n_files), str(total_mb)],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.split()
        stratum, pub, content = Path(out[0]), Path(out[1]), int(out[2])
        mb = content / 1e6
        s = Samples()
        s.fs = where
        with _server_process(stratum.parent) as base:
            url = f"{base}/cvmfs/{FQRN}"
            try:
                tools: RealTools | str = find_tools(work / "real-tools")
            except RealToolsMissing as e:
                tools = str(e)
            rss0 = peak_rss_mb()
            # A warm-up, not counted: it also gives the tree every read is checked against.
            first, files = _export_round(url, pub, work, -1, s)
            s.wall.clear()
            s.cpu.clear()
            with timer() as t_disk:
                disk = _read_all(first)
            remove_tree(first)

            def ours(r: int) -> None:
                dest, _ = _export_round(url, pub, work, r, s)
                remove_tree(dest)
                for lib in LIBFUSE:
                    _fuse_round(url, pub, work, r, lib, disk, s)

            def real(r: int) -> None:
                if not isinstance(tools, str):
                    _real_round(tools, base, pub, work, r, disk, s)

            _alternate(rounds, ours, real, s)
        has_real = not isinstance(tools, str)
        ref_cold = ("real cold", "real cvmfs2 2.11.5 find+read, cold") if has_real else None
        limit_rate = mb / _median(s.wall["limit"])
        exp_rate = mb / _median(s.wall["export"])
        results.append(
            Result(
                "cvmfs.export",
                f"{files} files, {mb:.0f} MB",
                exp_rate,
                "MB/s",
                reference="HTTP GET + inflate, median",
                reference_value=limit_rate,
                aim=">= 60 % of reference",
                ok=exp_rate >= 0.6 * limit_rate,
                extra={
                    "rounds": rounds,
                    "fs": where,
                    "best_MB/s": round(mb / min(s.wall["export"]), 1),
                    "ref_best_MB/s": round(mb / min(s.wall["limit"]), 1),
                    "cpu_median_s": round(_median(s.cpu["export"]), 2),
                    "ref_cpu_median_s": round(_median(s.cpu["limit"]), 2),
                    "peak_rss_mb": round(max(rss0, peak_rss_mb()), 1),
                },
            )
        )
        # the aim for the export: its wall time against the real client's cold read
        results += s.results("cvmfs.export", "export vs cold read", "export", ref_cold, 0.8)[:1]
        aims = {"cold": 1.0, "warm": 1.25}
        for lib in LIBFUSE:
            for label in ("cold", "warm"):
                ref = (f"real {label}", f"real cvmfs2 2.11.5, {label}") if has_real else None
                rows = s.results(
                    "cvmfs.fuse", f"find+read all, {label}, {lib}", f"{lib} {label}", ref, aims[label]
                )
                for row in rows:
                    row.extra["daemon_peak_rss_mb"] = round(s.hwm.get(f"{lib} {label}", 0.0), 1)
                    row.extra["disk_read_s"] = round(t_disk["s"], 3)
                    if not has_real:
                        row.extra["real_cvmfs2"] = str(tools)
                results += rows
        results.extend(_lookup_heavy(work, 20_000 if quick else 100_000, rounds, where))
    return results


if __name__ == "__main__":
    flags(
        __doc__,
        {
            "--full": "the full-size run (the default is the quick one)",
            "--rounds": "N: alternated rounds per row",
            "--make": "internal: make a repository (DIR FILES SIZE)",
            "--make-lookup": "internal: make a lookup repository (DIR N)",
        },
    )
    if sys.argv[1:2] == ["--make-lookup"]:
        print(*make_lookup_repository(Path(sys.argv[2]), int(sys.argv[3])))
        raise SystemExit(0)
    if sys.argv[1:2] == ["--make"]:
        made = make_repository(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        print(*made)
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description="CernVM-FS reader benchmarks, ours vs the real cvmfs2")
    parser.add_argument("--full", action="store_true", help="20,000 files / 500 MB (default: 2,000 / 60 MB)")
    parser.add_argument("--rounds", type=int, help="rounds alternating the clients (default 5 quick, 3 full)")
    args = parser.parse_args()
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = run(quick=not args.full, rounds=args.rounds)
    print_table(rows)
    for r in rows:
        print(f"{r.bench} {r.metric}: {r.extra}")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
