"""bench/osboot: a failure on one side of a side-by-side pair is the one reported; the CPU map's parsing."""

from __future__ import annotations

import concurrent.futures
import math
import os
import subprocess
import threading
from pathlib import Path

import pytest

from bench.osboot import CPU_MAP_SCRIPT, _boot, _both, cpu_map, cpu_map_rows, diag_split


def test_the_failing_side_is_reported_not_the_barrier_it_broke() -> None:
    together = threading.Barrier(2)

    def ucernvm() -> str:  # waits for the other side's reboot, which will not come
        together.wait()
        return "ucernvm"

    def plain() -> str:
        together.abort()  # as ``_measure`` does on a failure
        raise RuntimeError("the plain side's first boot failed")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        job_a, job_b = pool.submit(ucernvm), pool.submit(plain)
        with pytest.raises(RuntimeError, match="first boot failed"):
            _both(job_a, job_b)
        assert isinstance(job_a.exception(), threading.BrokenBarrierError)


def test_a_guest_that_panics_ends_the_wait_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The μCernVM boots of a run whose initrd could not mount waited out the SSH timeout each
    (15 min), though the console had said why within seconds. A stand-in qemu writes what the
    init writes on its serial console, then waits as the rescue shell does."""
    fake = tmp_path / "bin" / "qemu-system-x86_64"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in file:*) log="${a#file:}";; esac; done\n'
        'printf "Linux version 6.1\\n[10.35] ucernvm: panic: CernVM-FS mount failed: LookupError\\n"'
        ' > "$log"\n'
        "exec sleep 600\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("CERNVM_ACCEL", "tcg")
    log = tmp_path / "console.log"
    said = r"the guest panicked: CernVM-FS mount failed: LookupError \(console: "
    with pytest.raises(RuntimeError, match=said), _boot([], [], log, tmp_path / "key", timeout=600):
        pass


def test_both_results_when_both_sides_end() -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert _both(pool.submit(lambda: 1), pool.submit(lambda: 2)) == (1, 2)


# what CPU_MAP_SCRIPT printed in a μCernVM guest at a reboot's login (trimmed; bench/osboot.py)
UCERNVM_MAP = """\
stamp UserspaceTimestampMonotonic 13555733
stamp FinishTimestampMonotonic 0
stamp ssh.service 111100000
cg 128970000 80000000 48970000 /
cg 99350000 60000000 39350000 /system.slice
cg 28850000 16000000 12850000 /init.scope
cg 18450000 11000000 7450000 /user.slice
cg 25230000 20000000 5230000 /system.slice/cloud-init-local.service
kthreads 696
kt 416 rcu_preempt
kt 175 kworker
rootproc 178 @ucernvm-cvmfs 945 809 0 0
unit cloud-init.service 62500000
unit systemd-fsck@dev-vdb1.service 830000
init 462 555 6104 2602
"""
PLAIN_MAP = """\
stamp UserspaceTimestampMonotonic 5658347
stamp ssh.service 68173304
cg 87340000 60000000 27340000 /system.slice
cg 11070000 6000000 5070000 /init.scope
kthreads 589
unit cloud-init.service 20250000
"""


def test_the_cpu_map_reads_each_item_as_seconds() -> None:
    got = cpu_map(UCERNVM_MAP)
    assert got["stamp UserspaceTimestampMonotonic"] == pytest.approx(13.555733)
    assert math.isnan(got["stamp FinishTimestampMonotonic"])  # 0: not reached yet
    assert got["cg /system.slice/cloud-init-local.service"] == pytest.approx(25.23)
    assert got["cg /*"] == pytest.approx(99.35 + 28.85 + 18.45)  # top level only, not the root's ticks
    assert got["kthreads"] == pytest.approx(6.96)
    assert got["kt rcu_preempt"] == pytest.approx(4.16)
    assert got["proc @ucernvm-cvmfs"] == pytest.approx(17.54)
    # systemd's figures (µs), also of the units that had stopped
    assert got["unit cloud-init.service"] == pytest.approx(62.5)
    assert got["unit systemd-fsck@dev-vdb1.service"] == pytest.approx(0.83)


def test_the_cpu_map_rows_put_stamps_first_then_the_largest_extra() -> None:
    rows = cpu_map_rows(cpu_map(UCERNVM_MAP), cpu_map(PLAIN_MAP))
    names = [r.split()[0] + " " + r.split()[1] for r in rows[1:]]
    assert names[:3] == [
        "stamp FinishTimestampMonotonic",
        "stamp UserspaceTimestampMonotonic",
        "stamp ssh.service",
    ]
    assert names[3:5] == ["cg /", "cg /*"]  # +128.97 (on one side only), +48.24: the largest extras
    assert names.index("unit cloud-init.service") < names.index("cg /init.scope")  # +42.25 before +17.78
    row = rows[1 + names.index("cg /system.slice/cloud-init-local.service")]
    assert row.split()[-3:] == ["25.23", "0.00", "+25.23"]  # a unit only one side has counts 0 on the other


@pytest.mark.skipif(not list(Path("/sys/fs/cgroup").glob("**/cpu.stat")), reason="no cgroup cpu.stat here")
def test_the_cpu_map_script_runs_and_parses_on_this_kernel() -> None:
    # the guest's script on the host (systemctl and journalctl may be missing or refuse: their lines are
    # empty); the cgroup, kernel-thread and process parts are the kernel's, as in the guest
    out = subprocess.run(["bash", "-c", CPU_MAP_SCRIPT], capture_output=True, text=True, timeout=120).stdout
    got = cpu_map(out)
    assert any(k.startswith("cg /") and k != "cg /*" and v > 0 for k, v in got.items())
    assert got["kthreads"] > 0 and any(k.startswith("kt ") for k in got)


def test_the_diag_split_gives_guest_idle_daemon_cpu_and_cpu_per_object() -> None:
    # an un-seeded first boot's DIAG_SCRIPT output (ob17's run, load ~9), as the guest prints it
    diag = """uptime 301.92 0.17 ticks/s 100
cpu  10798 0 8055 17 371 0 458 0 0 0
count intr 912345
count ctxt 1234567
irq virtio2-input.0 45678
daemon 176 utime stime 4276 3112
switches daemon 98765 4321 19
fuse @process 1 324.793 77.800
fuse read 1648 152.454 38.358
fuse ~inflate+write 177 63.765 11.304
fuse ~fetch 1279 59.975 16.625
fuse ~write 1102 15.650 6.893
fuse ~none 0 0.000 0.000
plain 1655 102.892 MB
"""
    line = diag_split(diag)
    # busy = user + nice + system + irq + softirq; idle and iowait apart (ticks / ticks per second)
    assert "guest busy 193.1 s, idle 0.2 s, iowait 3.7 s" in line
    assert "daemon 73.9 CPU-s" in line
    # each phase's CPU per object, in the order the daemon wrote them; a phase of no object is left out
    assert "~inflate+write 63.9 (177), ~fetch 13.0 (1279), ~write 6.3 (1102);" in line
    # the guest's switches and interrupts, the daemon's threads' switches
    assert line.endswith("; intr 912345; ctxt 1234567; daemon switches 98765 voluntary 4321 not (19 threads)")
    assert diag_split("no output").endswith("daemon 0.0 CPU-s; per object (guest-CPU-ms): -")


def test_the_boot_list_is_what_the_first_boot_fetched_until_ssh_answered() -> None:
    from bench.osboot import Figures, boot_list_names

    def get(name: str) -> str:
        return f'127.0.0.1 - - "GET /cvmfs/demo.cern.ch/data/{name[:2]}/{name[2:]} HTTP/1.1" 200 -'

    a, b, c = ("a" * 40 + "C", "b" * 40, "c" * 40 + "P")
    # the login's and ``is-system-running --wait``'s reads come after SSH answered: the seed's, not the list's
    fig = Figures(trace=[get(a), get(b), get(a), get(c)], to_ssh=3)
    assert boot_list_names(fig) == [a, b]
