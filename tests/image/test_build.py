"""Real builds (apt kernel, xorriso, mtools, syslinux, qemu-img) against a repository served on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cernvm_build.context import BuildContext
from cernvm_build.errors import BuildError, ToolError
from cernvm_build.fsutil import sha256_file
from cernvm_build.image.build import build_image

from .conftest import DEMO_KEYS, FQRN, Built, ServedRepo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cernvm_build.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_outputs_names_checksums_and_manifest(built: Built, test_repo: ServedRepo) -> None:
    stem = "ucernvm-demo.2026.11-1.cernvm.x86_64"
    assert _files(built.out) == sorted(
        [f"{stem}.{f}" for f in ("iso", "hdd", "qcow2")]
        + [f"{stem}.{f}.sha256" for f in ("iso", "hdd", "qcow2")]
        + [f"{stem}.manifest.json"]
    )
    for fmt in ("iso", "hdd", "qcow2"):
        img = built.image(fmt)
        assert (built.out / f"{img.name}.sha256").read_text() == f"{sha256_file(img)}  {img.name}\n"
    m = json.loads((built.out / f"{stem}.manifest.json").read_text())
    assert m["repository"]["root_hash"] == built.snapshot_root
    assert m["repository"]["fqrn"] == FQRN and m["repository"]["revision"] >= 2
    assert m["kernel"]["package"].startswith("linux-image-") and len(m["kernel"]["sha256"]) == 64
    assert "cvmfs_repos=demo.cernvm.test" in m["kernel"]["cmdline"]
    assert m["initrd"]["busybox"] and m["initrd"]["python"]["version"].startswith("3.")
    assert {"overlay.ko", "fuse.ko", "virtio_blk.ko", "isofs.ko"} <= set(m["initrd"]["kernel_modules"])
    assert len(m["profile"]["sha256"]) == 64
    assert {o["name"]: o["sha256"] for o in m["outputs"]} == {
        built.image(f).name: sha256_file(built.image(f)) for f in ("iso", "hdd", "qcow2")
    }
    assert m["initrd"]["size"] < 20_000_000, "the initrd must stay small"
    info = subprocess.run(["qemu-img", "info", "--output=json", built.image("qcow2")], capture_output=True)
    assert json.loads(info.stdout)["format"] == "qcow2"
    listing = subprocess.run(
        ["mdir", "-i", f"{built.image('hdd')}@@1048576", "-a", "-/", "-b", "::/"],
        capture_output=True,
        text=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout
    assert "::/cernvm/vmlinuz" in listing and "::/syslinux/ldlinux.sys" in listing


def test_same_inputs_give_byte_identical_images(built: Built) -> None:
    assert _files(built.out) == _files(built.again)
    for name in _files(built.out):
        assert sha256_file(built.out / name) == sha256_file(built.again / name), name


def test_inspect_and_verify(built: Built, tmp_path: Path) -> None:
    crt = str(DEMO_KEYS / f"{FQRN}.crt")
    for fmt in ("iso", "hdd"):
        r = _cli("image", "verify", str(built.image(fmt)), "--cert", crt, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["metadata"]["snapshot"] == built.snapshot_root
    r = _cli("image", "inspect", str(built.image("iso")), "--json")
    doc = json.loads(r.stdout)
    assert doc["signed"] and doc["metadata"]["os-repo"] == FQRN and doc["metadata"]["format"] == "iso"
    bad = tmp_path / "tampered.iso"
    shutil.copyfile(built.image("iso"), bad)
    with open(bad, "r+b") as f:
        f.seek(40000)
        f.write(b"X")
    r = _cli("image", "verify", str(bad))
    assert r.returncode == 6 and "modified after signing" in r.stderr
    r = _cli("image", "verify", str(built.image("qcow2")))
    assert r.returncode == 6 and "no μCernVM signature block" in r.stderr


# -- bad input: one clear error, nothing half-written ---------------------------------------------------
def _assert_nothing_written(out: Path) -> None:
    assert not out.exists() or _files(out) == [], _files(out)


def test_unknown_format_is_one_line_usage(tmp_path: Path) -> None:
    r = _cli("image", "demo", "--format", "iso,ova", "--out", str(tmp_path / "out"))
    assert r.returncode == 7
    assert r.stderr.splitlines()[0] == "error: --format: unknown image format 'ova'"
    _assert_nothing_written(tmp_path / "out")


def test_missing_kernel_package(test_repo: ServedRepo, tmp_path: Path) -> None:
    p = test_repo.profile()
    p = dataclasses.replace(p, kernel=dataclasses.replace(p.kernel, package="linux-image-no-such-flavour"))
    with pytest.raises(BuildError, match="kernel package 'linux-image-no-such-flavour' is not known to apt"):
        build_image(p, tmp_path / "out", formats=["iso"], ctx=BuildContext(epoch=0))
    _assert_nothing_written(tmp_path / "out")


def test_unreachable_repository(test_repo: ServedRepo, tmp_path: Path) -> None:
    p = test_repo.profile()
    p = dataclasses.replace(
        p, cvmfs=dataclasses.replace(p.cvmfs, servers=["http://127.0.0.1:9/cvmfs/@fqrn@"])
    )
    with pytest.raises(BuildError, match=f"repository {FQRN} cannot be read at build time") as e:
        build_image(p, tmp_path / "out", formats=["iso"], ctx=BuildContext(epoch=0))
    assert "\n" not in str(e.value)
    _assert_nothing_written(tmp_path / "out")


def test_missing_tool(test_repo: ServedRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # proc.which also looks in the standard bin folders, so hiding a tool takes more than PATH.
    import cernvm_build.proc as proc

    real = shutil.which
    monkeypatch.setattr(proc.shutil, "which", lambda t, **kw: None if t == "xorriso" else real(t, **kw))
    with pytest.raises(ToolError, match="required tool 'xorriso' is not installed") as e:
        build_image(test_repo.profile(), tmp_path / "out", formats=["hdd", "iso"], ctx=BuildContext(epoch=0))
    assert e.value.hint and "apt-get install xorriso" in e.value.hint
    _assert_nothing_written(tmp_path / "out")


def test_full_disk_leaves_no_partial_outputs(test_repo: ServedRepo, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # A 12 MB file size limit: the initrd fits, the iso does not (as on a nearly full disk).
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (12_000_000, 12_000_000))\n"
        "from cernvm_build.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "image", "demo", "--server", test_repo.url, "--format", "iso",
         "--initrd-level", "3", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode in (4, 7), r.stderr
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    _assert_nothing_written(out)


def test_rerun_after_a_killed_build_cleans_up(test_repo: ServedRepo, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = out / ".build-999999999-abc"  # no such process
    (stale / "tree").mkdir(parents=True)
    (stale / "tree" / "half.iso").write_bytes(b"half")
    p = test_repo.profile()
    p = dataclasses.replace(
        p, cvmfs=dataclasses.replace(p.cvmfs, servers=["http://127.0.0.1:9/cvmfs/@fqrn@"])
    )
    with pytest.raises(BuildError):
        build_image(p, out, formats=["iso"], ctx=BuildContext(epoch=0))
    assert not stale.exists()


def test_a_boot_list_is_carried_in_the_initrd_and_counted(test_repo: ServedRepo, tmp_path: Path) -> None:
    """``--boot-list TRACE``: the trace's object names, one a line in first-seen order, are the
    initrd's /etc/cvmfs/boot.list (which 10-cvmfs.sh hands to the mount); --json counts them."""
    a, b = "a" * 40, "b" * 40 + "C"
    trace = tmp_path / "access.log"
    trace.write_text(
        f'127.0.0.1 "GET /cvmfs/{FQRN}/data/{a[:2]}/{a[2:]} HTTP/1.1" 200 -\n'
        f'127.0.0.1 "GET /cvmfs/{FQRN}/data/{b[:2]}/{b[2:]} HTTP/1.1" 200 -\n'
        f'127.0.0.1 "GET /cvmfs/{FQRN}/data/{a[:2]}/{a[2:]} HTTP/1.1" 200 -\n'
    )
    out = tmp_path / "out"
    r = _cli("image", "build", "demo", "--server", test_repo.url, "--format", "hdd", "--initrd-level", "1",
             "--boot-list", str(trace), "--out", str(out), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    head = f"# {FQRN} revision {doc['repository']['revision']} root {doc['repository']['root_hash']}\n"
    assert doc["boot_list"] == {"names": 2, "bytes": len(head) + 83}
    hdd = next(out.glob("*.hdd"))
    packed = subprocess.run(
        ["mcopy", "-n", "-i", f"{hdd}@@{1 << 20}", "::/cernvm/initrd.img", "-"],
        capture_output=True,
        check=True,
    ).stdout
    payload = subprocess.run(["lz4", "-dc"], input=packed, capture_output=True, check=True).stdout
    listed = subprocess.run(
        ["cpio", "-i", "--quiet", "--to-stdout", "etc/cvmfs/boot.list"], input=payload, capture_output=True
    ).stdout
    assert listed == f"{head}{a}\n{b}\n".encode()  # the header: which repository the names are of
    manifest = json.loads(next(out.glob("*.manifest.json")).read_text())
    assert manifest["initrd"]["boot_list"]["names"] == 2


def test_a_bad_boot_list_trace_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trace that names no object: one line naming it, a hint, nothing built (before any work);
    one over the bound names the line where it went over."""
    from cernvm_build.bootloader import seed
    from cernvm_build.cvmfs import bootlist
    from cernvm_build.errors import UsageError

    empty = tmp_path / "empty.log"
    empty.write_text("no objects here\n")
    r = _cli("image", "build", "demo", "--boot-list", str(empty), "--out", str(tmp_path / "out"))
    assert r.returncode != 0
    assert r.stderr.splitlines()[0] == f"error: {empty}:1: no object names in the trace", r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr
    _assert_nothing_written(tmp_path / "out")
    many = tmp_path / "many.list"
    many.write_text("".join(f"{i:040x}\n" for i in range(6)))
    monkeypatch.setattr(bootlist, "MAX_NAMES", 4)
    with pytest.raises(UsageError, match=f"^{many}:5: more than 4 object names in the boot list$"):
        seed.boot_list([many])
    # across traces the limit counts the earlier ones, checked while the later one is read: it stops
    # at the line that crossed it, before what follows (here a line no trace holds) is read
    first, second = tmp_path / "first.list", tmp_path / "second.list"
    first.write_text("".join(f"{i:040x}\n" for i in range(3)))
    second.write_text("".join(f"{i:040x}\n" for i in range(2, 5)) + "x" * (seed.MAX_TRACE_LINE + 1) + "\n")
    with pytest.raises(UsageError, match=f"^{second}:3: more than 4 object names in the boot list$"):
        seed.boot_list([first, second])


def test_a_trace_that_is_no_file_or_too_big_is_one_line_naming_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device or a FIFO is refused before a byte is read (never a MemoryError or a hang); a line
    or a file over its bound names the line where it went over, found while reading."""
    from cernvm_build.bootloader import seed
    from cernvm_build.errors import UsageError

    r = _cli("image", "build", "demo", "--boot-list", "/dev/zero", "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[0] == "error: /dev/zero: the trace is not a regular file", r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused: list[str] = []

    def read() -> None:
        try:
            seed.read_trace(fifo)
        except UsageError as e:
            refused.append(str(e))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # the test's own bound: with no writer, an open of a FIFO waits for ever
        with open(fifo, "wb"):
            pass
    assert refused == [f"{fifo}: the trace is not a regular file"]
    name = "a" * 40
    long = tmp_path / "long.log"
    long.write_text(f"{name}\n" + "x" * (seed.MAX_TRACE_LINE + 1) + "\n")
    with pytest.raises(UsageError, match=f"^{long}:2: a line over {seed.MAX_TRACE_LINE:,} bytes"):
        seed.read_trace(long)
    big = tmp_path / "big.log"
    big.write_text(f"{name}\n" * 10)
    monkeypatch.setattr(seed, "MAX_TRACE_BYTES", 41 * 3 + 1)
    with pytest.raises(UsageError, match=f"^{big}:4: the trace is over 124 bytes"):
        seed.read_trace(big)
    with pytest.raises(seed.TooManyNames, match=f"^{big}:2$"):
        seed.trace_objects([name, "b" * 40, "c" * 40], str(big), limit=1)


def _claimed_set_is_whole(out: Path) -> bool:
    """Every manifest in ``out`` lists outputs whose bytes are the ones it names (and their .sha256)."""
    for manifest in out.glob("*.manifest.json"):
        for o in json.loads(manifest.read_text())["outputs"]:
            digest = sha256_file(out / o["name"])
            if digest != o["sha256"] or (out / f"{o['name']}.sha256").read_text().split()[0] != digest:
                return False
    return True


def test_a_build_killed_between_two_renames_leaves_no_claimed_mixed_set(
    test_repo: ServedRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lf20a item 7: `image build --out DIR` over an earlier build, killed between two renames of its
    outputs into DIR, left the earlier build's manifest over a mix of both builds' files (each whole).
    Now no manifest claims the mix while it lasts, and the next build into DIR (its stale work folder
    reclaimed first) finishes the dead build's switch: the whole new set, with its manifest."""
    from cernvm_build.image.build import _remove_stale_work
    from tests.support.killed import run_killed

    out = tmp_path / "out"
    build_image(test_repo.profile(), out, formats=["iso"], initrd_level=3, ctx=BuildContext(epoch=0))
    old = {p.name: sha256_file(p) for p in out.iterdir()}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")  # another build time: other bytes
    run_killed(
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "out = Path(sys.argv[1]).resolve()\n"
        "real, moved = Path.replace, []\n"
        "def replace(self, target):\n"
        "    if Path(target).parent.resolve() == out:\n"
        "        moved.append(target)\n"
        "        if len(moved) == 2:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)  # the first output moved, the second not\n"
        "    return real(self, target)\n"
        "Path.replace = replace\n"
        "from cernvm_build.cli.main import main\n"
        "main(['image', 'demo', '--server', sys.argv[2], '--format', 'iso', '--initrd-level', '3',\n"
        "      '--out', str(out)])\n",
        out,
        test_repo.url,
    )
    now = {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()}
    assert {n for n in now if now[n] != old.get(n)}, "the kill came after an output was moved"
    assert _claimed_set_is_whole(out), "the earlier manifest claims a mixed set"
    _remove_stale_work(out)  # what the next build into out does first
    assert _claimed_set_is_whole(out) and not list(out.glob(".build-*"))
    manifest = json.loads(next(out.glob("*.manifest.json")).read_text())
    assert manifest["source_date_epoch"] == 86400, "the dead build's switch was finished"
    assert sorted(p.name for p in out.iterdir()) == sorted(old)


def test_a_build_waits_for_another_build_s_switch_into_the_same_folder(
    test_repo: ServedRepo, tmp_path: Path
) -> None:
    """Two builds into one --out that moved their outputs into place at once interleaved the renames:
    the manifest left claimed a file of the other build (both exit 0). A switch waits for the other's."""
    import fcntl
    import time

    from cernvm_build.report import Recorder

    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / ".switch.lock", os.O_RDWR | os.O_CREAT)  # another build, moving its outputs
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 4242 (image build into elsewhere)\n")
    heard = Recorder()
    done: list[object] = []
    args = {"formats": ["iso"], "initrd_level": 3, "ctx": BuildContext(epoch=0, reporter=heard)}
    worker = threading.Thread(target=lambda: done.append(build_image(test_repo.profile(), out, **args)))
    worker.start()
    try:
        for _ in range(6000):  # (a bound against a hang, not a timing)
            if "waiting for pid 4242 (image build into elsewhere) to finish" in heard.steps():
                break
            if not worker.is_alive():
                break
            time.sleep(0.1)
        assert "waiting for pid 4242 (image build into elsewhere) to finish" in heard.steps()
        assert not list(out.glob("*.manifest.json"))  # nothing moved in while the other one switches
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        worker.join(600)
    assert done and _claimed_set_is_whole(out)
    assert not (out / ".switch.lock").exists() and not list(out.glob(".build-*"))
