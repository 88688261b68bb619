"""Unfinished multipart uploads: a sync killed in the middle of one leaves it on the server (its parts
billed for ever); the next sync aborts it, and no upload it cannot tell dead (another publisher's).
On moto and Ceph RGW."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.mirror.s3sync import sync_tree
from cernvm_build.paths import cache_dir
from tests.support.killed import run_killed
from tests.support.tmpfsns import mount_tmpfs

from .conftest import Target

pytestmark = pytest.mark.integration

#: a sync of one folder whose file goes up in 64 KiB parts, killed once its first part is up
KILLED_IN_MULTIPART = """\
import os, signal, sys
from pathlib import Path
from cernvm_build.mirror import s3write
from cernvm_build.mirror.s3sync import sync_tree
s3write.MULTIPART_THRESHOLD = 1
s3write.PART_SIZE = 64 << 10
def killed(self, n):
    os.kill(os.getpid(), signal.SIGKILL)
s3write.Writer._advance = killed
sync_tree(Path(sys.argv[1]), sys.argv[2], endpoint_url=sys.argv[3], conditional=False)
"""


def uploads(client: Any, bucket: str) -> list[str]:
    return sorted(u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def records() -> list[str]:
    folder = cache_dir("mirror") / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_killed_syncs_upload_is_aborted_by_the_next(tmp_path: Path, target: Target) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.rpm").write_bytes(bytes(range(256)) * 1024)  # 256 KiB: 4 parts
    run_killed(KILLED_IN_MULTIPART, src, target.url("r"), target.endpoint)
    assert uploads(target.client, target.bucket) == ["r/big.rpm"]
    assert [n for n in records() if n.endswith(".upload")], records()
    # Another publisher's upload running now: not this machine's to abort.
    target.client.create_multipart_upload(Bucket=target.bucket, Key="r/other.rpm")

    # The age sweep off: moto says every upload started in 2010; this is the log's work alone.
    rep = sync_tree(src, target.url("r"), client=target.client, abort_uploads_older_than=None)

    assert rep.aborted_uploads == ["r/big.rpm"]
    assert uploads(target.client, target.bucket) == ["r/other.rpm"]
    assert records() == []
    assert target.objects().keys() >= {"r/big.rpm"}


def test_old_uploads_under_the_prefix_are_swept(tmp_path: Path, target: Target) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    for key in ("r/lost.rpm", "elsewhere/lost.rpm"):
        target.client.create_multipart_upload(Bucket=target.bucket, Key=key)

    if target.name == "rgw":  # moto says every upload started on 2010-11-10: all are old there
        kept = sync_tree(src, target.url("r"), client=target.client)  # default: older than 7 days only
        assert kept.aborted_uploads == []
        assert uploads(target.client, target.bucket) == ["elsewhere/lost.rpm", "r/lost.rpm"]

    (src / "b.txt").write_bytes(b"b")
    swept = sync_tree(src, target.url("r"), client=target.client, abort_uploads_older_than=0)
    assert swept.aborted_uploads == ["r/lost.rpm"]
    assert uploads(target.client, target.bucket) == ["elsewhere/lost.rpm"]


@pytest.mark.parametrize("age", ["5m", "0", "soon"])
def test_a_sweep_age_that_could_abort_running_uploads_is_one_usage_line(
    age: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cernvm_build.cli.main import main

    for command in (["sync", str(tmp_path)], ["yum", str(tmp_path)]):
        with pytest.raises(SystemExit) as e:
            main(["mirror", *command, "s3://b/p", "--abort-uploads-older-than", age])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert e.value.code == 2 and "Traceback" not in err, err
        assert len(errors) == 1 and "--abort-uploads-older-than" in errors[0], err


def test_an_abort_the_server_refuses_is_a_note_and_tried_again(
    tmp_path: Path, s3: Any, bucket: str, s3server: Any
) -> None:
    """Credentials that may upload but not abort must not stop every later sync: the refusal is a
    note, the record stays, and a later sync that may abort does."""
    from cernvm_build.mirror.locals3 import Fault

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.rpm").write_bytes(bytes(range(256)) * 1024)
    run_killed(KILLED_IN_MULTIPART, src, f"s3://{bucket}/r", s3server.endpoint)
    s3server.faults.append(Fault("DELETE", 0, 403, key_part="big.rpm"))
    rep = sync_tree(src, f"s3://{bucket}/r", client=s3, abort_uploads_older_than=None)
    assert rep.aborted_uploads == [] and uploads(s3, bucket) == ["r/big.rpm"]
    assert any("unfinished multipart uploads not aborted" in n for n in rep.notes), rep.notes
    s3server.faults.clear()
    (src / "b.txt").write_bytes(b"b")
    again = sync_tree(src, f"s3://{bucket}/r", client=s3, abort_uploads_older_than=None)
    assert again.aborted_uploads == ["r/big.rpm"] and uploads(s3, bucket) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")
@pytest.mark.parametrize("case", ["full", "read-only", "inodes"])
def test_an_upload_log_that_cannot_be_written_is_one_line_and_leaves_no_upload(
    tmp_path: Path,
    target: Target,
    small_fs: Path,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The upload was started before its record was written: on a full, read-only or inode-less cache
    # it stayed on the server, recorded nowhere (pr31a finding 3), and a full disk named no file.
    import subprocess

    from cernvm_build.cli.main import main
    from cernvm_build.mirror import s3write

    monkeypatch.setattr(s3write, "MULTIPART_THRESHOLD", 1)  # a 256 KiB file in 64 KiB parts
    monkeypatch.setattr(s3write, "PART_SIZE", 64 << 10)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.rpm").write_bytes(bytes(range(256)) * 1024)
    size = "size=64k" if case == "full" else "size=4m,nr_inodes=3"
    mount_tmpfs(small_fs, size)
    log = small_fs / "mirror" / "uploads"
    log.mkdir(parents=True)  # (the inodes: the mount's root, mirror/ and this folder)
    if case == "full":
        with open(small_fs / "fill", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
    elif case == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(small_fs))

    rc = main(["mirror", "sync", str(src), target.url("r"), "--endpoint-url", target.endpoint])

    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    # (read-only: the CLI's line for the cache root $CERNVM_CACHE_DIR names, which is the answer)
    assert lines[0].startswith(f"error: {small_fs if case == 'read-only' else log}"), err
    assert uploads(target.client, target.bucket) == []
    assert "r/big.rpm" not in target.objects()


def test_an_upload_neither_recorded_nor_aborted_is_said(
    tmp_path: Path, s3: Any, bucket: str, s3server: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The upload log cannot be written and the server refuses the abort: the upload stays billed
    and recorded nowhere. The line said only why the record failed, nothing of the upload left."""
    from cernvm_build.cli.main import main
    from cernvm_build.mirror import s3write
    from cernvm_build.mirror.locals3 import Fault

    monkeypatch.setattr(s3write, "MULTIPART_THRESHOLD", 1)
    monkeypatch.setattr(s3write, "PART_SIZE", 64 << 10)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.rpm").write_bytes(bytes(range(256)) * 1024)
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / "mirror").mkdir(parents=True)
    (tmp_path / "cache" / "mirror" / "uploads").write_bytes(b"")  # a file: no record can go there
    s3server.faults.append(Fault("DELETE", 0, 403, key_part="big.rpm"))

    rc = main(["mirror", "sync", str(src), f"s3://{bucket}/r", "--endpoint-url", s3server.endpoint])

    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert str(tmp_path / "cache" / "mirror" / "uploads") in lines[0], err  # the first error stays
    assert uploads(s3, bucket) == ["r/big.rpm"]
    assert "r/big.rpm" in err and "--abort-uploads-older-than" in err, err  # and the upload left is said
