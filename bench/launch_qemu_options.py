"""Which of libvirt's QEMU options costs the guest time: the demo image booted by plain
``qemu-system-x86_64`` to its first ``ssh -- true`` (bench/launch.py's reference), once as is and
once per variant adding one option libvirt's command line has; QEMU's CPU seconds until ready
(steadier than wall on a shared host), interleaved, with the load next to each run.

    sudo .venv/bin/python bench/launch_qemu_options.py [--rounds N] [VARIANT ...]
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import threading
import time

from bench import launch as bl
from bench.common import flags
from bench.launch import _demo_image, _plain_qemu, _serve_apart
from cernvm_build import accel
from cernvm_build.launch import ready, ssh

Tweak = Callable[[list[str], Path], list[str]]


def _replace(argv: list[str], old: list[str], new: list[str]) -> list[str]:
    i = next(n for n in range(len(argv)) if argv[n : n + len(old)] == old)
    return argv[:i] + new + argv[i + len(old) :]


def _pty(argv: list[str], log: Path) -> list[str]:
    """libvirt's serial: a pty nobody opens, its output logged to a file."""
    serial = ["-chardev", f"pty,id=s0,logfile={log},logappend=on", "-device", "isa-serial,chardev=s0,index=0"]
    return _replace(argv, ["-serial", f"file:{log}"], serial)


def _sandbox(argv: list[str], log: Path) -> list[str]:
    return [*argv, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]


def _monitor(argv: list[str], log: Path) -> list[str]:
    qmp = log.parent / "qmp.sock"
    return [*argv, "-chardev", f"socket,id=m,path={qmp},server=on,wait=off", "-mon", "chardev=m,mode=control",
            "-no-shutdown", "-rtc", "base=utc", "-boot", "strict=on", "-no-user-config"]  # fmt: skip


def _rng(argv: list[str], log: Path) -> list[str]:
    return _replace(
        argv,
        ["-device", "virtio-rng-pci"],
        ["-object", "rng-random,id=r0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=r0"],
    )


def _machine(argv: list[str], log: Path) -> list[str]:
    machine = "pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram"
    return [*argv, "-machine", machine, "-cpu", "qemu64",
            "-object", f"memory-backend-ram,id=pc.ram,size={512 << 20}", "-overcommit", "mem-lock=off",
            "-name", "guest=x,debug-threads=on", "-msg", "timestamp=on"]  # fmt: skip


def _disks(argv: list[str], log: Path) -> list[str]:
    """libvirt's blockdev nodes with discard=unmap, the CD on ide.1."""
    out, i = [], 0
    files = [argv[n + 1] for n in range(len(argv)) if argv[n] == "-drive"]
    paths = [f.split(",")[0].removeprefix("file=") for f in files]
    while i < len(argv):
        if argv[i] in ("-drive", "-device") and ("drive=boot" in argv[i + 1] or argv[i] == "-drive"):
            i += 2
            continue
        out.append(argv[i])
        i += 1
    boot, scratch, ctx = paths
    fmt = "raw" if "format=raw" in files[0] else "qcow2"
    for n, (path, f, ro) in enumerate([(boot, fmt, "on"), (scratch, "qcow2", "off"), (ctx, "raw", "on")]):
        out += ["-blockdev", f"driver=file,filename={path},node-name=s{n},auto-read-only=on,discard=unmap",
                "-blockdev", f"node-name=f{n},read-only={ro},discard=unmap,driver={f},file=s{n}"]  # fmt: skip
    out += ["-device", "ide-cd,bus=ide.1,unit=0,drive=f0,bootindex=1",
            "-device", "virtio-blk-pci,drive=f1", "-device", "virtio-blk-pci,drive=f2"]  # fmt: skip
    return out


def _all(argv: list[str], log: Path) -> list[str]:
    for t in (_pty, _sandbox, _monitor, _rng, _machine, _disks):
        argv = t(argv, log)
    return argv


def _launcher_ready(t: ssh.Target, listen: bool = True) -> Callable[[], bool]:
    """``cernvm-launch``'s readiness policy (ready.wait): a new SSH attempt every STAGGER seconds
    next to those still waiting (at most MAX_ATTEMPTS; with ``listen`` none while the guest's sshd
    serves one, as ready.wait does now), RETRY seconds after a refusal."""
    attempts: list[ready._Attempt] = []
    ended = threading.Event()
    when = {"started": 0.0, "refused": 0.0}

    def check() -> bool:
        now = time.monotonic()
        due = when["started"] + ready.STAGGER if attempts else when["refused"] + ready.RETRY
        more = ready._more(attempts) if listen else len(attempts) < ready.MAX_ATTEMPTS
        if more and now >= due:
            attempts.append(ready._Attempt(t, 10.0, ended))
            when["started"] = now
            ATTEMPTS[-1] += 1
        for a in [a for a in attempts if a.done]:
            attempts.remove(a)
            HEARD[-1] += a.heard or a.why_not == ""
            if not a.why_not:
                return True
            when["refused"] = time.monotonic()
        return False

    return check


def _old_ready(t: ssh.Target) -> Callable[[], bool]:
    return _launcher_ready(t, listen=False)


ATTEMPTS, HEARD = [0], [0]

VARIANTS: dict[str, Tweak | None] = {
    "plain": None, "pty": _pty, "sandbox": _sandbox, "monitor": _monitor, "rng": _rng,
    "machine": _machine, "disks": _disks, "all": _all, "launchwait": None, "launchwait_old": None,
}  # fmt: skip


def main(argv: list[str]) -> None:
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3
    names = [a for a in argv if a in VARIANTS] or list(VARIANTS)
    work = Path(tempfile.mkdtemp(prefix="launch-opts-", dir="/var/tmp"))
    servers: list = []
    try:
        image_s, repo = os.environ.get("CERNVM_BENCH_IMAGE"), None
        if image_s is None:
            image_s, repo = _demo_image(work)
        image = Path(image_s)
        if repo is None:
            repo = Path(os.environ["CERNVM_BENCH_REPO"])
        cvmfs = f"10.0.2.2:{_serve_apart(repo, '127.0.0.1', servers)}"
        acc = accel.detect()
        plain_ok = bl._ssh_ok
        cpu: dict[str, list[float]] = {n: [] for n in names}
        wall: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                d = work / f"{name}{r}"
                d.mkdir()
                load = os.getloadavg()[0]
                run = functools.partial(_plain_qemu, image, "iso", d, acc, 512, cvmfs, 900.0, VARIANTS[name])
                ATTEMPTS.append(0)
                HEARD.append(0)
                policies = {"launchwait": _launcher_ready, "launchwait_old": _old_ready}
                bl._ssh_ok = policies.get(name, plain_ok)  # type: ignore[assignment]
                try:
                    b = run()
                except Exception as e:  # a failed boot is reported, the others go on
                    print(f"round {r + 1} {name}: failed: {str(e).splitlines()[0]}", flush=True)
                    continue
                cpu[name].append(b.cpu)
                wall[name].append(b.seconds)
                print(f"round {r + 1} {name:8}: QEMU CPU {b.cpu:5.2f} s, wall {b.seconds:5.2f} s, "
                      f"switch_root {b.clock:.2f} s, queued {b.queued:.2f} s, load {load:.2f}, "
                      f"attempts {ATTEMPTS[-1]} (sshd answered {HEARD[-1]})", flush=True)  # fmt: skip
        ref = statistics.median(cpu["plain"]) if cpu.get("plain") else float("nan")
        for name in names:
            if cpu[name]:
                m = statistics.median(cpu[name])
                every = " ".join(f"{c:.2f}" for c in cpu[name])
                print(f"{name:8} QEMU CPU median {m:5.2f} s ({m / ref:.3f}x plain), wall median "
                      f"{statistics.median(wall[name]):5.2f} s, cpu all {every}")  # fmt: skip
    finally:
        for s in servers:
            s.kill()
            s.wait()
        if os.environ.get("CERNVM_BENCH_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    flags(__doc__, {"--rounds": "N: interleaved rounds per variant (default 3); VARIANT...: only those"})
    main(sys.argv[1:])
