"""CernVM-FS publish: first publish vs the zlib+SHA-1 limit, incremental publish, peak memory.

- *limit*: one pass of zlib-compress + SHA-1 over every file of the same tree, as many threads as the
  publisher (two per core; zlib and hashlib release the GIL), nothing written: the floor for any
  publisher. On a shared machine compare the CPU seconds too (``cpu_ratio``, publish / limit): wall time
  there depends on what else runs;
- *first publish*: ``publish_tree`` of the tree into a fresh repository (scan, compress, hash,
  write objects, chunk the large files, build catalogs, sign, sync); aim (issue 14): <= 1.3x the
  limit's time, peak memory <= 128 MB. Quick: 10,000 files / 250 MB; full: 20,000 files / 500 MB.
- *incremental*: 1 % of the files rewritten, published again;
- *peak memory*: resident set of the publishing process (it runs in a child process of its own).

    python bench/cvmfs_publish.py [--full]
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Result, cores, flags, print_table  # noqa: E402

FQRN = "bench.cernvm.test"
_WORDS = (
    b"the of and to in is for on that with lib usr share python import def return class self "
    b"int char void struct include define if else while error value data file path config"
).split()


def _pools(rng: random.Random) -> tuple[bytes, bytes]:
    """A text pool (compresses ~3:1, like sources and configs) and a binary pool (~1.3:1)."""
    text = b" ".join(rng.choice(_WORDS) for _ in range(900_000))
    parts = []
    for _ in range(256):
        parts.append(rng.randbytes(rng.randint(2_000, 12_000)))
        parts.append(bytes(rng.randint(500, 4_000)))
        parts.append(text[rng.randint(0, 1_000_000) :][: rng.randint(1_000, 6_000)])
    return text, b"".join(parts)


def make_tree(dir: Path, n_files: int = 20000, total_mb: int = 500, seed: int = 0) -> dict[str, int]:
    """A synthetic software tree: many small files, some medium, a few large (chunked) ones,
    symlinks, hardlinks, a few nested catalog markers. Deterministic for a seed. Returns counts."""
    rng = random.Random(seed)
    text, binary = _pools(rng)
    total = total_mb << 20
    n_large = max(2, n_files // 2500)
    large_bytes = int(total * 0.45)  # as in real trees: a few big files hold much of the volume
    small_budget = total - large_bytes
    n_dirs = max(4, n_files // 25)
    dirs = [Path("")]
    for i in range(n_dirs):
        parent = dirs[rng.randrange(len(dirs))] if len(dirs) > 1 and rng.random() < 0.7 else Path("")
        dirs.append(parent / f"d{i:04d}")
    for d in dirs:
        (dir / d).mkdir(parents=True, exist_ok=True)
    for d in dirs[1 : 1 + max(1, n_dirs // 100)]:
        (dir / d / ".cvmfscatalog").write_bytes(b"")
    # small/medium sizes: log-normal, scaled to the budget
    raw = [rng.lognormvariate(8.0, 1.6) for _ in range(n_files - n_large)]
    scale = small_budget / sum(raw)
    files: list[Path] = []
    written = 0
    for i, r in enumerate(raw):
        size = max(0, int(r * scale))
        pool = text if rng.random() < 0.6 else binary
        off = rng.randrange(0, len(pool) - 1)
        data = (pool[off:] + pool[:off])[:size] if size > len(pool) - off else pool[off : off + size]
        while len(data) < size:
            data += pool[: size - len(data)]
        p = dir / dirs[rng.randrange(len(dirs))] / f"f{i:05d}{rng.choice(['.py', '.so', '.h', '', '.dat'])}"
        p.write_bytes(data)
        files.append(p)
        written += size
    for i in range(n_large):
        size = large_bytes // n_large
        p = dir / dirs[rng.randrange(len(dirs))] / f"large{i}.bin"
        with open(p, "wb") as f:
            left = size
            while left > 0:
                block = binary if rng.random() < 0.5 else text
                piece = block[: min(left, len(block))]
                f.write(piece)
                left -= len(piece)
        written += size
    links = hard = 0
    for i in range(n_files // 100):
        target = files[rng.randrange(len(files))]
        os.symlink(os.path.relpath(target, target.parent), target.parent / f"link{i}")
        links += 1
    for i in range(n_files // 200):
        target = files[rng.randrange(len(files))]
        os.link(target, target.parent / f"hard{i}")
        hard += 1
    return {"files": n_files, "bytes": written, "dirs": len(dirs), "symlinks": links, "hardlinks": hard}


def limit_pass(tree: Path, workers: int) -> tuple[float, int]:
    """Seconds for zlib-compress + SHA-1 of every regular file (1 MiB blocks), and the bytes."""
    paths = [os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs]

    def one(p: str) -> int:
        if os.path.islink(p):
            return 0
        c = zlib.compressobj()
        h = hashlib.sha1()
        n = 0
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                n += len(block)
                h.update(c.compress(block))
            h.update(c.flush())
        return n

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(one, paths, chunksize=64))
    return time.perf_counter() - start, total


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from cernvm_build.cvmfs.keys import load_keys
from cernvm_build.cvmfs.publish import create_repository, publish_tree
keys = load_keys(Path(sys.argv[1]), sys.argv[2])
stratum, tree = Path(sys.argv[3]), Path(sys.argv[4])
if sys.argv[5] == "create":
    create_repository(stratum, sys.argv[2], keys)
t, c = time.perf_counter(), time.process_time()
r = publish_tree(stratum, sys.argv[2], keys, tree)
s, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"s": s, "cpu_s": cpu, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "objects": r.objects_written, "bytes": r.bytes_written}))
"""


def _publish_child(keys: Path, stratum: Path, tree: Path, create: bool) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(keys), FQRN, str(stratum), str(tree), "create" if create else "-"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _touch_one_percent(tree: Path, seed: int = 1) -> int:
    rng = random.Random(seed)
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs if not os.path.islink(os.path.join(d, f))
    )
    picked = rng.sample(files, max(1, len(files) // 100))
    for p in picked:
        with open(p, "ab") as f:
            f.write(b"\n# changed\n")
    return len(picked)


def run(quick: bool = True) -> list[Result]:
    from cernvm_build.cvmfs.keys import generate_keys

    n_files, total_mb = (10000, 250) if quick else (20000, 500)  # the same shape, half the size
    workers = max(
        2, min(8, 2 * cores())
    )  # the publisher's pool width (content.py), so both get the same share of a busy machine
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        base = Path(tmp)
        tree = base / "tree"
        info = make_tree(tree, n_files, total_mb)
        mb = info["bytes"] / 1e6
        generate_keys(FQRN).save(base / "keys")
        limit_pass(tree, workers)  # warm the page cache for both passes alike
        cpu0 = time.process_time()
        limit_s, _ = limit_pass(tree, workers)
        limit_cpu = time.process_time() - cpu0
        full = _publish_child(base / "keys", base / "stratum", tree, create=True)
        changed = _touch_one_percent(tree)
        incr = _publish_child(base / "keys", base / "stratum", tree, create=False)
    bench = "cvmfs.publish" + (" (quick)" if quick else "")
    limit = mb / limit_s
    thr = mb / full["s"]
    # CPU seconds too: on a shared machine they say more than wall-clock time does
    extra: dict[str, float | str] = {
        "files": n_files,
        "MB": round(mb, 1),
        "cores": cores(),
        "workers": workers,
        "limit_cpu_s": round(limit_cpu, 2),
        "publish_cpu_s": round(full["cpu_s"], 2),
        "cpu_ratio": round(full["cpu_s"] / limit_cpu, 2),  # publish CPU seconds per limit CPU second
    }
    extra["MB/s"] = round(thr, 1)
    extra["limit_MB/s"] = round(limit, 1)
    return [
        Result(
            bench,
            "first publish time",
            full["s"],
            "s",
            "zlib+SHA-1 limit",
            limit_s,
            "<= 1.3x limit",
            full["s"] <= 1.3 * limit_s,
            extra,
        ),
        Result(
            bench,
            f"incremental ({changed} files changed)",
            incr["s"],
            "s",
            "full publish",
            full["s"],
            "<= 10 % of full",
            incr["s"] <= 0.10 * full["s"],
            {"objects_written": incr["objects"], "cpu_s": round(incr["cpu_s"], 2)},
        ),
        Result(
            bench,
            "peak memory (first publish)",
            full["rss_mb"],
            "MB",
            "tree size",
            mb,
            "<= 128 MB",
            full["rss_mb"] <= 128,
        ),
    ]


if __name__ == "__main__":
    flags(__doc__, {"--full": "the full-size run (the default is the quick one)"})
    results = run(quick="--full" not in sys.argv)
    print_table(results)
    for r in results:
        if r.extra:
            print(f"  {r.metric}: {r.extra}")
