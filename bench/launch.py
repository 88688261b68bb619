"""cernvm-launch benchmarks.

1. Boot overhead: ``create`` until the guest is ready, next to a plain ``qemu-system-x86_64`` boot of
   the same image, disks and accelerator until the same point (aim: <= 10 % overhead). "Ready" is the
   first successful ``ssh NAME -- true`` when a bootable CernVM image is given
   (``CERNVM_BENCH_IMAGE`` = the image, ``CERNVM_BENCH_CVMFS_SERVER`` = host:port the guest reaches
   its repository at, e.g. 10.0.2.2:8000), else (not --quick) the demo image built against the demo
   repository served here; with --quick a boot-sector guest's greeting on the serial
   console, which isolates launch's own cost (keys, context ISO, scratch disk, libvirt) from the OS.
2. ``list`` with 50 defined instances on libvirt's test driver, next to the bare libvirt calls it
   cannot avoid (list the domains, read each one's XML).
3. A boot failure: seconds from μCernVM's panic line reaching the console log to ``wait`` (what
   ``create`` runs) giving up with the console's lines — before the boot watcher, the SSH timeout.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libvirt

from bench.common import Result, flags, print_table, timer
from cernvm_build import accel, launch
from cernvm_build.errors import LaunchError
from cernvm_build.launch import bootwatch, config, context, daemon, instances, keys, ssh, storage, userdata
from cernvm_build.launch.images import ImageCache, detect_format
from tests.support.hypervisor import User, namespace_hypervisor, session_user

GREETING = b"launch-bench-guest"
WHERE = {
    "local": "qemu:///system",
    "session": "qemu:///session as an unprivileged user",
    "remote": "qemu+ssh to a libvirtd in a network namespace, disks uploaded",
}
DRIVER_XML = "<node><cpu><mode>fixed</mode><active>2</active></cpu><memory>16777216</memory></node>"


def _tiny_guest(path: Path) -> Path:
    code = bytes([0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8, 0xF4, 0xEB, 0xFD])
    msg_at = 0x7C00 + 3 + len(code)
    sector = bytes([0xBE, msg_at & 0xFF, msg_at >> 8]) + code + GREETING + b"\r\n\0"
    path.write_bytes(sector.ljust(510, b"\0") + b"\x55\xaa" + b"\0" * (1 << 20))
    os.chmod(path, 0o644)
    return path


def _poll(pred: Callable[[], bool], timeout: float, console: Callable[[], bytes], what: str) -> None:
    """Until ``pred``; a boot failure the console shows ends the wait at once, with its lines (the
    plain-qemu reference once sat out its whole 900 s timeout on a guest that had panicked)."""
    deadline = time.monotonic() + timeout
    while not pred():
        failure = bootwatch.check(console().decode(errors="replace"))
        if failure is not None:
            raise RuntimeError(f"{what}: the guest failed to boot: {failure.reason}\n{failure.lines}")
        if time.monotonic() > deadline:
            tail = console().decode(errors="replace")[-2000:]
            raise TimeoutError(f"{what}: guest not ready within {timeout:g} s; console:\n{tail}")
        time.sleep(0.05)


def _file(log: Path) -> Callable[[], bytes]:
    return lambda: log.read_bytes() if log.exists() else b""


def _greeted(console: Callable[[], bytes]) -> Callable[[], bool]:
    return lambda: GREETING in console()


def _ssh_ok(t: ssh.Target) -> Callable[[], bool]:
    def check() -> bool:
        try:
            client = ssh.connect(t, timeout=5)
        except ssh.NotYet:
            time.sleep(0.5)
            return False
        try:
            return ssh.run(client, "true") == 0
        finally:
            client.close()

    return check


def _guest_clock(console: bytes) -> float:
    """The bootloader's last console timestamp (guest uptime at switch_root), 0 when there is none."""
    import re

    stamps = re.findall(rb"\[(\d+\.\d+)\] ucernvm:", console)
    return float(stamps[-1]) if stamps else 0.0


@dataclass(frozen=True)
class Boot:
    seconds: float  # create (or exec) to ready
    clock: float  # the guest's uptime at switch_root (its own clock)
    cpu: float  # CPU seconds QEMU used until ready: what the guest cost, whatever the host's load
    queued: float  # seconds QEMU's threads were runnable but waited for a CPU (the host's load)
    launcher: float = 0.0  # CPU seconds of the launcher (and the ssh -W it ran) from create to ready


def _own_cpu() -> float:
    """CPU seconds of this process and its ended children (the ``ssh -W`` tunnels of the attempts)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """Seconds ``pid``'s threads ran and waited on a run queue (``schedstat``), nan when it is gone."""
    ran = waited = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                r, w, _ = (task / "schedstat").read_text().split()
                ran, waited = ran + int(r), waited + int(w)
    except OSError:
        return float("nan"), float("nan")
    return ran / 1e9, waited / 1e9


def _qemu_of(name: str) -> int:
    """The pid of the QEMU running domain ``name`` (any daemon's: the namespace host shares this
    machine's pid namespace), 0 when there is none."""
    want = f"guest={name},".encode()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if want in (p / "cmdline").read_bytes():
                    return int(p.name)
            except OSError:
                continue
    return 0


def _plain_qemu(
    image: Path,
    fmt: str,
    work: Path,
    acc: accel.Accel,
    memory: int,
    cvmfs: str | None,
    timeout: float,
    tweak: Callable[[list[str], Path], list[str]] | None = None,
) -> Boot:
    """Seconds from exec to ready for qemu started by hand with the same disks and network.
    ``tweak(argv, console_log)`` may change the command line (bench/launch_qemu_options.py adds
    libvirt's options one at a time); the console is read from ``console_log`` either way."""
    client, host = keys.generate("bench"), keys.generate("root@bench")
    (work / "id").write_text(client.private_openssh)
    os.chmod(work / "id", 0o600)
    ud = userdata.merge(
        userdata.parse(b""), hostname="bench", authorized_keys=[client.public_openssh],
        host_key_private=host.private_openssh, host_key_public=host.public_openssh,
        ucernvm={"cvmfs_server": cvmfs} if cvmfs else {},
    )  # fmt: skip
    ctx = context.build_iso(work / "ctx.iso", userdata.render(ud), name="bench", instance_id="bench")
    scratch = work / "scratch.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", scratch, "20000M"], check=True
    )
    port = instances.pick_port(set())
    log = work / "serial.log"
    boot_dev = "ide-cd" if fmt == "iso" else "virtio-blk-pci"
    argv = [
        "qemu-system-x86_64", "-accel", acc.name, "-m", str(memory), "-smp", "1", "-nodefaults",
        "-display", "none", "-serial", f"file:{log}",
        "-drive", f"file={image},if=none,id=boot,readonly=on,format={'qcow2' if fmt == 'qcow2' else 'raw'}",
        "-device", f"{boot_dev},drive=boot,bootindex=1",
        "-drive", f"file={scratch},if=virtio,format=qcow2",
        "-drive", f"file={ctx},if=virtio,format=raw,readonly=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0,addr=0x1e",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip
    if tweak is not None:
        argv = tweak(argv, log)
    console = _file(log)
    ready = (
        _ssh_ok(ssh.Target("127.0.0.1", port, "root", host.public_openssh, work / "id"))
        if cvmfs
        else _greeted(console)
    )
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    group = _into_machine_cgroup(proc.pid) if PLAIN_IN_MACHINE_CGROUP else None
    try:
        if proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None:  # a bad command line: say so instead of waiting for the timeout
            assert proc.stderr is not None
            raise RuntimeError(f"plain qemu exited {proc.returncode}: {proc.stderr.read().decode()[-500:]}")
        _poll(ready, timeout, console, "plain qemu")
        seconds = time.perf_counter() - start
        return Boot(seconds, _guest_clock(console()), *_cpu_seconds(proc.pid))
    finally:
        proc.kill()
        proc.wait()
        if group is not None:
            group.rmdir()


#: --plain-in-machine-cgroup: libvirt runs each QEMU in a cgroup under /machine, which as a whole
#: weighs as much as one task of the root group; on a host loaded by many root-group tasks its guests
#: get less CPU than a QEMU started by hand. This puts the reference into the same place.
PLAIN_IN_MACHINE_CGROUP = "--plain-in-machine-cgroup" in sys.argv
CPU_CGROUP = Path("/sys/fs/cgroup/cpu/machine")  # cgroup v1 (v2: /sys/fs/cgroup/machine.slice)


def _into_machine_cgroup(pid: int) -> Path:
    group = CPU_CGROUP / f"cernvm-bench-plain-{pid}"
    group.mkdir()
    (group / "cgroup.procs").write_text(str(pid))
    return group


def _launch(
    host: launch.Host,
    image: Path | str,
    home: Path,
    memory: int,
    cvmfs: str | None,
    timeout: float,
    pool: str = "cernvm-launch",
) -> Boot:
    """Seconds from ``create`` (keys, context ISO, scratch disk, define, start; on a remote host the
    uploads too) to ready, the guest reached the way ``cernvm-launch ssh`` reaches it. ``image`` is
    a file, or the name of an image in ``home``'s image cache (``images add``, as users do)."""
    name = f"bench-{os.getpid()}-{time.monotonic_ns() % 100000}"
    spec = launch.InstanceSpec(
        settings=config.Settings(name=name, memory=memory, launch_home_folder=home, storage_pool=pool),
        name=name, user_data=b"", image=str(image), cvmfs_server=cvmfs,
    )  # fmt: skip
    steps = _Steps()
    cpu = _own_cpu()
    start = time.perf_counter()
    try:
        inst = launch.create_instance(spec, host=host, reporter=steps)
        meta = inst.meta
        assert meta is not None

        def console() -> bytes:
            return instances.console_bytes(host.conn, meta, 256 << 10)

        steps.step("waiting (as create does)")
        if cvmfs:  # what create runs: the console watched, SSH tried until `true` runs
            launch.wait_ready(host, name, timeout=timeout)
        else:
            _poll(_greeted(console), timeout, console, f"launch on {host.uri}")
        seconds = time.perf_counter() - start
        launcher = _own_cpu() - cpu
        if os.environ.get("CERNVM_BENCH_STEPS"):
            print(f"{host.uri.split('?')[0]}: {steps.summary()}", file=sys.stderr)
        return Boot(seconds, _guest_clock(console()), *_cpu_seconds(_qemu_of(name)), launcher)
    finally:
        instances.destroy(host.conn, name, force=True, home=launch.home_for(spec.settings, host.uri))


class _Steps:
    """A reporter that keeps when each create step began (CERNVM_BENCH_STEPS=1 prints them)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, str]] = []

    def step(self, message: str) -> None:
        self.marks.append((time.perf_counter(), message))

    def progress(self, what: str, done: int, total: int | None) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def summary(self) -> str:
        ends = [t for t, _ in self.marks[1:]] + [time.perf_counter()]
        return ", ".join(f"{m} {e - t:.2f}s" for (t, m), e in zip(self.marks, ends, strict=True))


def _session_launch(user: User, image: Path, memory: int, cvmfs: str | None, timeout: float) -> Boot:
    """``_launch`` on the user's own qemu:///session, run as that user (``--session-worker``)."""
    r = user.run_python(
        "-m", "bench.launch", "--session-worker", str(image), str(memory), cvmfs or "", str(timeout),
        timeout=timeout + 120,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"session launch failed: {r.stderr[-2000:]}")
    return Boot(*map(float, r.stdout.split()[-5:]))


def _session_worker(argv: list[str]) -> None:
    """As the session user: warm its session daemon (started on first use, QEMU's capabilities
    probed for it once, as a laptop does before its first create), then time one create."""
    image, memory, cvmfs, timeout = Path(argv[0]), int(argv[1]), argv[2] or None, float(argv[3])
    uri = "qemu:///session"
    conn = libvirt.open(uri)
    conn.getDomainCapabilities(None, None, None, None, 0)
    host = launch.Host(conn, uri, accel.detect())
    boot = _launch(host, image, Path(os.environ["HOME"]) / "launch", memory, cvmfs, timeout)
    print(f"{boot.seconds} {boot.clock} {boot.cpu} {boot.queued} {boot.launcher}")


def bench_boot(quick: bool, rounds: int = 0) -> list[Result]:
    started = daemon.ensure()
    acc = accel.detect()
    servers: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="launch-bench-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    try:
        given = os.environ.get("CERNVM_BENCH_IMAGE")
        cvmfs = os.environ.get("CERNVM_BENCH_CVMFS_SERVER") if given else None
        repo = None
        if not given and not quick:
            given, repo = _demo_image(work)
            cvmfs = f"10.0.2.2:{_serve_apart(repo, '127.0.0.1', servers)}"
        if given:
            image = work / Path(given).name
            shutil.copyfile(given, image)
            os.chmod(image, 0o644)
            fmt, memory, timeout, point = detect_format(image), 512, 900.0, "first ssh -- true"
        else:
            image, fmt, memory, timeout, point = (
                _tiny_guest(work / "tiny.hdd"),
                "hdd",
                128,
                120.0,
                "serial greeting",
            )
        local = launch.Host(libvirt.open("qemu:///system"), "qemu:///system", acc)
        with (
            namespace_hypervisor(work / "ns", f"lb{os.urandom(3).hex()}") as ns,
            session_user() as user,
        ):
            remote = launch.connect(ns.uri)
            remote.accelerator = acc
            # The system and remote rows boot the image by name from their image cache, as after
            # 'images add': the remote pool keeps a cached image's copy after destroy, so the first
            # remote round uploads it (CERNVM_BENCH_STEPS=1 shows the step) and later ones do not.
            named = image.name
            for home in (work / "h", work / "rh"):
                ImageCache(home).add(image)
            remote_cvmfs = cvmfs
            if repo:  # the guest's 10.0.2.2 is the namespace: serve the repository where it reaches
                remote_cvmfs = f"{ns.gateway}:{_serve_apart(repo, ns.gateway, servers)}"
            kinds = ("plain", "local", "session", "remote")
            boots: dict[str, list[Boot | None]] = {k: [] for k in kinds}  # None: that boot failed
            loads: list[float] = []
            try:
                for n in range(rounds or (1 if quick else 3)):
                    d = work / f"plain{n}"
                    d.mkdir()
                    runs: dict[str, Callable[[], Boot]] = {
                        "plain": functools.partial(_plain_qemu, image, fmt, d, acc, memory, cvmfs, timeout),
                        "local": functools.partial(_launch, local, named, work / "h", memory, cvmfs, timeout),
                        "session": functools.partial(_session_launch, user, image, memory, cvmfs, timeout),
                        "remote": functools.partial(
                            _launch, remote, named, work / "rh", memory, remote_cvmfs, timeout
                        ),
                    }
                    # Alternate, and start each round with the next kind: on a shared machine the load
                    # changes from one boot to the next, and a fixed order would hand the same kind
                    # the same place in every round (e.g. always right after the image build).
                    for kind in kinds[n % len(kinds) :] + kinds[: n % len(kinds)]:
                        loads.append(os.getloadavg()[0])
                        try:
                            b = runs[kind]()
                        except (RuntimeError, TimeoutError, LaunchError) as e:
                            # Under TCG on a loaded host the guest kernel itself sometimes panics
                            # ("IO-APIC + timer doesn't work!"): a failed boot, not launch's cost.
                            boots[kind].append(None)
                            first = str(e).splitlines()[0] if str(e) else type(e).__name__
                            print(f"round {n + 1} {kind}: failed: {first}", file=sys.stderr)
                            continue
                        boots[kind].append(b)
                        print(f"round {n + 1} {kind}: {b.seconds:.1f} s, switch_root {b.clock:.1f} s, QEMU "
                              f"ran {b.cpu:.1f} s, queued {b.queued:.1f} s, launcher CPU {b.launcher:.2f} s, "
                              f"load {loads[-1]:.1f}",
                              file=sys.stderr)  # fmt: skip
            finally:
                remote.close()
                local.close()
        return [
            _boot_result(kind, point, acc, image, boots, loads) for kind in ("local", "session", "remote")
        ]
    finally:
        for server in servers:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
        daemon.stop(started)


def _serve_apart(root: Path, host: str, procs: list[subprocess.Popen[bytes]]) -> int:
    """The repository served by a process of its own (added to ``procs``), as a real Stratum is; its
    port. In this process its thread would share the interpreter lock with the waits timed here (the
    system and remote rows' SSH attempts, the plain row's), but not with the session row's, which
    waits in a process of its own."""
    code = (
        "import sys, time; from pathlib import Path; from cernvm_build.cvmfs.serve import serve; "
        "s = serve(Path(sys.argv[1]), host=sys.argv[2]); print(s.port, flush=True); time.sleep(1e9)"
    )
    repo_root = str(Path(__file__).resolve().parent.parent)
    p = subprocess.Popen([sys.executable, "-c", code, str(root), host], stdout=subprocess.PIPE, cwd=repo_root)
    procs.append(p)
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.strip().isdigit():
        raise RuntimeError(f"the repository server did not start (exit {p.poll()})")
    return int(line)


def _boot_result(
    kind: str,
    point: str,
    acc: accel.Accel,
    image: Path,
    boots: dict[str, list[Boot | None]],
    loads: list[float],
) -> Result:
    """Best of each kind against the best plain run; the median, the median of the ratios to the
    same round's plain run, and QEMU's CPU seconds until ready (what the guest cost, which the
    host's load does not change) next to it."""
    mine = [b for b in boots[kind] if b]
    refs = [b for b in boots["plain"] if b]
    bench = f"launch.create_to_ready{'' if kind == 'local' else '.' + kind}"
    metric = f"{point} ({acc.name}, {WHERE[kind]})"
    if not mine or not refs:
        return Result(
            bench=bench,
            metric=metric,
            value=float("nan"),
            unit="s",
            ok=False,
            extra={"failed": f"{len(boots[kind]) - len(mine)} of {len(boots[kind])}, plain {len(refs)} ran"},
        )
    ours, plain = [b.seconds for b in mine], [b.seconds for b in refs]
    ratios = [b.seconds / p.seconds for b, p in zip(boots[kind], boots["plain"], strict=True) if b and p]
    return Result(
        bench=bench,
        metric=metric,
        value=min(ours),
        unit="s",
        reference="plain qemu, same image+disks, same run"
        + (", in a /machine cgroup" if PLAIN_IN_MACHINE_CGROUP else ""),
        reference_value=min(plain),
        aim="<= 1.10x",
        ok=min(ours) <= 1.10 * min(plain),
        extra={
            "image": image.name,
            "rounds": len(ours),
            "overhead_s": min(ours) - min(plain),
            "median_s": statistics.median(ours),
            "plain_median_s": statistics.median(plain),
            "median_ratio_same_round": statistics.median(ratios) if ratios else float("nan"),
            "failed_boots": len(boots[kind]) - len(mine),
            "plain_failed_boots": len(boots["plain"]) - len(refs),
            # guest uptime at switch_root: separates a slower guest from host-side overhead
            "guest_switch_root_s": min(b.clock for b in mine),
            "plain_guest_switch_root_s": min(b.clock for b in refs),
            "qemu_cpu_s_median": statistics.median(b.cpu for b in mine),
            "plain_qemu_cpu_s_median": statistics.median(b.cpu for b in refs),
            "qemu_queued_s_median": statistics.median(b.queued for b in mine),
            "plain_qemu_queued_s_median": statistics.median(b.queued for b in refs),
            "launcher_cpu_s_median": statistics.median(b.launcher for b in mine),
            "all_s": " ".join(f"{t:.1f}" for t in ours),
            "plain_all_s": " ".join(f"{t:.1f}" for t in plain),
            "load_1min": f"{min(loads):.1f}-{max(loads):.1f}",
        },
    )


def _demo_image(work: Path) -> tuple[str, Path]:
    """The demo image built against the demo repository (served on 127.0.0.1 while it is built; the
    guests get theirs from ``_serve_apart``), and the repository's folder."""
    import dataclasses

    from cernvm_build import profile
    from cernvm_build.context import BuildContext
    from cernvm_build.cvmfs.serve import serve
    from cernvm_build.demo.repository import publish_demo
    from cernvm_build.image.build import build_image

    publish_demo(work / "repo")
    with serve(work / "repo") as srv:
        prof = profile.load("demo")
        prof = dataclasses.replace(prof, cvmfs=dataclasses.replace(prof.cvmfs, servers=[srv.repo_url()]))
        build_image(prof, work / "images", formats=["iso"], ctx=BuildContext.from_environment())
    return str(next((work / "images").glob("*.iso"))), work / "repo"


def bench_list(quick: bool) -> list[Result]:
    work = Path(tempfile.mkdtemp(prefix="launch-bench-list-"))
    try:
        (work / "driver.xml").write_text(DRIVER_XML)
        conn = libvirt.open(f"test://{work / 'driver.xml'}")
        host = launch.Host(conn, conn.getURI(), accel.Accel("test", "libvirt test driver"))
        image = _tiny_guest(work / "tiny.hdd")
        for n in range(50):
            name = f"vm{n:02d}"
            settings = config.Settings(name=name, disk=100, launch_home_folder=work / "home")
            spec = launch.InstanceSpec(
                settings=settings, name=name, user_data=b"", image=str(image), start=n % 2 == 0
            )
            launch.create_instance(spec, host=host)
        ours, raw = [], []
        for _ in range(3 if quick else 10):
            with timer() as t:
                found = instances.list_instances(conn)
            ours.append(t["s"])
            with timer() as t:
                [d.XMLDesc(0) for d in conn.listAllDomains(0)]
            raw.append(t["s"])
        assert len(found) == 50
        conn.close()
        value = min(ours)
        return [
            Result(
                bench="launch.list",
                metric="50 domains (test driver)",
                value=value * 1000,
                unit="ms",
                reference="listAllDomains + XMLDesc",
                reference_value=min(raw) * 1000,
                aim="< 1000 ms",
                ok=value < 1.0,
            )
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


#: μCernVM's console when the OS repository cannot be reached, from a boot-sector stand-in guest.
PANIC = (
    b"Linux version 6.1.0 (bench)\r\n[    1.0] ucernvm: cvmfs: mounting demo.cern.ch from 10.0.2.2:1\r\n"
    b"[    2.0] ucernvm: panic: CernVM-FS mount of demo.cern.ch failed: [Errno 111] Connection refused\r\n"
)


def bench_panic(quick: bool) -> list[Result]:
    """Seconds from the panic line reaching the console log to ``wait`` (as in create) giving up, on
    the system daemon and on the namespace host (whose console ``wait`` reads back through libvirt's
    storage API; this bench watches the file itself through its view of the namespace's storage)."""
    started = daemon.ensure()
    work = Path(tempfile.mkdtemp(prefix="launch-bench-panic-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    try:
        code = bytes([0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8, 0xF4, 0xEB, 0xFD])
        msg_at = 0x7C00 + 3 + len(code)
        sector = bytes([0xBE, msg_at & 0xFF, msg_at >> 8]) + code + PANIC + b"\0"
        image = work / "panic.hdd"
        image.write_bytes(sector.ljust(510, b"\0") + b"\x55\xaa" + b"\0" * (1 << 20))
        os.chmod(image, 0o644)
        acc = accel.detect()
        results = []
        with namespace_hypervisor(work / "ns", f"lp{os.urandom(3).hex()}") as ns:
            hosts = {
                "": (launch.Host(libvirt.open("qemu:///system"), "qemu:///system", acc), Path("/")),
                ".remote": (launch.connect(ns.uri), ns.storage),
            }
            for suffix, (host, root) in hosts.items():
                host.accelerator = acc
                latencies = [
                    _panic_once(host, image, work, root, f"{suffix}{n}") for n in range(1 if quick else 3)
                ]
                host.close()
                value, where = min(latencies), "remote" if suffix else "local"
                results.append(
                    Result(
                        bench=f"launch.panic_to_exit{suffix}",
                        metric=f"console panic -> wait gives up ({acc.name}, {WHERE[where]})",
                        value=value,
                        unit="s",
                        reference="SSH timeout before (waitTimeout)",
                        reference_value=900.0,
                        aim="< 30 s",
                        ok=value < 30,
                        extra={"rounds": len(latencies), "max_s": max(latencies)},
                    )
                )
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)
        daemon.stop(started)


def _panic_once(host: launch.Host, image: Path, work: Path, root: Path, tag: str) -> float:
    """One panicking guest: seconds from its panic line in the console file to wait giving up."""
    import threading

    from cernvm_build.launch.ready import BootFailedError

    name = f"bench-panic-{os.getpid()}{tag.replace('.', '-')}"
    spec = launch.InstanceSpec(
        settings=config.Settings(name=name, memory=128, disk=100, launch_home_folder=work / "home"),
        name=name, user_data=b"", image=str(image),
    )  # fmt: skip
    inst = launch.create_instance(spec, host=host)
    assert inst.meta is not None
    # the console file as this machine sees it (a remote one: in the namespace's /var/lib/libvirt)
    log = root / Path(inst.meta.console_log).relative_to(storage.SYSTEM_PARENT if root != Path("/") else "/")
    seen: list[float] = []

    def watch() -> None:
        while not seen:
            if log.exists() and b"ucernvm: panic" in log.read_bytes():
                seen.append(time.perf_counter())
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    try:
        launch.wait_ready(host, name, timeout=900, remove_on_failure=True)
    except BootFailedError:
        return time.perf_counter() - seen[0] if seen else float("nan")
    raise AssertionError("the panicking guest was reported ready")


def run(quick: bool, rounds: int = 0) -> list[Result]:
    return bench_list(quick) + bench_panic(quick) + bench_boot(quick, rounds)


if __name__ == "__main__":
    flags(
        __doc__,
        {
            "--quick": "a smaller run (fewer rounds or inputs)",
            "--rounds": "N: boots of each kind (default 3, --quick 1)",
            "--boot-only": "only the boot rows",
            "--session-worker": "internal: the unprivileged session's worker",
            "--plain-in-machine-cgroup": "the plain qemu in libvirt's machine cgroup too",
        },
    )
    if "--session-worker" in sys.argv:
        _session_worker(sys.argv[sys.argv.index("--session-worker") + 1 :])
        raise SystemExit(0)
    # --rounds N: boots of each kind (default 3, --quick 1); --boot-only: skip list and panic
    n = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 0
    quick = "--quick" in sys.argv
    results = bench_boot(quick, n) if "--boot-only" in sys.argv else run(quick, n)
    print_table(results)
    for r in results:
        if r.extra:
            print(f"  {r.bench}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in r.extra.items()))  # fmt: skip
