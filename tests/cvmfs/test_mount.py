"""The FUSE mount, exactly as the initrd runs it: a daemon over the fixture served by HTTP."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cernvm_build.bootloader.runtime import build_runtime
from cernvm_build.cvmfs.serve import Server

from .conftest import FQRN, ROOT_REV1, ROOT_REV2, Fixture, unmount

pytestmark = pytest.mark.integration


def _mount(
    server: Server, fx: Fixture, mnt: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", server.repo_url()]
    cmd += ["--public-key", str(fx.pub), *extra, str(mnt)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_mount_find_and_read_everything(fx: Fixture, server: Server, mnt: Path, tmp_path: Path) -> None:
    snap = tmp_path / "snapshot"
    r = _mount(server, fx, mnt, "--cache", str(tmp_path / "cache"), "--snapshot-file", str(snap))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"mounted {FQRN} revision 2 root {ROOT_REV2} tag -"
    assert snap.read_text() == f"{ROOT_REV2}\n\n"
    listing = fx.listing(2)
    found = subprocess.run(["find", str(mnt)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert {p[len(str(mnt)) :] for p in found} - {""} == set(listing)
    for path, want in listing.items():
        p = mnt / path.lstrip("/")
        st = p.lstat()
        assert oct(stat.S_IMODE(st.st_mode)) == want["mode"], path
        if want["type"] == "file":
            data = p.read_bytes()
            assert len(data) == st.st_size == want["size"], path
            if path != "/etc/redhat-release":  # see test_reader: the real server kept rev 1 content
                assert hashlib.sha1(data).hexdigest() == want["sha1"], path
        elif want["type"] == "symlink":
            assert os.readlink(p) == want["target"]
        else:
            assert stat.S_ISDIR(st.st_mode)
    assert os.getxattr(mnt, "user.fqrn") == FQRN.encode()
    assert os.getxattr(mnt / "etc", "user.root_hash") == ROOT_REV2.encode()
    assert os.getxattr(mnt, "user.revision") == b"2"
    assert "user.hash" in os.listxattr(mnt / "etc/new-in-rev2")
    with open(mnt / "opt/sw/big-data.txt", "rb") as f:
        f.seek(16_777_216 - 10)
        assert len(f.read(20)) == 20
    with pytest.raises(OSError):
        (mnt / "etc/new-file").write_text("x")
    a, b = (mnt / "usr/bin/tool2").stat(), (mnt / "usr/bin/tool2").stat()
    assert a.st_ino == b.st_ino  # stable inodes


def test_snapshot_file_pins_the_next_mount(fx: Fixture, server: Server, mnt: Path, tmp_path: Path) -> None:
    snap = tmp_path / "snapshot"
    snap.write_text(f"{ROOT_REV1}\nslc4-frozen\n")
    ino = snap.stat().st_ino
    r = _mount(server, fx, mnt, "--snapshot-file", str(snap))
    assert r.returncode == 0, r.stderr
    assert f"revision 1 root {ROOT_REV1} tag slc4-frozen" in r.stdout
    assert snap.stat().st_ino == ino  # the pin it mounted is not written again
    assert (mnt / "usr/bin/tool5").exists() and not (mnt / "etc/new-in-rev2").exists()
    unmount(mnt)
    r = _mount(server, fx, mnt, "--tag", "slc4-update", "--snapshot-file", str(snap))  # explicit wins
    assert r.returncode == 0 and "revision 2" in r.stdout
    assert snap.read_text() == f"{ROOT_REV2}\nslc4-update\n"


@pytest.mark.timeout(120)
def test_a_pin_file_that_is_no_pin_is_ignored_in_one_line(
    fx: Fixture, server: Server, mnt: Path, tmp_path: Path
) -> None:
    """The scratch disk's pin file is the OS's to write: a FIFO there hung the daemon (so the boot),
    a link to /dev/zero ate its memory, non-UTF-8 bytes ended it with a traceback. Each is one line
    saying what the mount does instead (the newest revision, pinned in a regular file)."""
    snap = tmp_path / "snapshot"
    cases = {
        "fifo": (lambda: os.mkfifo(snap), "not a regular file"),
        "zero": (lambda: snap.symlink_to("/dev/zero"), "a symbolic link"),
        "bytes": (lambda: snap.write_bytes(b"\xff\xfe\x00\n"), "its first line is not a root hash"),
        "big": (lambda: snap.write_bytes(b"a" * 100_000), "more than 512 bytes"),
    }
    for name, (make, why) in cases.items():
        make()
        r = _mount(server, fx, mnt, "--snapshot-file", str(snap))
        assert r.returncode == 0, (name, r.stderr)
        assert f"revision 2 root {ROOT_REV2}" in r.stdout, name
        want = f"pin file {snap}: {why}"
        assert (
            [ln for ln in r.stderr.splitlines() if ln.startswith("pin file")]
            == [ln for ln in r.stderr.splitlines() if ln.startswith(want)]
            != []
        ), (name, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 2, r.stderr
        assert snap.read_text() == f"{ROOT_REV2}\n\n" and not snap.is_symlink(), name
        unmount(mnt)
        snap.unlink()


def test_mount_failure_is_one_error_line(fx: Fixture, server: Server, mnt: Path) -> None:
    r = _mount(server, fx, mnt, "--tag", "nope")
    assert r.returncode == 5 and r.stdout == ""
    assert r.stderr.startswith(f"error: {FQRN}: no tag named 'nope'") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "hint: known tags" in r.stderr
    assert not os.path.ismount(mnt)


def test_the_initrd_runtime_serves_every_read(fx: Fixture, server: Server, mnt: Path, tmp_path: Path) -> None:
    """The daemon as the initrd runs it: from the assembled runtime alone (its own interpreter, zip
    and libraries). A module imported only on first use (the prefetch pool's
    ``concurrent.futures.thread``) once was missing from it: every open in the guest failed with
    EINVAL and switch_root could not exec /sbin/init, while the host's full stdlib hid it."""
    rt = build_runtime(tmp_path / "rt")
    lib = rt.root / "lib"
    env = {"PYTHONHOME": str(rt.root), "LD_LIBRARY_PATH": str(lib), "PATH": os.environ["PATH"]}
    cmd = [str(lib / "ld-linux-x86-64.so.2"), str(rt.root / "bin" / "python3"), "-S", "-m"]
    cmd += ["cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", server.repo_url()]
    cmd += ["--public-key", str(fx.pub), "--cache", str(tmp_path / "cache"), str(mnt)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for path, want in fx.listing(2).items():
        if want["type"] == "file":
            data = (mnt / path.lstrip("/")).read_bytes()
            assert len(data) == want["size"], path
    assert subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root")
def test_cache_does_not_depend_on_proc(fx: Fixture, server: Server, tmp_path: Path) -> None:
    """The μCernVM initrd unmounts /proc before switch_root while the daemon keeps serving the OS:
    objects fetched afterwards must still land in the cache directory (they once went into
    /proc/self/fd/N, i.e. an empty directory of the initramfs, and the cache filled RAM)."""
    cache, mnt, out = tmp_path / "cache", tmp_path / "mnt", tmp_path / "read"
    mnt.mkdir()
    mount = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", server.repo_url()]
    mount += ["--public-key", str(fx.pub), "--cache", str(cache), str(mnt)]
    script = (
        '"$@" && mount -t tmpfs none /proc && cat "$MNT/etc/redhat-release" >"$OUT"; rc=$?; '
        'umount /proc; umount "$MNT"; exit $rc'
    )
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *mount],
        env={**os.environ, "MNT": str(mnt), "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data.startswith(b"Scientific Linux")
    # the fan-out directories' files (the daemon's marker files beside them come and go as it stops)
    cached = list((cache / FQRN / "plain").glob("??/*"))
    # the file's inflated copy (then the 8-byte trailer, plaincache.py) is in the cache
    assert any(p.read_bytes()[:-8] == data for p in cached)


def test_https_without_ssl_is_one_error_line(fx: Fixture, mnt: Path) -> None:
    """The initrd's runtime has no ssl: an https server is refused in one line, not a traceback."""
    code = (
        "import sys; sys.modules['ssl'] = None; from cernvm_build.cvmfs.mount import main; "
        "raise SystemExit(main(sys.argv[1:]))"
    )
    cmd = [sys.executable, "-c", code, "--fqrn", FQRN, "--server", f"https://127.0.0.1:9/cvmfs/{FQRN}"]
    cmd += ["--public-key", str(fx.pub), str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"error: https://127.0.0.1:9/cvmfs/{FQRN}: https is not available (this Python has no ssl module) "
        "(hint: use an http:// server: objects are verified against the signed manifest anyway)"
    )


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_no_timeout_is_one_error_line(fx: Fixture, mnt: Path, value: str) -> None:
    """The mount daemon's ``--timeout`` (the initrd's, from user data) is checked before any fetch:
    0, negative, nan or inf would be no deadline at all (or a traceback) deep in the socket layer."""
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", str(fx.root)]
    cmd += ["--public-key", str(fx.pub), "--timeout", value, str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert f"--timeout {float(value)}: expected seconds, more than 0 and at most 86400" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("value", ["-1", "101"])
def test_retries_out_of_range_is_one_error_line(fx: Fixture, mnt: Path, value: str) -> None:
    """The mount daemon's ``--retries`` (the initrd passes it from user data) as the CLI's: -1 was
    taken as 0, a huge count waited on a server that is down for ever."""
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server", str(fx.root)]
    cmd += ["--public-key", str(fx.pub), "--retries", value, str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert f"--retries {value}: expected retries from 0 to 100" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_mount_of_a_local_directory(fx: Fixture, mnt: Path) -> None:
    """``cernvm-build cvmfs mount DIR MOUNTPOINT --tag T``: keys found beside the repository."""
    cmd = [sys.executable, "-m", "cernvm_build.cli.main", "cvmfs", "mount", str(fx.root), str(mnt)]
    r = subprocess.run([*cmd, "--tag", "slc4-frozen"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"mounted {FQRN} revision 1 root {ROOT_REV1} tag slc4-frozen"
    assert (mnt / "usr/bin/tool5").is_file()


def test_cli_mount_json_reports_the_mount_and_its_daemon(fx: Fixture, mnt: Path, tmp_path: Path) -> None:
    """lf32a: `cvmfs mount` had no --json: a script learned the revision by parsing the line and the
    daemon's pid not at all. Its document names what `cvmfs info` names alike, where, by which process
    (the daemon serving it), with which cache; an error is --json's one document, exit code kept."""
    import json

    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "cernvm_build.cli.main", "cvmfs", "mount", str(fx.root), str(mnt)]
    r = subprocess.run([*cmd, "--tag", "slc4-frozen", "--cache", str(cache), "--json"], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == {
        "fqrn": FQRN,
        "revision": 1,
        "root_hash": ROOT_REV1,
        "tag": "slc4-frozen",
        "mountpoint": str(mnt),
        "pid": doc["pid"],
        "cache": str(cache),
    }, doc
    assert os.readlink(f"/proc/{doc['pid']}/cwd") and (mnt / "usr/bin/tool5").is_file()  # it serves
    unmount(mnt)
    r = subprocess.run([*cmd, "--root-hash", "0" * 40, "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 5 and "Traceback" not in r.stderr, r.stderr
    err = json.loads(r.stdout)
    assert err["exit_code"] == 5 and "0000000000" in err["error"], err
    assert not os.path.ismount(mnt)


def test_a_mount_without_a_cache_leaves_no_scratch_after_unmount(
    fx: Fixture, server: Server, mnt: Path
) -> None:
    tmp = mnt.parent / "tmp"
    tmp.mkdir()
    assert _mount(server, fx, mnt, env={**os.environ, "TMPDIR": str(tmp)}).returncode == 0
    assert (mnt / "etc/redhat-release").read_bytes()  # catalogs opened: spilled into the scratch
    assert list(tmp.iterdir()), "the daemon keeps its catalogs in a scratch folder under TMPDIR"
    unmount(mnt)
    deadline = time.monotonic() + 30
    while list(tmp.iterdir()) and time.monotonic() < deadline:  # the daemon ends after the unmount
        time.sleep(0.1)
    assert not list(tmp.iterdir())


def test_statfs_reports_the_revision_size(fx: Fixture, server: Server, mnt: Path) -> None:
    assert _mount(server, fx, mnt).returncode == 0
    st = os.statvfs(mnt)
    assert st.f_blocks * st.f_frsize >= 37_200_000 and st.f_bfree == 0
    assert st.f_files >= 80


def test_a_pinned_restart_imports_nothing_while_it_opens_the_repository(
    fx: Fixture, server: Server, mnt: Path, tmp_path: Path
) -> None:
    """A reboot's start (pinned, warm cache, the initrd's options) opens the repository on the boot's
    critical path: what it needs is imported before, while the init still waits. Parsing the
    whitelist's dates with strptime imported _strptime and calendar, and connecting by a str host name
    imported encodings.idna, stringprep and unicodedata: 40 % of the open's instructions."""
    snap, cache = tmp_path / "snapshot", tmp_path / "cache"
    first = _mount(
        server, fx, mnt, "--cache", str(cache), "--snapshot-file", str(snap), "--tag", "slc4-frozen"
    )
    assert first.returncode == 0, first.stderr
    unmount(mnt)
    code = (
        "import sys; from cernvm_build.cvmfs import mount\n"
        "args = mount.parse_args(sys.argv[1:]); before = set(sys.modules)\n"
        "repo = mount._open(args); print(*sorted(set(sys.modules) - before))\n"
        "print(repo.root_hash, repo.tag)\n"
    )
    args = ["--fqrn", FQRN, "--server", server.repo_url(), "--public-key", str(fx.pub), "--cache", str(cache)]
    args += ["--snapshot-file", str(snap), "--no-magic-xattrs", "--prefetch-in-order", str(mnt)]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == f"\n{ROOT_REV1} slc4-frozen\n", r.stdout + r.stderr
