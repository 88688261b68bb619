"""``bench/fuse_daemon.py`` leaves nothing behind and reads no stale counts: a Ctrl-C or a timeout
while the mount starts leaves a daemon that goes on to mount (it called setsid, the terminal's SIGINT
does not reach it), which the bench must unmount and end itself; a failed mount says why."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

import bench.fuse_daemon as fd

ROOT = Path(__file__).resolve().parents[2]


def _tree(tmp: Path) -> str:
    src = tmp / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(3000))
    (src / "sub" / "x").write_text("x\n")
    return str(src)


def _daemons_under(path: Path) -> list[str]:
    """Processes whose command line names a folder under ``path`` (the mount's daemons)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmd and b"cernvm_build.cvmfs.mount" in cmd:
                out.append(pid)
    return out


def _sweep(path: Path) -> tuple[list[str], list[str]]:
    """Ends the daemons and mounts left under ``path`` (not to the next test); returns them."""
    left = _daemons_under(path)
    for pid in left:
        os.kill(int(pid), 9)
    time.sleep(0.2 if left else 0)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    mounts = [m for m in mounts if m.startswith(str(path))]
    for m in mounts:
        subprocess.run(["fusermount3", "-uz", m], check=False)
    return left, mounts


def test_a_daemon_left_by_an_interrupted_start_is_ended(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # a stand-in with the daemon's command line that never mounts and never ends
    fake = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "cernvm_build.cvmfs.mount", str(mnt)]
    )
    try:
        for _ in range(500):  # until it has exec'd (before, its command line is pytest's)
            if list(fd._pids(mnt)):
                break
            time.sleep(0.01)
        assert list(fd._pids(mnt)) == [str(fake.pid)]
        assert fd._end(mnt, wait=1.0) is False  # it did not end by itself: its counts are not there
        assert fake.wait(timeout=10) == -9
        assert list(fd._pids(mnt)) == []
    finally:
        fake.kill()
        fake.wait()


def test_ctrl_c_while_the_mount_starts_leaves_no_mount_daemon_or_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real_run = subprocess.run

    def interrupted(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if "cernvm_build.cvmfs.mount" not in cmd:
            return real_run(cmd, **kw)
        # what subprocess.run does on a Ctrl-C (or its timeout): kill the mount command and raise,
        # here once the daemon has forked off it
        p = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=kw["env"], cwd=kw["cwd"]
        )
        mnt = Path(cmd[-1])
        for _ in range(600):
            if len(list(fd._pids(mnt))) >= 2 or p.poll() is not None:
                break
            time.sleep(0.01)
        p.kill()
        p.wait()
        raise KeyboardInterrupt

    monkeypatch.setattr(fd.subprocess, "run", interrupted)  # the module: undone before the sweep
    try:
        with pytest.raises(KeyboardInterrupt):  # not an OSError from removing a folder still mounted
            fd.run(rounds=0, sources=[_tree(tmp_path)])
        time.sleep(1.0)  # a daemon that was left would have mounted by now
    finally:
        monkeypatch.undo()
        left, mounts = _sweep(tmp_path)
    assert not left and not mounts
    assert not list(tmp_path.glob("fuse-daemon-*"))


def test_a_round_reads_each_walks_own_counts_or_says_it_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stratum, pub = fd._publish(tmp_path, [_tree(tmp_path)])
    with fd._server_process(stratum) as url:
        got = fd._round(str(ROOT), url, pub, tmp_path)
        # the tree's 4 files are read in both walks, the counts are each walk's own
        assert got["cold read n"] >= 4 and got["warm read n"] >= 4
        assert got["cold entries"] == got["warm entries"] >= 6
        assert not _daemons_under(tmp_path) and not fd._mounted(tmp_path / "mnt")

        real_end = fd._end

        def crashed(mnt: Path, wait: float = 10.0) -> bool:
            for pid in fd._pids(mnt):  # the daemon dies before it can write its counts
                os.kill(int(pid), 9)
            return real_end(mnt, wait)

        monkeypatch.setattr(fd, "_end", crashed)
        # the first round's files are still there: they must not be read as this round's
        with pytest.raises(RuntimeError, match="without writing its counts"):
            fd._round(str(ROOT), url, pub, tmp_path)
    assert not _daemons_under(tmp_path) and not fd._mounted(tmp_path / "mnt")


def test_a_failed_mount_says_why(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"failed: error: .*nokey\.pub"):
        fd._round(str(ROOT), "http://127.0.0.1:9", tmp_path / "nokey.pub", tmp_path)
    assert not _daemons_under(tmp_path)


def test_a_failed_mount_says_why_when_fusermount3_fails_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # seen as mounted, fusermount3 not found: the cleanup's error must not replace the mount's
    monkeypatch.setattr(fd, "_mounted", lambda mnt: True)
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    with pytest.raises(RuntimeError, match=r"failed: error: .*nokey\.pub"):
        fd._round(str(ROOT), "http://127.0.0.1:9", tmp_path / "nokey.pub", tmp_path)
    assert not _daemons_under(tmp_path)


def test_a_read_ahead_not_set_is_said() -> None:
    # /proc's device has no read-ahead knob: the write fails as it does for a user who may not write /sys
    assert "read-ahead not set to 1 MiB" in str(fd._read_ahead(Path("/proc")))
