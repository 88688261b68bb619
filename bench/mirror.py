"""Mirror benchmark: a signed apt repository of real .debs and a signed yum repository of real RPMs
(createrepo_c, repomd.xml.asc) published by ``cernvm-build mirror apt|yum`` and, side by side in the
same run against the same server, by ``aws s3 sync``, ``rclone sync`` and ``rclone sync --checksum``;
on two real S3 servers on 127.0.0.1: moto (its own process) and a single-node Ceph RADOS Gateway
(what CERN's S3 runs).

Measured per repository, server and tool: wall time, client CPU (ours in this process, the others as
children) and requests by method (from the server's own request log: the same count for every tool)
and, for the mirror, when each of its phases began (seconds from its start: planned, first upload,
source verified, first index, manifest), with the 1-minute load average at the end of each run,
for the initial upload, a no-change re-sync, and a same-size content change with the modification
time kept (rebuilt packages of equal size, which size/mtime tools miss): how many of the changed
packages each tool uploads. One package is 24 MB: aws-cli uploads it in parts (8 MB threshold), the mirror
as one PutObject sent from disk (parts from 64 MB), rclone too (200 MB).
Both repositories are signed with a throwaway key and the mirror checks them with ``--gpg-key``, as
for a real repository (so its index files go through the index writer process; for yum, every RPM
is also checked with ``rpm -K``).
Full: 1,000 packages, ~500 MB per repository; quick: 100 packages, ~75 MB. ``--apt`` / ``--yum``: one
repository only.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, children_cpu, environ, flags, print_table, timer
from cernvm_build.errors import ToolError
from cernvm_build.gpg import Keyring, generate_test_key
from cernvm_build.mirror.localrgw import LocalRGW
from cernvm_build.mirror.publish import mirror
from cernvm_build.mirror.s3client import make_client

PAYLOAD = 500 * 1024
BIG = 24 << 20  # above aws-cli's multipart threshold (8 MB), below the mirror's (64 MB) and rclone's (200 MB)
CHANGED = 5
CREDS = {  # LocalRGW creates its user with these keys; moto takes any
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
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


class RGWProcess:
    """LocalRGW with the same request counting, from radosgw's access lines."""

    def __init__(self, workdir: Path, memory: int):
        self.rgw = LocalRGW(memory_bytes=memory).start()
        assert self.rgw.root is not None
        self.log = self.rgw.root / "log" / "client.rgw.log"
        self.endpoint = self.rgw.endpoint

    def mark(self) -> int:
        return self.log.stat().st_size

    def requests(self, since: int, bucket: str) -> Counter[str]:
        time.sleep(1.0)  # radosgw's log is written by a background thread
        with open(self.log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return Counter(m.group(1) for m in LOG_LINE.finditer(text) if m.group(2) == bucket)

    def stop(self) -> None:
        self.rgw.stop()


#: (secret, public) of the throwaway signing key, made once per run
KEYS: list[Path] = []


def _payload(i: int, count: int) -> bytes:
    """Package ``i``'s payload: random (incompressible) bytes, a fixed size per package."""
    return os.urandom(BIG if i == count - 1 else PAYLOAD)


def make_apt(root: Path, count: int) -> list[Path]:
    """``count`` real .debs with random payloads (the last one big), indexed by apt-ftparchive."""
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
        (data / "payload").write_bytes(_payload(i, count))
        out = pool / f"{name}_1.0_all.deb"
        subprocess.run(["dpkg-deb", "-Znone", "--root-owner-group", "--build", str(tree), str(out)],
                       check=True, capture_output=True)  # fmt: skip
        shutil.rmtree(tree)
        debs.append(out)
    index_apt(root)
    return debs


def index_apt(root: Path) -> None:
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
    with Keyring([KEYS[0]]) as kr:
        kr.clearsign(dist / "Release", dist / "InRelease")
        kr.sign_detached(dist / "Release", dist / "Release.gpg")


def change_apt(root: Path, debs: list[Path]) -> list[Path]:
    """Rewrite some packages with different bytes of the same size and the same mtime (a .deb's
    uncompressed payload: still a valid package), then index again as a publisher would."""
    changed = _pick(debs)
    for p in changed:
        st = p.stat()
        data = bytearray(p.read_bytes())
        mid = len(data) - PAYLOAD // 2  # inside the (uncompressed) payload
        data[mid : mid + 16] = os.urandom(16)
        p.write_bytes(bytes(data))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    index_apt(root)
    return changed


def _pick(packages: list[Path]) -> list[Path]:
    return packages[:-1][:: max(1, len(packages) // CHANGED)][:CHANGED]


def _rpmbuild(work: Path, names: list[str], count: int) -> dict[str, Path]:
    """One rpmbuild for all ``names`` (subpackages of one spec), uncompressed payloads (so a rebuild
    with other bytes has the same size); name → .rpm."""
    shutil.rmtree(work, ignore_errors=True)
    payloads = work / "payloads"
    for name in names:
        (payloads / name).mkdir(parents=True)
        (payloads / name / "payload").write_bytes(_payload(int(name[-4:]), count))
    spec = ["Name: bench", "Version: 1.0", "Release: 1", "Summary: bench", "License: MIT",
            "BuildArch: noarch", "%description", "bench"]  # fmt: skip
    for name in names:
        spec += [f"%package -n {name}", f"Summary: {name}", f"%description -n {name}", "benchmark package"]
    spec += ["%install", "mkdir -p %{buildroot}/usr/share", f"cp -r {payloads}/. %{{buildroot}}/usr/share/"]
    for name in names:
        spec += [f"%files -n {name}", f"/usr/share/{name}"]
    (work / "bench.spec").write_text("\n".join(spec) + "\n")
    subprocess.run(
        ["rpmbuild", "--define", f"_topdir {work / 'top'}", "--define", "_build_id_links none",
         "--define", "__os_install_post %{nil}", "--define", "_binary_payload w0.ufdio",
         "--define", "_source_date_epoch_from_changelog 0", "-bb", str(work / "bench.spec")],
        check=True, capture_output=True,
    )  # fmt: skip
    return {name: work / "top" / "RPMS" / "noarch" / f"{name}-1.0-1.noarch.rpm" for name in names}


def make_yum(root: Path, count: int) -> list[Path]:
    """``count`` real RPMs with random payloads (the last one big), createrepo_c, signed repomd.xml."""
    names = [f"bench-pkg{i:04d}" for i in range(count)]
    built = _rpmbuild(root.parent / ".rpmbuild", names, count)
    (root / "Packages").mkdir(parents=True)
    rpms = []
    for name in names:
        rpms.append(root / "Packages" / built[name].name)
        shutil.move(built[name], rpms[-1])
    index_yum(root)
    return rpms


def index_yum(root: Path) -> None:
    subprocess.run(["createrepo_c", "--quiet", str(root)], check=True)
    repomd = root / "repodata" / "repomd.xml"
    with Keyring([KEYS[0]]) as kr:
        kr.sign_detached(repomd, repomd.with_name("repomd.xml.asc"))


def change_yum(root: Path, rpms: list[Path]) -> list[Path]:
    """Rebuild some packages with other payload bytes: same name, same size, mtime kept."""
    changed = _pick(rpms)
    names = [p.name.removesuffix("-1.0-1.noarch.rpm") for p in changed]
    built = _rpmbuild(root.parent / ".rpmbuild", names, len(rpms))
    for p, name in zip(changed, names, strict=True):
        st = p.stat()
        if built[name].stat().st_size != st.st_size:
            raise RuntimeError(f"{name}: the rebuild changed the size; the benchmark needs the same size")
        shutil.move(built[name], p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    index_yum(root)  # not --update: it would keep the old checksums of same-size, same-mtime packages
    return changed


@dataclass(frozen=True)
class Repo:
    kind: str  # "apt" | "yum"
    make: Callable[[Path, int], list[Path]]
    change: Callable[[Path, list[Path]], list[Path]]


REPOS = {"apt": Repo("apt", make_apt, change_apt), "yum": Repo("yum", make_yum, change_yum)}


def cpu_seconds(own: bool) -> float:
    """CPU time of this process and its finished children (our tool runs in it and starts the index
    writer), or of finished children only (aws, rclone)."""
    own_cpu = resource.getrusage(resource.RUSAGE_SELF)
    return children_cpu() + (own_cpu.ru_utime + own_cpu.ru_stime if own else 0.0)


def empty_bucket(client: Any, bucket: str) -> None:
    # One DELETE per key: RGW 16 refuses DeleteObjects without the Content-MD5 new botocore omits.
    keys = [o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in p.get("Contents", [])]  # fmt: skip
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.delete_object(Bucket=bucket, Key=k), keys))


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


def rclone_sync(src: Path, dest: str, endpoint: str, *flags: str) -> list[str]:
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
        ["rclone", "sync", str(src), f"bench:{dest}", "--transfers", "16", "--checkers", "16", "-v",
         "--stats", "0", *flags],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    return [m.group(1) for m in re.finditer(r"INFO  : (\S+): Copied", out.stderr)]


TOOLS = ("mirror", "aws", "rclone", "rclone --checksum")
PHASES = ("initial", "no-change", "same-size change")


def measure_server(kind: str, server: MotoProcess | RGWProcess, repo: Repo, src: Path,
                   packages: list[Path], work: Path) -> Figures:  # fmt: skip
    """figures[tool][phase] = {wall, cpu, requests, <method>…, uploaded, changed_found}."""
    client = make_client(endpoint_url=server.endpoint, max_connections=24)
    bucket = {t: f"bench-{kind}-{repo.kind}-{i}" for i, t in enumerate(TOOLS)}
    for b in bucket.values():
        client.create_bucket(Bucket=b)
    # Warm-up outside the figures: RGW creates its data pool on the first write to the cluster
    # (seconds of PG peering), which would be charged to whichever tool runs first.
    warmup = f"bench-{kind}-{repo.kind}-warmup"
    client.create_bucket(Bucket=warmup)
    for i in range(4):
        client.put_object(Bucket=warmup, Key=f"w{i}", Body=b"w" * 1024)

    #: the mirror's phases in its last run: seconds from its start to the first checkpoint of each kind
    phases: dict[str, float] = {}

    def ours() -> list[str]:
        phases.clear()
        start = time.monotonic()

        def checkpoint(event: str, key: str) -> None:
            phases.setdefault(event, round(time.monotonic() - start, 3))

        # The same-size change rebuilds packages under their names: a rewrite, allowed explicitly.
        rep = mirror(repo.kind, str(src), f"s3://{bucket['mirror']}/r", client=client, allow_rewrite=True,
                     gpg_key=KEYS[1], checkpoint=checkpoint)  # fmt: skip
        assert rep.sync is not None
        return rep.sync.uploaded

    run_tool: dict[str, Callable[[], list[str]]] = {
        "mirror": ours,
        "aws": lambda: aws_sync(src, f"s3://{bucket['aws']}/r", server.endpoint),
        "rclone": lambda: rclone_sync(src, f"{bucket['rclone']}/r", server.endpoint),
        "rclone --checksum": lambda: rclone_sync(
            src, f"{bucket['rclone --checksum']}/r", server.endpoint, "--checksum"
        ),
    }
    shutil.rmtree(work / "cache", ignore_errors=True)  # our hash cache starts empty on each server
    figures: dict[str, dict[str, dict[str, float]]] = {t: {} for t in TOOLS}
    names: set[str] = set()

    def measure(tool: str) -> dict[str, float]:
        own = tool == "mirror"
        mark = server.mark()
        cpu0 = cpu_seconds(own)
        with timer() as t:
            uploaded = run_tool[tool]()
        cpu = cpu_seconds(own) - cpu0
        reqs = server.requests(mark, bucket[tool])
        # the mirror's phases: "t_planned" (metadata verified, tree hashed, bucket listed), "t_uploaded"
        # (first new object written), "t_verified" (whole source verified), "t_index", "t_manifest"
        timings = {f"t_{k}": v for k, v in phases.items()} if own else {}
        return {
            "wall": round(t["s"], 3), "cpu": round(cpu, 3), "requests": float(sum(reqs.values())),
            **{k: float(v) for k, v in sorted(reqs.items())}, "uploaded": float(len(uploaded)),
            "changed_found": float(sum(1 for u in uploaded if u.rsplit("/", 1)[-1] in names)),
            "load": float(Path("/proc/loadavg").read_text().split()[0]), **timings,
        }  # fmt: skip

    for phase in PHASES:
        if phase == "same-size change":
            names = {p.name for p in repo.change(src, packages)}
        for tool in TOOLS:
            figures[tool][phase] = measure(tool)
        if phase == "initial":
            # The machine may be shared: the initial upload again, in reverse order, into emptied
            # buckets (and without our hash cache); each tool keeps its better run.
            for tool in TOOLS:
                empty_bucket(client, bucket[tool])
            shutil.rmtree(work / "cache", ignore_errors=True)
            for tool in reversed(TOOLS):
                again = measure(tool)
                if again["wall"] < figures[tool][phase]["wall"]:
                    figures[tool][phase] = again
    return figures


Figures = dict[str, dict[str, dict[str, float]]]


def results_for(kind: str, repo: str, figures: Figures, meta: dict[str, float | str]) -> list[Result]:
    f = figures
    bench = f"mirror.{repo}.{kind}"
    out = [
        Result(bench, "initial upload", f["mirror"]["initial"]["wall"], "s", "rclone sync",
               f["rclone"]["initial"]["wall"], "<= 1.0x rclone",
               f["mirror"]["initial"]["wall"] <= f["rclone"]["initial"]["wall"], extra=dict(meta)),
        Result(bench, "no-change re-sync", f["mirror"]["no-change"]["wall"], "s", "aws s3 sync",
               f["aws"]["no-change"]["wall"], "<= 0.5x aws",
               f["mirror"]["no-change"]["wall"] <= 0.5 * f["aws"]["no-change"]["wall"]),
        Result(bench, "same-size change found", f["mirror"]["same-size change"]["changed_found"], "pkg",
               "changed", float(CHANGED), f"all {CHANGED}",
               f["mirror"]["same-size change"]["changed_found"] == CHANGED),
    ]  # fmt: skip
    for tool in TOOLS:
        for phase in PHASES:
            x = f[tool][phase]
            extra: dict[str, float | str] = {k: v for k, v in x.items() if k not in ("wall",)}
            out.append(Result(bench, f"{phase}: {tool}", x["wall"], "s", extra=extra))
    return out


def run(quick: bool, repos: list[str]) -> list[Result]:
    count = 100 if quick else 1000
    work = Path(tempfile.mkdtemp(prefix="bench-mirror-"))
    results: list[Result] = []
    env = {**CREDS, "CERNVM_CACHE_DIR": str(work / "cache")}
    with environ(env):
        try:
            KEYS[:] = generate_test_key(work / "key")
            for kind in ("moto", "rgw"):
                memory = (2 << 30) if quick else (8 << 30)
                try:
                    server = MotoProcess(work) if kind == "moto" else RGWProcess(work, memory * len(repos))
                except ToolError as e:  # the figures of the other server are still worth printing
                    print(f"{kind}: not measured: {e.message}", file=sys.stderr)
                    continue
                try:
                    for name in repos:
                        # Each server starts from a fresh source, made the same way.
                        src = work / name
                        shutil.rmtree(src, ignore_errors=True)
                        packages = REPOS[name].make(src, count)
                        mb = sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) / 1e6
                        meta: dict[str, float | str] = {"MB": round(mb, 1), "packages": count}
                        figures = measure_server(kind, server, REPOS[name], src, packages, work)
                        results.extend(results_for(kind, name, figures, meta))
                finally:
                    server.stop()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    flags(__doc__, {"--quick": "a smaller run (fewer rounds or inputs)"})
    chosen = [r for r in REPOS if f"--{r}" in sys.argv] or list(REPOS)
    res = run(quick="--quick" in sys.argv, repos=chosen)
    print_table(res)
    for r in res:
        if r.extra:
            print(f"  {r.bench} {r.metric}: {r.extra}")
