"""The context ISO's scratch: a launch killed while it is made leaves nothing for ever (pr19e)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.launch.context import build_iso


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")
def test_a_killed_context_build_s_scratch_is_reclaimed_by_the_next(tmp_path: Path) -> None:
    """pr19e finding 7: SIGKILLed while xorriso ran, ``.context-<rnd>/`` (the user-data, and the
    guest's host keys) stayed in the instance folder for ever: no pid in its name."""
    dest = tmp_path / "context.iso"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys\n"
            "from pathlib import Path\n"
            "from cernvm_build.image import disks\n"
            "from cernvm_build.launch import context\n"
            "disks.run = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
            "context.build_iso(Path(sys.argv[1]), b'#cloud-config\\n', name='a', instance_id='i')\n",
            str(dest),
        ],
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (scratch,) = tmp_path.iterdir()
    assert (scratch / "root" / "user-data").read_bytes() == b"#cloud-config\n"
    build_iso(dest, b"#cloud-config\n", name="a", instance_id="i")
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")
def test_every_date_of_the_context_iso_is_the_epoch(tmp_path: Path) -> None:
    # the root folder kept the time it was made: its directory record (and so the bytes) said when
    dest = tmp_path / "context.iso"
    build_iso(dest, b"#cloud-config\n", name="a", instance_id="i", epoch=86400)
    pvd = dest.read_bytes()[16 * 2048 : 17 * 2048]
    root_record_date = pvd[156 + 18 : 156 + 25]  # years since 1900, month, day, h, m, s, offset
    assert tuple(root_record_date) == (70, 1, 2, 0, 0, 0, 0)


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")
def test_every_file_time_of_the_context_iso_is_the_epoch_ctime_too(tmp_path: Path) -> None:
    # utime sets no ctime: each Rock Ridge TF entry (modify, access, attributes) carried the time of
    # the build in its third stamp, so two builds of the same inputs had other bytes
    dest = tmp_path / "context.iso"
    build_iso(dest, b"#cloud-config\n", name="a", instance_id="i", epoch=86400)
    data = dest.read_bytes()
    stamps = [data[i + 5 : i + 26] for i in range(len(data)) if data.startswith(b"TF\x1a\x01", i)]
    assert stamps and all(s == bytes((70, 1, 2, 0, 0, 0, 0)) * 3 for s in stamps), stamps[:3]


@pytest.mark.skipif(
    shutil.which("xorriso") is None or shutil.which("unshare") is None, reason="needs xorriso"
)
def test_a_full_disk_under_the_context_iso_names_it(tmp_path: Path) -> None:
    """pr28a finding 5: xorriso checks the space first ("Image size 192s exceeds free space on media
    10s"): `cernvm-launch create` on a full launch home was a tool failure (exit 4) whose hint was the
    command line; now the ENOSPC of the context ISO (the CLI's line: free some space)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = (
        "import sys; from pathlib import Path; from cernvm_build.launch import context\n"
        "try:\n"
        f"    context.build_iso(Path({str(mnt / 'context.iso')!r}), b'#c\\n', name='a', instance_id='i')\n"
        "except OSError as e:\n"
        "    print(e.errno, e.filename)\n"
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o size=64k none {mnt} || exit 99; {sys.executable} -P -c \"$0\"; ls -A {mnt}",
         code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
    )  # fmt: skip
    if done.returncode == 99:
        pytest.skip(f"no tmpfs in a mount namespace here: {done.stderr.strip()}")
    assert done.stdout == f"28 {mnt / 'context.iso'}\n", done.stderr  # and nothing left in the folder
