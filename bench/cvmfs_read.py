"""CernVM-FS reader benchmarks (issue 3): export and FUSE, each next to its reference.

- export: read a whole revision over loopback HTTP, verify every object, inflate, write the tree
  — vs the limit: plain HTTP GET + inflate of the same objects (same number of threads), no checks,
  no writes. Aim: >= 60 % of the limit.
- FUSE: ``find`` + read every file through the mount, with an empty cache (cold) and after a remount
  with the objects cached (warm) — vs the real ``cvmfs2`` 2.11.5 (``../shared/fixtures/cvmfs-real``)
  mounting the same repository from the same HTTP server in the same run (aims: cold <= 1.0x, warm
  <= 1.25x the real client's time); reading the exported tree from the local disk is in ``extra``.
  Ours runs once per libfuse installed (libfuse3: the low-level client, the initrd's; libfuse2:
  mfusepy's high-level API); ``extra`` has CPU seconds (daemon + reading process) beside the
  elapsed ones, the fairer figure on a loaded machine, and the load average.
- lookup-heavy: ``lstat`` of every entry of a tree of 100,000 entries (20,000 in quick mode) spread
  over nested catalogs (the publisher's automatic split), cold, through both clients.

The synthetic repository (realistic size mix, a few large chunked files) is published with the
toolkit's own publisher and served by ``cvmfs.serve``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import http.client
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.common import Result, peak_rss_mb, print_table, timer  # noqa: E402
from cernvm_build.cvmfs.objects import object_path  # noqa: E402
from cernvm_build.cvmfs.repository import Repository, open_repository  # noqa: E402
from tests.cvmfs_interop.real import RealToolsMissing, find_tools, mounted  # noqa: E402

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


def make_repository(work: Path, n_files: int, total_mb: int) -> tuple[Path, Path, int]:
    """Publish a synthetic tree; returns (stratum dir, public key, bytes of content)."""
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.publish import create_repository, publish_tree

    tree = work / "tree"
    size = make_tree(tree, n_files, total_mb)
    stratum = work / "srv" / FQRN
    keys = generate_keys(FQRN)
    keydir = work / "keys"
    keys.save(keydir)
    create_repository(stratum, FQRN, keys)
    publish_tree(stratum, FQRN, keys, tree)
    shutil.rmtree(tree)
    return stratum, keydir / f"{FQRN}.pub", size


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


def _lookup_heavy(work: Path, n_entries: int) -> list[Result]:
    out = subprocess.run(
        [sys.executable, __file__, "--make-lookup", str(work), str(n_entries)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    stratum, pub = Path(out[0]), Path(out[1])
    with _server_process(stratum.parent) as base:
        url = f"{base}/cvmfs/{FQRN}"
        ours: dict[str, tuple[int, float, float]] = {}
        for lib in LIBFUSE:
            mnt = work / f"mnt-lookup-{lib}"
            mnt.mkdir()
            _mount(url, pub, mnt, work / f"cache-lookup-{lib}", lib)
            try:
                with _cpu(mnt) as c_ours, timer() as t_ours:
                    n = _lstat_all(mnt)
            finally:
                _unmount(mnt)
            ours[lib] = (n, t_ours["s"], c_ours["s"])
        real: tuple[int, float, float] | str
        try:
            tools = find_tools(work / "real-tools-lookup")
            with (
                mounted(tools, f"{base}/cvmfs/@fqrn@", FQRN, pub, work / "real-lookup") as rmnt,
                _cpu(rmnt) as c_real,
                timer() as t_real,
            ):
                n_real = _lstat_all(rmnt)
            real = (n_real, t_real["s"], c_real["s"])
        except RealToolsMissing as e:
            real = str(e)
    results = []
    for lib, (n, seconds, cpu) in ours.items():
        metric = f"lstat {n} entries, cold, {lib}"
        extra: dict[str, float | str] = {
            "entries": n,
            "cpu_s": round(cpu, 2),
            "load": round(os.getloadavg()[0], 1),
        }
        if isinstance(real, str):
            results.append(Result("cvmfs.fuse", metric, seconds, "s", extra=extra | {"real_cvmfs2": real}))
            continue
        assert real[0] == n, f"the clients list {n} and {real[0]} entries"
        ref = "real cvmfs2 2.11.5, cold"
        extra |= _cpu_extra(cpu, real[2])
        results.append(
            Result("cvmfs.fuse", metric, seconds, "s", reference=ref, reference_value=real[1], extra=extra)
        )
    return results


def _cpu_extra(ours: float, real: float) -> dict[str, float | str]:
    return {
        "cpu_s": round(ours, 2),
        "real_cpu_s": round(real, 2),
        "cpu_ratio": round(ours / max(real, 0.01), 2),
    }


def _fuse_runs(
    url: str, pub: Path, work: Path, files_disk: int, bytes_disk: int, lib: str
) -> dict[str, tuple[float, float, float]]:
    """The project's FUSE mount on ``lib``: find + read all with an empty cache, then remounted (warm)."""
    mnt = work / f"mnt-{lib}"
    mnt.mkdir()
    cache = work / f"cache-{lib}"
    out = {}
    for label in ("cold", "warm"):
        _mount(url, pub, mnt, cache, lib)
        try:
            with _cpu(mnt) as c_fuse, timer() as t_fuse:
                files, nbytes = _read_all(mnt)
            hwm = _daemon_hwm_mb(mnt)
        finally:
            _unmount(mnt)
        assert (files, nbytes) == (files_disk, bytes_disk), "FUSE read differs from the export"
        out[label] = (t_fuse["s"], hwm, c_fuse["s"])
        time.sleep(0.2)
    return out


def _real_runs(
    base: str, pub: Path, work: Path, files_disk: int, bytes_disk: int
) -> dict[str, tuple[float, float]]:
    """The real cvmfs2 on the same server: the same reads, cold (empty cache) and warm (remounted)."""
    tools = find_tools(work / "real-tools")
    out = {}
    for label in ("cold", "warm"):
        run_dir = work / f"real-{label}"
        run_dir.mkdir()
        config = {
            "CVMFS_CACHE_BASE": str(work / "real-cache"),
            "CVMFS_RELOAD_SOCKETS": str(work / "real-cache"),
        }
        (work / "real-cache").mkdir(exist_ok=True)
        with (
            mounted(tools, f"{base}/cvmfs/@fqrn@", FQRN, pub, run_dir, **config) as mnt,
            _cpu(mnt) as c,
            timer() as t,
        ):
            files, nbytes = _read_all(mnt)
        assert (files, nbytes) == (files_disk, bytes_disk), "real cvmfs2 read differs from the export"
        out[label] = (t["s"], c["s"])
        time.sleep(0.2)
    return out


def run(quick: bool = True) -> list[Result]:
    n_files, total_mb = (2000, 60) if quick else (20000, 500)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-cvmfs-read-") as tmp:
        work = Path(tmp)
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
        with _server_process(stratum.parent) as base:
            url = f"{base}/cvmfs/{FQRN}"
            # -- export vs GET + inflate ------------------------------------------------------------
            with open_repository(url, public_keys=[pub]) as repo:
                objs = _objects(repo)
            urls = [f"{url}/{o}" for o in objs]
            cpu0 = time.process_time()
            with timer() as t_ref, cf.ThreadPoolExecutor(JOBS) as pool:
                ref_bytes = sum(pool.map(_get_inflate, urls))
            ref_cpu = time.process_time() - cpu0
            from cernvm_build.cvmfs.export import export_directory

            rss0 = peak_rss_mb()
            dest = work / "export"
            cpu0 = time.process_time()
            with timer() as t_exp, open_repository(url, public_keys=[pub]) as repo:
                res = export_directory(repo, dest, jobs=JOBS)
            exp_cpu = time.process_time() - cpu0
            exp_rate = res.bytes / 1e6 / t_exp["s"]
            ref_rate = ref_bytes / 1e6 / t_ref["s"]
            results.append(
                Result(
                    "cvmfs.export",
                    f"{res.files} files, {mb:.0f} MB",
                    exp_rate,
                    "MB/s",
                    reference="HTTP GET + inflate",
                    reference_value=ref_rate,
                    aim=">= 60 % of reference",
                    ok=exp_rate >= 0.6 * ref_rate,
                    extra={
                        "seconds": round(t_exp["s"], 2),
                        "cpu_seconds": round(exp_cpu, 2),
                        "reference_cpu_seconds": round(ref_cpu, 2),
                        "peak_rss_mb": round(max(rss0, peak_rss_mb()), 1),
                    },
                )
            )
            # -- FUSE: find + read all, cold and warm, vs the exported tree on disk -----------------
            with timer() as t_disk:
                files_disk, bytes_disk = _read_all(dest)
            disk_rate = bytes_disk / 1e6 / t_disk["s"]
            ours = {lib: _fuse_runs(url, pub, work, files_disk, bytes_disk, lib) for lib in LIBFUSE}
            try:
                real: dict[str, tuple[float, float]] | str = _real_runs(
                    base, pub, work, files_disk, bytes_disk
                )
            except RealToolsMissing as e:
                real = str(e)
            aims = {"cold": 1.0, "warm": 1.25}
            for lib, label, (seconds, hwm, cpu) in (
                (name, k, v) for name in ours for k, v in ours[name].items()
            ):
                extra: dict[str, float | str] = {
                    "seconds": round(seconds, 2),
                    "MB/s": round(bytes_disk / 1e6 / seconds, 1),
                    "daemon_peak_rss_mb": round(hwm, 1),
                    "disk_read_s": round(t_disk["s"], 2),
                    "disk_MB/s": round(disk_rate, 1),
                    "cpu_s": round(cpu, 2),
                    "load": round(os.getloadavg()[0], 1),
                }
                if isinstance(real, str):
                    extra["real_cvmfs2"] = real
                    results.append(
                        Result("cvmfs.fuse", f"find+read all, {label}, {lib}", seconds, "s", extra=extra)
                    )
                    continue
                results.append(
                    Result(
                        "cvmfs.fuse",
                        f"find+read all, {label}, {lib}",
                        seconds,
                        "s",
                        reference=f"real cvmfs2 2.11.5, {label}",
                        reference_value=real[label][0],
                        aim=f"<= {aims[label]}x real cvmfs2",
                        ok=seconds <= aims[label] * real[label][0],
                        extra=extra | _cpu_extra(cpu, real[label][1]),
                    )
                )
        results.extend(_lookup_heavy(work, 20_000 if quick else 100_000))
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-lookup"]:
        print(*make_lookup_repository(Path(sys.argv[2]), int(sys.argv[3])))
        raise SystemExit(0)
    if sys.argv[1:2] == ["--make"]:
        made = make_repository(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        print(*made)
        raise SystemExit(0)
    rows = run(quick="--full" not in sys.argv)
    print_table(rows)
    for r in rows:
        print(f"{r.bench} {r.metric}: {r.extra}")
