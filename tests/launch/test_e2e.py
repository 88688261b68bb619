"""End to end: the demo image under a real libvirtd, driven only through ``cernvm-launch``.

The demo OS is published into a local demo repository served on 127.0.0.1 (the guest reaches it as
10.0.2.2 through user-mode networking), the μCernVM demo image is built against it, and one instance
goes through the whole life: create (waits for SSH with the pinned host key), run a command, write a
file, stop (saved state), start, read the file back, destroy — and nothing is left behind. A seed made
from one first boot's server log serves a second instance's whole first boot (``create --seed``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from cernvm_build import profile
from cernvm_build.cli.launch import main
from cernvm_build.cvmfs.serve import Server, serve
from cernvm_build.demo.repository import publish_demo
from tests.support import free_port, launchhome
from tests.support.servers import object_requests_served, requests_served

pytestmark = pytest.mark.e2e
URI = "qemu:///system"
NAME = launchhome.unique("e2e-demo")  # hostname, shared folder and domain


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Server]]:
    """The demo image built against the demo repository, which stays served for the guest: the hdd
    (what ``images pull`` prefers; virtio), with the iso of the same build next to it (IDE CD-ROM)."""
    from cernvm_build.context import BuildContext
    from cernvm_build.image.build import build_image

    work = tmp_path_factory.mktemp("launch-demo")
    publish_demo(work / "repo")
    srv = serve(work / "repo")
    try:
        prof = profile.load("demo")
        prof = dataclasses.replace(prof, cvmfs=dataclasses.replace(prof.cvmfs, servers=[srv.repo_url()]))
        build_image(prof, work / "images", formats=["iso", "hdd"], ctx=BuildContext.from_environment())
        yield next((work / "images").glob("*.hdd")), srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def boot_trace() -> list[str]:
    """The server's log lines of the objects one whole first boot of the demo fetched (create → SSH →
    ``cat /etc/os-release`` → destroy): filled by the library boot below, reused by the seeded boot
    (which boots once more for it when run alone)."""
    return []


@pytest.fixture
def launch_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with launchhome.launch_home(monkeypatch, NAME) as home:
        yield home


def test_demo_instance_life_cycle(
    demo: tuple[Path, Server], launch_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    image, srv = demo
    args = ["--connect", URI]
    assert main([*args, "images", "add", str(image), "--profile", "demo"]) == 0
    shared = launch_home / "shared"  # virtiofs on the system daemon (the cloud kernel has no 9p)
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    (shared / "from-host.txt").write_text("hello guest\n")
    fwd = free_port()
    code = main([*args, "create", "--name", NAME, "--profile", "demo", "--memory", "512", "--yes",
                 "--cvmfs-server", f"10.0.2.2:{srv.port}", "--timeout", "420", "--sharedFolder", str(shared),
                 "--forward", f"{fwd}:8080"])  # fmt: skip
    err = capfd.readouterr().err
    assert code == 0, err

    # stdin reaches the command (a pipe, not a terminal)
    r = subprocess.run([sys.executable, "-m", "cernvm_build.cli.launch", *args, "ssh", NAME, "--",
                        "cat > /root/from-stdin && cat /root/from-stdin"],
                       input=b"x\n", capture_output=True, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0 and r.stdout == b"x\n", r.stderr
    # the shared folder is mounted in the guest, both ways
    assert main([*args, "ssh", "-n", NAME, "--", f"cat /mnt/shared/{NAME}_sf/from-host.txt"]) == 0
    assert capfd.readouterr().out == "hello guest\n"
    assert main([*args, "ssh", "-n", NAME, "--", f"echo hi > /mnt/shared/{NAME}_sf/from-guest.txt"]) == 0
    assert (shared / "from-guest.txt").read_text() == "hi\n"
    # scp -r both ways
    tree = launch_home / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f.txt").write_text("deep\n")
    assert main([*args, "scp", "-r", str(tree), f"{NAME}:/root/"]) == 0
    back = launch_home / "back"
    assert main([*args, "scp", "-r", f"{NAME}:/root/tree", str(back)]) == 0
    assert (back / "sub" / "f.txt").read_text() == "deep\n"
    assert main([*args, "scp", f"{NAME}:/nonexistent/x", str(launch_home)]) == 8
    assert "Traceback" not in capfd.readouterr().err
    # a port forward answers (busybox nc in the guest serves one line)
    assert (
        main([*args, "ssh", "-n", NAME, "--", "(echo forwarded | nc -l -p 8080 >/dev/null &) ; sleep 1"]) == 0
    )
    with socket.create_connection(("127.0.0.1", fwd), timeout=30) as sock:
        assert sock.makefile().readline() == "forwarded\n"
    assert main([*args, "ssh", "-n", NAME, "--", "cat", "/etc/os-release"]) == 0
    assert "ID=cernvm-demo" in capfd.readouterr().out
    assert main([*args, "ssh", "-n", NAME, "--", "hostname"]) == 0
    assert capfd.readouterr().out.strip() == NAME  # the user data reached the OS
    assert main([*args, "ssh", "-n", NAME, "--", "echo kept-across-stop > /root/marker && sync"]) == 0

    # a virtiofs shared folder cannot be saved: stop says so; powered off, the scratch disk keeps the data
    capfd.readouterr()
    assert main([*args, "stop", NAME]) == 8
    assert "virtiofs shared folder" in capfd.readouterr().err
    assert main([*args, "stop", "--force", NAME]) == 0
    assert main([*args, "list", "--json"]) == 0
    (entry,) = [e for e in json.loads(capfd.readouterr().out) if e["name"] == NAME]  # others may run
    assert entry["state"] == "stopped" and entry["profile"] == "demo"
    assert main([*args, "start", NAME, "--wait", "--timeout", "420"]) == 0
    capfd.readouterr()
    assert main([*args, "ssh", "-n", NAME, "--", "cat", "/root/marker"]) == 0
    assert capfd.readouterr().out == "kept-across-stop\n"
    assert main([*args, "ssh", "-n", NAME, "--", "exit 3"]) == 3

    assert main([*args, "destroy", "--force", NAME]) == 0
    assert NAME not in [d.name() for d in libvirt.open(URI).listAllDomains(0)]
    assert not (launch_home / "run" / NAME).exists()  # scratch disk, context ISO, keys, log
    assert [p.name for p in (launch_home / "images").iterdir() if p.suffix == image.suffix] == [image.name]


def test_a_guest_that_cannot_reach_its_repository_fails_create_fast(
    demo: tuple[Path, Server], launch_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The README's mistake: the repository server is not reachable (nothing listens on port 1).
    μCernVM panics; create ends at once with the console's lines and the hint, and the instance is
    removed (--rm-on-failure). The iso, on the IDE CD-ROM: the launcher boots that medium too."""
    built = demo[0].with_suffix(".iso")
    image = launch_home / built.name  # where the system daemon's qemu user may read it (tmp_path: 0700)
    shutil.copyfile(built, image)
    os.chmod(image, 0o644)
    args = ["--connect", URI]
    console = launch_home / "run" / NAME / "console.log"
    panicked: list[float] = []

    def watch() -> None:  # when the panic line reached the console log
        while not panicked and time.monotonic() - started < 600:
            with contextlib.suppress(OSError):
                if b"ucernvm: panic" in console.read_bytes():
                    panicked.append(time.monotonic())
            time.sleep(0.1)

    started = time.monotonic()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = main([*args, "create", "--name", NAME, "--iso", str(image), "--memory", "512", "--yes",
                 "--cvmfs-server", "10.0.2.2:1", "--rm-on-failure"])  # fmt: skip
    ended = time.monotonic()
    elapsed = ended - started
    watcher.join(timeout=5)
    if panicked:
        print(f"\ndemo guest: panic on the console -> create exit: {ended - panicked[0]:.1f} s")
    err = capfd.readouterr().err
    assert code == 8, err
    assert "ucernvm: panic: CernVM-FS mount" in err and "10.0.2.2:1" in err
    print(f"\ndemo guest panic -> create exit: {elapsed:.1f} s (default timeout 900 s)")
    assert NAME not in [d.name() for d in libvirt.open(URI).listAllDomains(0)]


def test_demo_boots_through_the_library(
    demo: tuple[Path, Server], launch_home: Path, boot_trace: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's boot step: create → SSH ready → ``cat /etc/os-release`` → destroy, as library calls
    with typed results (no cernvm-launch subprocess, no scraped output)."""
    from contextlib import ExitStack

    from cernvm_build.demo import flow

    # this run's own name, swept like the others if the run is killed: the demo's ``cernvm-demo`` may be
    # another suite's boot or a user's ``make run`` guest, which ``_boot``'s leftover removal would destroy
    monkeypatch.setattr(flow, "INSTANCE", launchhome.unique("e2e-lib"))
    from cernvm_build.demo.flow import INSTANCE, DemoOptions, DemoRun, _boot

    built, srv = demo
    image = launch_home / built.name  # where the system daemon's qemu user may read it (tmp_path: 0700)
    shutil.copyfile(built, image)
    os.chmod(image, 0o644)
    run, heard = DemoRun(), list[str]()
    with ExitStack() as stack, object_requests_served() as fetched:
        _boot(run, image, DemoOptions(out=launch_home, port=srv.port, boot_timeout=420), heard.append, stack)
    boot_trace[:] = fetched  # a first boot's working set, for the seeded boot
    assert [s.name for s in run.steps] == ["boot + ssh ready", "ssh command", "destroy"]
    assert "ID=cernvm-demo" in run.os_release
    assert any(line.endswith(f"{INSTANCE}: defining the domain") for line in heard)  # steps reported
    assert INSTANCE not in [d.name() for d in libvirt.open(URI).listAllDomains(0)]
    assert not (launch_home / "run" / INSTANCE).exists()


def test_a_guest_boots_through_squid_from_an_s3_backed_replica(
    demo: tuple[Path, Server],
    launch_home: Path,
    rgwserver: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The fleet's path for one guest (issue 20): the demo repository replicated into a bucket of a
    Ceph RADOS Gateway (``s3://cvmfs/<fqrn>``, which the gateway serves at ``/cvmfs/<fqrn>`` as a
    Stratum-1 would), a site squid from ``cvmfs squid-config`` in front, and a guest whose only way
    to the repository is that squid (the server it is given, 127.0.0.1, is its own loopback)."""
    from cernvm_build.cli.main import main as build_main
    from cernvm_build.mirror.locals3 import CREDENTIALS_ENV
    from cernvm_build.mirror.s3client import make_client
    from cernvm_build.paths import data_dir

    image, srv = demo
    for key, value in CREDENTIALS_ENV.items():
        monkeypatch.setenv(key, value)
    client = make_client(endpoint_url=rgwserver.endpoint)
    client.create_bucket(Bucket="cvmfs")
    rgwserver.make_public(client, "cvmfs")
    fqrn = "demo.cernvm.test"
    pub = data_dir("profiles") / "keys" / f"{fqrn}.pub"
    replica = [
        "cvmfs",
        "replicate",
        srv.repo_url(),
        f"s3://cvmfs/{fqrn}",
        "--endpoint-url",
        rgwserver.endpoint,
    ]
    assert build_main([*replica, "--spool", str(launch_home / "spool"), "--key", str(pub), "-q"]) == 0
    rgw_port = rgwserver.endpoint.rsplit(":", 1)[1]

    run_dir = Path(tempfile.mkdtemp(prefix="e2e-squid-"))
    run_dir.chmod(0o1777)  # squid's own user writes its log there
    proxy = free_port()
    conf = run_dir / "squid.conf"
    squid = ["cvmfs", "squid-config", "--port", str(proxy), "--listen", "127.0.0.1", "--client", "127.0.0.1"]
    assert build_main([*squid, "--stratum", "127.0.0.1", "-o", str(conf), "-q"]) == 0
    proc = subprocess.Popen([shutil.which("squid") or "/usr/sbin/squid", "-N", "-f", str(conf)])
    try:
        args = ["--connect", URI]
        assert main([*args, "images", "add", str(image), "--profile", "demo"]) == 0
        code = main([*args, "create", "--name", NAME, "--profile", "demo", "--memory", "512", "--yes",
                     "--cvmfs-server", f"127.0.0.1:{rgw_port}", "--cvmfs-http-proxy", f"http://10.0.2.2:{proxy}",
                     "--timeout", "420"])  # fmt: skip
        assert code == 0, capfd.readouterr().err
        assert main([*args, "ssh", "-n", NAME, "--", "cat", "/etc/os-release"]) == 0
        assert "ID=cernvm-demo" in capfd.readouterr().out
        assert main([*args, "destroy", "--force", NAME]) == 0
    finally:  # the folder also when the guest did not come up: it was left in /tmp then
        proc.terminate()
        proc.wait(timeout=30)  # squid's log is complete once it has exited
        log = run_dir / "access.log"
        logged = log.read_text().splitlines() if log.exists() else []
        shutil.rmtree(run_dir, ignore_errors=True)
    through = [line for line in logged if "/data/" in line]
    # the guest's objects came from the gateway's bucket, through squid
    assert any(f"http://127.0.0.1:{rgw_port}/cvmfs/{fqrn}/data/" in line for line in through), through[:3]


def test_a_first_boot_on_a_seed_fetches_no_object(
    demo: tuple[Path, Server], launch_home: Path, boot_trace: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    """The pre-warmed scratch disk (issue 13): a seed made from one first boot's server log (names
    only; the bytes from the repository), an instance created with ``--seed``: its first boot finds
    every object in the cache on the scratch disk — the server sends the signed manifest and
    whitelist, no object — takes the initrd's later-boot path (UROOT found, grown to the disk) and is
    up (SSH with the pinned host key)."""
    from cernvm_build.bootloader.seed import make_seed, objects_from_trace
    from cernvm_build.demo.repository import PUBLIC_KEY

    image, srv = demo
    args = ["--connect", URI]
    assert main([*args, "images", "add", str(image), "--profile", "demo"]) == 0
    create = [*args, "create", "--profile", "demo", "--memory", "512", "--yes",
              "--cvmfs-server", f"10.0.2.2:{srv.port}", "--timeout", "420"]  # fmt: skip
    if not boot_trace:  # run alone: one first boot of its own, as the library boot above
        with object_requests_served() as fetched:
            assert main([*create, "--name", NAME]) == 0, capfd.readouterr().err
            assert main([*args, "ssh", "-n", NAME, "--", "cat", "/etc/os-release"]) == 0
            assert main([*args, "destroy", "--force", NAME]) == 0
        boot_trace[:] = fetched
    names = objects_from_trace(boot_trace)
    assert names, "the first boot fetched objects"
    ((fqrn, stratum),) = srv.repositories.items()
    seed = make_seed(str(stratum), fqrn, [PUBLIC_KEY], names, launch_home / "seed.qcow2", size_mb=1024)
    assert seed.objects == len(names)

    capfd.readouterr()
    with requests_served() as served:
        code = main([*create, "--name", NAME, "--seed", str(seed.path)])  # --disk: 20000 MB
        assert code == 0, capfd.readouterr().err
        assert main([*args, "ssh", "-n", NAME, "--", "cat", "/etc/os-release"]) == 0
        assert "ID=cernvm-demo" in capfd.readouterr().out
    objects = [line for line in served if "/data/" in line]
    assert not objects, objects[:10]  # every object came from the seed
    assert any(".cvmfspublished" in line for line in served), served  # the boot did ask the server
    console = (launch_home / "run" / NAME / "console.log").read_text(errors="replace")
    assert "first boot: partitioned" not in console and "(UROOT) mounted," in console, console[-3000:]
    assert "grown to the end of /dev/vda" in console, console[-3000:]  # the 1 GB seed, a 20 GB disk
    # the cache the boot read is the seed's, on the instance's scratch disk
    assert main([*args, "ssh", "-n", NAME, "--", f"find /mnt/.rw/cache/{fqrn} -type f | wc -l"]) == 0
    assert int(capfd.readouterr().out.strip()) >= len(names)
    assert main([*args, "destroy", "--force", NAME]) == 0
    assert seed.path.exists()  # the seed outlives its instances
