"""Stratum-1 replication benchmark (issue 20): ``cvmfs replicate`` of a published tree into an empty
directory vs the limit: plain HTTP GET of the same stored objects (kept-alive connections, the same
number of threads, bytes dropped: no hashing, no writes). Aim: >= 70 % of the GET throughput.
A second reference, "GET + write files", is the same download writing each object straight to its
final name in the same directory layout (``data/XX/``, made the way the replica makes it), with no
hashing, no temporary and no rename: what a plain download that stores the objects costs on this
file system. The three are alternated over ``ROUNDS`` rounds (each writer into a fresh directory)
and the best of each is compared: on a shared machine single runs swing by 2x either way. The
client's CPU seconds (user + system) are printed beside each, the steadier figure under load.
Then an incremental replicate after about 1 % of the files changed (objects fetched, time).

The tree is ``bench.cvmfs_read``'s synthetic one (2,000 files / 60 MB quick, 20,000 / 500 MB full),
published by the toolkit and served by ``cvmfs.serve`` in its own process.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
import resource
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.common import Result, environ, flags, print_table, timer
from bench.cvmfs_read import FQRN, _server_process, get_blocks, make_tree

JOBS = 8
ROUNDS = 3


def _get(url: str) -> int:
    return sum(len(block) for block in get_blocks(url))


def _get_write(job: tuple[str, str]) -> int:
    url, path = job
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        n = 0
        for block in get_blocks(url):
            n += os.write(fd, block)
        return n
    finally:
        os.close(fd)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(quick: bool = True, replica_dir: Path | None = None) -> list[Result]:
    """``replica_dir``: where the replicas go (default: beside the served tree). ``--replica-dir
    /dev/shm`` separates the file system's cost of creating one file per object from the rest."""
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.publish import create_repository, publish_tree
    from cernvm_build.cvmfs.replicate import replicate
    from cernvm_build.fsutil import spread_subdirectories

    n_files, total_mb = (2000, 60) if quick else (20000, 500)
    work = Path(tempfile.mkdtemp(prefix="bench-replicate-"))
    replica_root = Path(tempfile.mkdtemp(prefix="bench-replicas-", dir=replica_dir)) if replica_dir else None
    try:
        tree = work / "tree"
        make_tree(tree, n_files, total_mb)
        keys = generate_keys(FQRN)
        keys.save(work / "keys")
        pub = work / "keys" / f"{FQRN}.pub"
        stratum = work / "srv" / FQRN
        create_repository(stratum, FQRN, keys)
        publish_tree(stratum, FQRN, keys, tree)
        objects = sorted(str(p.relative_to(stratum)) for p in stratum.glob("data/??/*"))
        stored = sum((stratum / o).stat().st_size for o in objects)
        with _server_process(work / "srv") as base:
            url = f"{base}/cvmfs/{FQRN}"
            gets: list[float] = []
            writes: list[float] = []
            reps: list[float] = []
            cpu: dict[str, list[float]] = {"get": [], "get_write": [], "replicate": []}
            for i in range(ROUNDS):
                c0 = _cpu()
                with timer() as t_get, cf.ThreadPoolExecutor(JOBS) as pool:
                    got = sum(pool.map(_get, [f"{url}/{o}" for o in objects]))
                assert got == stored
                gets.append(t_get["s"])
                cpu["get"].append(_cpu() - c0)
                # fresh directories each round (no deletion in the timings)
                plain = (replica_root or work) / f"download{i}"
                c0 = _cpu()
                with timer() as t_write:
                    (plain / "data").mkdir(parents=True)
                    spread_subdirectories(plain / "data")
                    for k in range(256):
                        (plain / "data" / f"{k:02x}").mkdir()
                    with cf.ThreadPoolExecutor(JOBS) as pool:
                        got = sum(pool.map(_get_write, [(f"{url}/{o}", f"{plain}/{o}") for o in objects]))
                assert got == stored
                writes.append(t_write["s"])
                cpu["get_write"].append(_cpu() - c0)
                replica = (replica_root or work) / f"replica{i}"
                c0 = _cpu()
                with timer() as t_rep:
                    first = replicate(url, replica, public_keys=[pub], jobs=JOBS)
                reps.append(t_rep["s"])
                cpu["replicate"].append(_cpu() - c0)
            # about 1 % of the files change, then an incremental replicate
            rng = random.Random(5)
            files = sorted(p for p in tree.rglob("*.dat"))
            changed = rng.sample(files, max(1, len(files) // 100))
            for p in changed:
                p.write_bytes(p.read_bytes() + b"changed\n")
            publish_tree(stratum, FQRN, keys, tree)
            with timer() as t_inc:
                second = replicate(url, replica, public_keys=[pub], jobs=JOBS)
        get_mbs = stored / 1e6 / min(gets)
        write_mbs = stored / 1e6 / min(writes)
        rep_mbs = first.bytes_fetched / 1e6 / min(reps)
        return [
            Result(
                "cvmfs.replicate",
                "full replica throughput",
                rep_mbs,
                "MB/s",
                reference=f"plain HTTP GET, {JOBS} threads",
                reference_value=get_mbs,
                aim=">= 70 % of GET",
                ok=rep_mbs >= 0.7 * get_mbs,
                extra={
                    "files": n_files,
                    "objects": first.objects_fetched,
                    "stored_MB": round(stored / 1e6, 1),
                    "replicate_s": [round(t, 2) for t in reps],
                    "get_s": [round(t, 2) for t in gets],
                    "get_write_s": [round(t, 2) for t in writes],
                    "client_cpu_s": {k: [round(t, 2) for t in v] for k, v in cpu.items()},
                    "replica_dir": str(replica_dir or work),
                },
            ),
            Result(
                "cvmfs.replicate",
                "full replica vs GET+write",
                rep_mbs,
                "MB/s",
                reference=f"GET + write files, {JOBS} threads",
                reference_value=write_mbs,
            ),
            Result(
                "cvmfs.replicate",
                "incremental (1 % changed)",
                t_inc["s"],
                "s",
                reference="full replicate",
                reference_value=min(reps),
                extra={
                    "changed_files": len(changed),
                    "objects_fetched": second.objects_fetched,
                    "objects_skipped": second.objects_skipped,
                    "bytes_fetched": second.bytes_fetched,
                },
            ),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if replica_root:
            shutil.rmtree(replica_root, ignore_errors=True)


def run_s3(quick: bool = True) -> list[Result]:
    """``cvmfs replicate URL s3://bucket/fqrn`` (fetch into the local spool, verify, push with the
    mirror's sync engine) into moto in its own process, vs ``rclone sync`` (16 transfers) of the
    same Stratum directory from the local disk into another bucket of the same server: the upload
    alone, so the replicate's own download and checks are on top. The local replicate of the same
    run says how much of the S3 figure is the push."""
    from bench.mirror import CREDS, MotoProcess, rclone_sync
    from cernvm_build.cli.main import main
    from cernvm_build.cvmfs.keys import generate_keys
    from cernvm_build.cvmfs.publish import create_repository, publish_tree
    from cernvm_build.cvmfs.replicate import replicate
    from cernvm_build.mirror.s3client import make_client

    n_files, total_mb = (2000, 60) if quick else (20000, 500)
    work = Path(tempfile.mkdtemp(prefix="bench-replicate-s3-"))
    env = {**CREDS, "CERNVM_CACHE_DIR": str(work / "cache"), "AWS_CONFIG_FILE": "/dev/null"}
    with environ(env):
        server = None
        try:
            make_tree(work / "tree", n_files, total_mb)
            keys = generate_keys(FQRN)
            keys.save(work / "keys")
            pub = work / "keys" / f"{FQRN}.pub"
            stratum = work / "srv" / FQRN
            create_repository(stratum, FQRN, keys)
            publish_tree(stratum, FQRN, keys, work / "tree")
            objects = [p for p in stratum.glob("data/??/*")]
            stored = sum(p.stat().st_size for p in objects)
            server = MotoProcess(work)
            client = make_client(endpoint_url=server.endpoint)
            for b in ("replica", "rclone"):
                client.create_bucket(Bucket=b)
            with _server_process(work / "srv") as base:
                url = f"{base}/cvmfs/{FQRN}"
                with timer() as t_local:
                    replicate(url, work / "local" / FQRN, public_keys=[pub], jobs=JOBS)
                argv = ["cvmfs", "replicate", url, f"s3://replica/{FQRN}", "--key", str(pub), "-j", str(JOBS)]
                argv += ["--endpoint-url", server.endpoint, "--spool", str(work / "spool"), "--quiet"]
                with timer() as t_s3:
                    code = main(argv)
                assert code == 0
            with timer() as t_rclone:
                rclone_sync(stratum, f"rclone/{FQRN}", server.endpoint, "--exclude", "data/txn/**")
            pushed = sum(
                o["Size"]
                for page in client.get_paginator("list_objects_v2").paginate(Bucket="replica")
                for o in page.get("Contents", [])
                if "/data/" in o["Key"]
            )
            return [
                Result(
                    "cvmfs.replicate.s3",
                    "replicate into moto",
                    t_s3["s"],
                    "s",
                    reference="rclone sync of the same Stratum dir (upload only, 16 transfers)",
                    reference_value=t_rclone["s"],
                    extra={
                        "objects": len(objects),
                        "stored_MB": round(stored / 1e6, 1),
                        "pushed_data_MB": round(pushed / 1e6, 1),
                        "local_replicate_s": round(t_local["s"], 2),
                    },
                )
            ]
        finally:
            if server is not None:
                server.stop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    flags(
        __doc__,
        {
            "--full": "the full-size run (the default is the quick one)",
            "--s3": "replicate into S3 (moto) instead of a folder",
            "--replica-dir": "DIR: where the replica goes",
        },
    )
    if "--s3" in sys.argv:
        rows = run_s3(quick="--full" not in sys.argv)
        print_table(rows)
        for r in rows:
            print(r.metric, r.extra)
        sys.exit(0)
    where = sys.argv[sys.argv.index("--replica-dir") + 1] if "--replica-dir" in sys.argv else None
    rows = run(quick="--full" not in sys.argv, replica_dir=Path(where) if where else None)
    print_table(rows)
    for r in rows:
        print(r.metric, r.extra)
