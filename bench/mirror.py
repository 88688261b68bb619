"""Mirror benchmark: an apt repository of real .debs published to a real S3 server (moto, its own
process on 127.0.0.1) by ``cernvm-build mirror apt`` and, side by side in the same run against the
same server, by ``aws s3 sync`` and ``rclone sync``.

Measured: initial upload time, a no-change re-sync (time and requests by method, counted from the
server's request log), and a same-size content change with the modification time kept (a rebuilt
package of equal size, which size/mtime tools miss): how many of the changed packages each tool uploads.
Full: 1,000 packages, ~500 MB; quick: 100 packages, ~50 MB.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, print_table, timer
from cernvm_build.mirror.publish import mirror
from cernvm_build.mirror.s3client import make_client

PAYLOAD = 500 * 1024
CHANGED = 5
CREDS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
LOG_LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) /([^/ ?]+)')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoProcess:
    """moto_server in its own process (so it does not share our GIL); requests counted from its log."""

    def __init__(self, workdir: Path):
        self.port = _free_port()
        self.log = workdir / "moto.log"
        moto = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),  # noqa: SIM115 - the child owns it
        )
        self.endpoint = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def mark(self) -> int:
        return self.log.stat().st_size

    def requests(self, since: int, bucket: str) -> Counter[str]:
        with open(self.log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return Counter(m.group(1) for m in LOG_LINE.finditer(text) if m.group(2) == bucket)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def make_repo(root: Path, count: int) -> list[Path]:
    """``count`` real .debs with random payloads, indexed by apt-ftparchive (by-hash, Release)."""
    pool = root / "pool" / "main"
    pool.mkdir(parents=True)
    debs = []
    for i in range(count):
        name = f"bench-pkg{i:04d}"
        tree = root / ".tree"
        (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
        (tree / "DEBIAN" / "control").write_text(
            f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: B <b@cernvm.test>\n"
            "Description: benchmark package\n"
        )
        data = tree / "usr" / "share" / name
        data.mkdir(parents=True, exist_ok=True)
        (data / "payload").write_bytes(os.urandom(PAYLOAD))
        out = pool / f"{name}_1.0_all.deb"
        subprocess.run(["dpkg-deb", "-Znone", "--root-owner-group", "--build", str(tree), str(out)],
                       check=True, capture_output=True)  # fmt: skip
        shutil.rmtree(tree)
        debs.append(out)
    index(root)
    return debs


def index(root: Path) -> None:
    dist = root / "dists" / "bench"
    binary = dist / "main" / "binary-amd64"
    shutil.rmtree(dist, ignore_errors=True)
    binary.mkdir(parents=True)
    packages = subprocess.run(
        ["apt-ftparchive", "packages", "pool"], cwd=root, check=True, capture_output=True
    )
    (binary / "Packages").write_bytes(packages.stdout)
    subprocess.run(["gzip", "-9nk", str(binary / "Packages")], check=True)
    release = subprocess.run(
        ["apt-ftparchive", "-o", "APT::FTPArchive::DoByHash=1", "-o", "APT::FTPArchive::Release::Suite=bench",
         "-o", "APT::FTPArchive::Release::Components=main", "release", str(dist)],
        check=True, capture_output=True,
    )  # fmt: skip
    (dist / "Release").write_bytes(release.stdout)


def cpu_seconds(own: bool) -> float:
    """CPU time of this process (our tool runs in it) or of finished children (aws, rclone)."""
    r = resource.getrusage(resource.RUSAGE_SELF if own else resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def empty_bucket(client: object, bucket: str) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)  # type: ignore[attr-defined]
    for page in pages:
        objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objs:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objs, "Quiet": True})  # type: ignore[attr-defined]


def change_same_size(debs: list[Path]) -> list[Path]:
    """Rewrite some packages with different bytes of the same size and the same mtime."""
    changed = debs[:: max(1, len(debs) // CHANGED)][:CHANGED]
    for p in changed:
        st = p.stat()
        data = bytearray(p.read_bytes())
        mid = len(data) - PAYLOAD // 2  # inside the (uncompressed) payload
        data[mid : mid + 16] = os.urandom(16)
        p.write_bytes(bytes(data))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    return changed


def aws_sync(src: Path, dest: str, endpoint: str) -> list[str]:
    aws = shutil.which("aws") or "aws"
    out = subprocess.run(
        [aws, "s3", "sync", str(src), dest, "--endpoint-url", endpoint, "--delete", "--no-progress"],
        check=True, capture_output=True, text=True, env={**os.environ, **CREDS},
    )  # fmt: skip
    return [
        ln.split(" to ", 1)[0].split(": ", 1)[-1]
        for ln in out.stdout.splitlines()
        if ln.startswith("upload:")
    ]


def rclone_sync(src: Path, dest: str, endpoint: str) -> list[str]:
    # rclone refuses a custom AWS_CA_BUNDLE with its own transport; the endpoint is plain HTTP anyway.
    env = {
        **{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": CREDS["AWS_ACCESS_KEY_ID"],
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": CREDS["AWS_SECRET_ACCESS_KEY"],
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
        "RCLONE_CONFIG": "/dev/null",
    }
    out = subprocess.run(
        ["rclone", "sync", str(src), f"bench:{dest}", "--transfers", "10", "--checkers", "10", "-v",
         "--stats", "0"],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    return [m.group(1) for m in re.finditer(r"INFO  : (\S+): Copied", out.stderr)]


def run(quick: bool) -> list[Result]:
    count = 100 if quick else 1000
    work = Path(tempfile.mkdtemp(prefix="bench-mirror-"))
    results: list[Result] = []
    server = MotoProcess(work)
    env = {**CREDS, "CERNVM_CACHE_DIR": str(work / "cache")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        src = work / "apt"
        debs = make_repo(src, count)
        mb = sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) / 1e6
        client = make_client(endpoint_url=server.endpoint, max_connections=16)
        for b in ("ours", "aws", "rclone"):
            client.create_bucket(Bucket=f"bench-{b}")

        def ours() -> list[str]:
            rep = mirror("apt", str(src), "s3://bench-ours/apt", client=client, jobs=10)
            assert rep.sync is not None
            return rep.sync.uploaded

        tools = {
            "ours": ours,
            "aws": lambda: aws_sync(src, "s3://bench-aws/apt", server.endpoint),
            "rclone": lambda: rclone_sync(src, "bench-rclone/apt", server.endpoint),
        }
        times: dict[str, dict[str, float]] = {}
        reqs: dict[str, Counter[str]] = {}
        uploaded_changed: dict[str, int] = {}
        uploaded_total: dict[str, int] = {}
        changed: list[Path] = []

        # The machine may be shared: run the initial upload twice, the second time in reverse order
        # on emptied buckets (and without our hash cache), and keep each tool's better time.
        cpu: dict[str, float] = {}
        for name, fn in tools.items():
            before = cpu_seconds(name == "ours")
            with timer() as t:
                fn()
            cpu[name] = cpu_seconds(name == "ours") - before
            times.setdefault(name, {})["initial"] = t["s"]
        for name in reversed(tools):
            empty_bucket(client, f"bench-{name}")
        shutil.rmtree(work / "cache", ignore_errors=True)
        for name in reversed(tools):
            with timer() as t:
                tools[name]()
            times[name]["initial"] = min(times[name]["initial"], t["s"])

        for phase in ("no-change", "same-size change"):
            if phase == "same-size change":
                changed = change_same_size(debs)
                index(src)  # the indexes are regenerated as a publisher would
            for name, fn in tools.items():
                mark = server.mark()
                with timer() as t:
                    uploaded = fn()
                times[name][phase] = t["s"]
                if phase == "no-change":
                    reqs[name] = server.requests(mark, f"bench-{name}")
                if phase == "same-size change":
                    names = {p.name for p in changed}
                    uploaded_changed[name] = sum(1 for u in uploaded if u.rsplit("/", 1)[-1] in names)
                    uploaded_total[name] = len(uploaded)

        def ratio_row(metric: str, phase: str, ref: str, aim: str, limit: float) -> None:
            v, r = times["ours"][phase], times[ref][phase]
            results.append(Result("mirror.apt", metric, v, "s", f"{ref} sync", r, aim, v <= limit * r,
                                  extra={"MB": round(mb, 1), "packages": count}))  # fmt: skip

        ratio_row("initial upload", "initial", "aws", "<= 1.0x aws", 1.0)
        results.append(Result("mirror.apt", "initial upload", times["ours"]["initial"], "s", "rclone sync",
                              times["rclone"]["initial"]))  # fmt: skip
        results.append(Result("mirror.apt", "initial upload client CPU", cpu["ours"], "s", "aws sync",
                              cpu["aws"], extra={"rclone": round(cpu["rclone"], 2)}))  # fmt: skip
        ratio_row("no-change re-sync", "no-change", "aws", "<= 0.5x aws", 0.5)
        results.append(Result("mirror.apt", "no-change re-sync", times["ours"]["no-change"], "s",
                              "rclone sync", times["rclone"]["no-change"]))  # fmt: skip
        for name in ("ours", "aws", "rclone"):
            r = reqs[name]
            results.append(Result(
                "mirror.apt", f"no-change requests ({name})", float(sum(r.values())), "req",
                extra={k: float(v) for k, v in sorted(r.items())},
            ))  # fmt: skip
        results.append(Result(
            "mirror.apt", "same-size change uploaded", float(uploaded_changed["ours"]), "pkg",
            "aws sync", float(uploaded_changed["aws"]), f"all {len(changed)} changed found",
            uploaded_changed["ours"] == len(changed),
            extra={"rclone": float(uploaded_changed["rclone"]), "changed": float(len(changed)),
                   "objects_ours": float(uploaded_total["ours"]), "objects_aws": float(uploaded_total["aws"]),
                   "objects_rclone": float(uploaded_total["rclone"]),
                   "ours_s": round(times["ours"]["same-size change"], 2)},
        ))  # fmt: skip
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    res = run(quick="--quick" in sys.argv)
    print_table(res)
    for r in res:
        if r.extra:
            print(f"  {r.metric}: {r.extra}")
