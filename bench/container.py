"""Container benchmark: export of a tree from a local CernVM-FS repository to gzip OCI layers.

A synthetic tree (full: 20,000 files, ~500 MB; quick: 2,000 files, ~50 MB) is published into a local
repository with the toolkit's publisher. Measured, side by side in the same run on the same cores:

- ours: what ``container build`` does for an OCI image: one metadata pass (``weigh``) for the cut,
  then ``write_layers`` streaming the tree from the repository (objects read, hash-checked and
  inflated) into gzip (level 6) layer blobs written to disk, in its own process;
- ours again from the exported directory, the very input the reference reads (like with like: no
  repository to read, verify and inflate);
- the reference: ``tar -c | gzip -6`` of the same tree already exported to a directory, written to disk.

Every member has mtime 0 in both (the build's clamping to a creation time of 0), so the tar bytes
are the same but for the layers' placeholder directories. Wall and CPU time are those of the whole
processes, started and waited for by this script (our interpreter's start and imports included).
Ours deflates at gzip's level 6 on all cores (fixed blocks, see ``container/pgzip.py``), gzip on one.
The runs alternate, best of 2-3, because other work on the machine only slows a run down.
Peak memory is bounded, not proportional to the tree: the reader's 64 MB object cache plus a few
1 MiB blocks in flight.

Throughput is the uncompressed tar size over wall-clock time. Aim (issue 19): >= 1.0x the reference.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, children_cpu, cores, flags, peak_rss_mb, print_table, timer

if TYPE_CHECKING:
    from cernvm_build.tree import TreeSource

FQRN = "bench.container.test"


def make_tree(root: Path, files: int, total_bytes: int, seed: int = 5) -> int:
    """A deterministic tree shaped like an OS userland: many small files, a few big ones, text and
    binary content (compresses about 3:1 overall), 100 files per directory, some symlinks."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rnd.randint(2, 10))) for _ in range(4000)]
    text = b" ".join(rnd.choices(words, k=1_200_000))  # ~7 MB of word-like text
    binary = rnd.randbytes(2 << 20)
    # sizes: log-uniform between 200 B and 2 MB, scaled to the total
    raw = [int(10 ** rnd.uniform(2.3, 6.3)) for _ in range(files)]
    scale = total_bytes / sum(raw)
    sizes = [max(1, int(s * scale)) for s in raw]
    written = 0
    for i, size in enumerate(sizes):
        d = root / f"usr/lib{i // 2000}/pkg{i // 100}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        src = binary if i % 4 == 0 else text
        out = bytearray()
        while len(out) < size:
            off = rnd.randrange(0, len(src) - 1)
            out += src[off : off + size - len(out)]
        (d / f"file{i}.{'so' if i % 4 == 0 else 'txt'}").write_bytes(out)
        if i % 50 == 0:
            os.symlink(f"file{i}.{'so' if i % 4 == 0 else 'txt'}", d / f"link{i}")
        written += size
    return written


def _publish(tree: Path, stratum: Path, keys_dir: Path) -> None:
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.publish import create_repository, publish_tree

    keys = generate_keys(FQRN)
    keys.save(keys_dir)
    create_repository(stratum, FQRN, keys)
    publish_tree(stratum, FQRN, keys, tree, tag="bench", normalize_owner=True)


def export_child(source: str, key: str, out: str) -> None:
    """Runs in its own process, as ``container build`` would: weigh, cut, write the gzip layers.
    ``source`` is the stratum (with ``key``) or, with ``key`` "-", the exported directory."""
    from cernvm_build.container.layering import plan_weighed, weigh
    from cernvm_build.container.layers import write_layers
    from cernvm_build.container.source import Clamped, CvmfsTree, LocalTree
    from cernvm_build.cvmfs.repository import open_repository

    with ExitStack() as stack:
        if key == "-":
            tree: TreeSource = LocalTree(Path(source))
        else:
            repo = stack.enter_context(open_repository(Path(source), fqrn=FQRN, public_keys=[Path(key)]))
            tree = CvmfsTree(repo, "/")
        tree = Clamped(tree, 0)
        files = write_layers(tree, plan_weighed(weigh(tree)), Path(out), gzip=True, raw=False)
    tar_bytes, gz_bytes = sum(f.result.size for f in files), sum(f.result.compressed_size for f in files)
    print(
        json.dumps(
            {"tar_bytes": tar_bytes, "gz_bytes": gz_bytes, "layers": len(files), "rss_mb": peak_rss_mb()}
        )
    )


def _limit(tree: Path, out: Path) -> tuple[float, float]:
    """``tar -c | gzip -6`` of the exported tree; returns (seconds, CPU seconds)."""
    cpu0 = children_cpu()
    with timer() as t:
        with open(out, "wb") as f:
            tar = subprocess.Popen(["tar", "-c", "-C", str(tree), "--sort=name", "."], stdout=subprocess.PIPE)
            gz = subprocess.run(["gzip", "-6", "-n"], stdin=tar.stdout, stdout=f, check=True)
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
        assert gz.returncode == 0 and tar.returncode == 0
    return t["s"], children_cpu() - cpu0


def _ours(source: Path, key: str, out: Path) -> dict[str, float]:
    """The export in a child process; its wall and CPU seconds (the whole process) added."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cpu0 = children_cpu()
    with timer() as t:
        child = subprocess.run([sys.executable, __file__, "--export", str(source), key, str(out)],
                               capture_output=True, text=True, check=True)  # fmt: skip
    data: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    data["s"], data["cpu_s"] = t["s"], children_cpu() - cpu0
    return data


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(quick: bool) -> list[Result]:
    files, total = (2_000, 50 << 20) if quick else (20_000, 500 << 20)
    work = Path(tempfile.mkdtemp(prefix="bench-container-"))
    try:
        src = work / "src"
        content = make_tree(src, files, total)
        _publish(src, work / "stratum", work / "keys")
        # the limit works on the tree as exported from the repository
        from cernvm_build.container.materialize import materialize
        from cernvm_build.container.source import CvmfsTree
        from cernvm_build.cvmfs.repository import open_repository

        exported = work / "exported"
        exported.mkdir()
        key = work / "keys" / f"{FQRN}.pub"
        with open_repository(work / "stratum", fqrn=FQRN, public_keys=[key]) as repo:
            materialize(CvmfsTree(repo, "/"), exported, mtime=0)
        shutil.rmtree(src)
        # alternate them and keep the best of each: other work on the machine only slows runs down
        limits, repo_runs, dir_runs = [], [], []
        load = [_load()]
        for _ in range(3 if quick else 2):
            limits.append(_limit(exported, work / "limit.tar.gz"))
            repo_runs.append(_ours(work / "stratum", str(key), work / "layers"))
            dir_runs.append(_ours(exported, "-", work / "layers"))
            load.append(_load())
        lim_s, lim_cpu = min(limits)
        lim_gz = (work / "limit.tar.gz").stat().st_size
        tag = f"{files} files, {content / 1e6:.0f} MB, {cores()} cores"
        results = []
        for what, runs in (("from the repository", repo_runs), ("from the same directory", dir_runs)):
            ours = min(runs, key=lambda r: r["s"])
            ours_mbs = ours["tar_bytes"] / ours["s"] / 1e6
            # the same tar bytes for both: the tar the reference makes of the same tree, cut in layers
            lim_mbs = ours["tar_bytes"] / lim_s / 1e6
            results.append(
                Result("container.export_layers", f"MB/s {what}", ours_mbs, "MB/s",
                       reference="tar -c | gzip -6", reference_value=lim_mbs, aim=">= 1.0x reference",
                       ok=ours_mbs >= lim_mbs,
                       extra={"tree": tag, "layers": ours["layers"], "seconds": round(ours["s"], 2),
                              "limit_seconds": round(lim_s, 2), "cpu_seconds": round(ours["cpu_s"], 2),
                              "limit_cpu_seconds": round(lim_cpu, 2),
                              "cpu_vs_limit": round(ours["cpu_s"] / lim_cpu, 2),
                              "gzip_size_vs_limit": round(ours["gz_bytes"] / lim_gz, 3),
                              "loadavg (start, after each round)": " | ".join(load)})
            )  # fmt: skip
        rss = max(r["rss_mb"] for r in repo_runs)
        results.append(
            Result("container.export_layers", "peak memory", rss, "MB",
                   aim="streams: bounded, far below the tree size", ok=rss < 300,
                   extra={"tree_mb": round(content / 1e6)})
        )  # fmt: skip
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    flags(
        __doc__,
        {
            "--quick": "a smaller run (fewer rounds or inputs)",
            "--export": "internal: the export child (ARCHIVE ROOT OUT)",
        },
    )
    if len(sys.argv) == 5 and sys.argv[1] == "--export":
        export_child(*sys.argv[2:5])
    else:
        results = run(quick="--quick" in sys.argv)
        print_table(results)
        for r in results:
            print(f"  {r.bench} {r.metric}: {r.extra}")
