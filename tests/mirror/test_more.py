"""HTTP apt sources, the generic `mirror sync` command, multipart uploads, uploads signed with the
hash the source was verified with."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cli.main import main
from cernvm_build.mirror import s3write
from cernvm_build.mirror.check import SourceBroken
from cernvm_build.mirror.locals3 import LocalS3
from cernvm_build.mirror.publish import mirror, verify_published
from cernvm_build.mirror.s3sync import sync_tree
from tests.mirror.conftest import Target

from .repos import make_apt_repo, make_deb

pytestmark = pytest.mark.integration


def test_apt_from_http_needs_and_uses_suites(
    tmp_path: Path, signing_key: tuple[Path, Path], s3: Any, bucket: str, http_dir: Any
) -> None:
    secret, public = signing_key
    src = tmp_path / "apt"
    deb = make_deb(tmp_path / "debs" / "cvm-http_2.0_all.deb", "cvm-http", "2.0")
    make_apt_repo(src, "bookworm-prod", [deb], secret_key=secret)
    url = http_dir(src)
    with pytest.raises(SourceBroken, match="--suite"):
        mirror("apt", url, f"s3://{bucket}/apt", gpg_key=public, client=s3)
    rep = mirror("apt", url, f"s3://{bucket}/apt", gpg_key=public, suites=["bookworm-prod"], client=s3)
    assert rep.checked.packages == 1
    assert verify_published("apt", f"s3://{bucket}/apt", gpg_key=public, client=s3).problems == []
    # Again from HTTP: the staged copies are reused, nothing is uploaded.
    again = mirror("apt", url, f"s3://{bucket}/apt", gpg_key=public, suites=["bookworm-prod"], client=s3)
    assert again.sync is not None and again.sync.uploaded == []


def test_cli_sync_publishes_a_site_tree(
    tmp_path: Path, s3server: LocalS3, s3: Any, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "public"
    (site / "news").mkdir(parents=True)
    (site / "index.html").write_text("<h1>home</h1>")
    (site / "news" / "index.html").write_text("<h1>news</h1>")
    (site / "style.css").write_text("h1{}")
    argv = ["mirror", "sync", str(site), f"s3://{bucket}/www", "--last", "index.html",
            "--endpoint-url", s3server.endpoint, "--json"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["uploaded"][-2:] in (["index.html", "news/index.html"], ["news/index.html", "index.html"])
    head = s3.head_object(Bucket=bucket, Key="www/index.html")
    assert head["ContentType"] == "text/html; charset=utf-8"
    (site / "style.css").unlink()
    assert main([*argv[:-1], "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete 1" in out and "style.css" in out


def test_multipart_uploads_carry_the_hash(
    tmp_path: Path, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On moto and on Ceph RGW (whose CompleteMultipartUpload answers an empty ETag)."""
    s3, bucket = target.client, target.bucket
    monkeypatch.setattr(s3write, "MULTIPART_THRESHOLD", 1 << 20)
    monkeypatch.setattr(s3write, "PART_SIZE", 5 << 20)
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.rpm"
    big.write_bytes(b"\x01" * (6 << 20))
    rep = sync_tree(src, f"s3://{bucket}", client=s3)
    assert rep.uploaded == ["big.rpm"]
    head = s3.head_object(Bucket=bucket, Key="big.rpm")
    assert head["ETag"].endswith('-2"') and len(head["Metadata"]["sha256"]) == 64
    # Same size, different bytes: found although a multipart ETag is no MD5 of anything.
    data = bytearray(big.read_bytes())
    data[100] = 2
    big.write_bytes(bytes(data))
    s3.delete_object(Bucket=bucket, Key=".cernvm-sync.json")  # force the HEAD path
    rep = sync_tree(src, f"s3://{bucket}", client=s3)
    assert rep.uploaded == ["big.rpm"]
    assert sync_tree(src, f"s3://{bucket}", client=s3).uploaded == []


def test_big_files_are_sent_from_disk(
    tmp_path: Path, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the streaming and the multipart thresholds a file is one PutObject sent from the open
    file (not read into memory), signed with its verified hash, on moto and on Ceph RGW."""
    import hashlib

    s3, bucket = target.client, target.bucket
    monkeypatch.setattr(s3write, "STREAM_THRESHOLD", 64 << 10)
    src = tmp_path / "src"
    src.mkdir()
    data = bytes(range(256)) * 4000 + b"tail"  # ~1 MB: several of the connection's blocks
    (src / "big.rpm").write_bytes(data)
    rep = sync_tree(src, f"s3://{bucket}", client=s3)
    assert rep.uploaded == ["big.rpm"]
    assert s3.get_object(Bucket=bucket, Key="big.rpm")["Body"].read() == data
    head = s3.head_object(Bucket=bucket, Key="big.rpm")
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest() and "-" not in head["ETag"]


def test_uploads_are_signed_with_the_verified_hash_and_the_server_checks_it(
    tmp_path: Path, target: Target
) -> None:
    """A sync's PutObject carries the file's known SHA-256 as its SigV4 payload hash (our own signer:
    nothing hashes the body again); Ceph RGW checks the body against it (moto does not check payload
    hashes)."""
    import hashlib

    import botocore.exceptions

    from cernvm_build.mirror.s3client import direct_put

    s3, bucket = target.client, target.bucket
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.rpm").write_bytes(b"package bytes\n" * 1000)
    (src / "odd name+1%~.rpm").write_bytes(b"a key that needs URI encoding")  # signed as the server sees it
    sent: dict[str, str] = {}

    def record(method: str, path: str, headers: dict[str, str]) -> None:
        if method == "PUT" and path.endswith("/a.rpm"):
            sent["a.rpm"] = headers["x-amz-content-sha256"]

    direct = direct_put(s3)
    assert direct is not None
    direct.observers.append(record)
    try:
        sync_tree(src, f"s3://{bucket}", client=s3)
    finally:
        direct.observers.remove(record)
    want = hashlib.sha256((src / "a.rpm").read_bytes()).hexdigest()
    assert sent["a.rpm"] == want
    assert s3.get_object(Bucket=bucket, Key="a.rpm")["Body"].read() == (src / "a.rpm").read_bytes()
    assert s3.head_object(Bucket=bucket, Key="a.rpm")["Metadata"] == {"sha256": want}
    odd = s3.get_object(Bucket=bucket, Key="odd name+1%~.rpm")["Body"].read()
    assert odd == (src / "odd name+1%~.rpm").read_bytes()
    if target.name == "rgw":
        # The check is real: a body that is not what its hash says is refused by the server.
        with pytest.raises(botocore.exceptions.ClientError, match="XAmzContentSHA256Mismatch"):
            direct.put(bucket, "b.rpm", b"other bytes", want, {"x-amz-meta-sha256": want})
        assert "b.rpm" not in target.objects()
        # And the signature is checked, not just present: a wrong secret is refused.
        from cernvm_build.mirror.s3direct import DirectPut, Keys

        keys = direct.credentials()
        wrong = DirectPut(target.endpoint, "us-east-1", lambda: Keys(keys.access, "not-the-secret"))
        body = b"signed with the wrong key"
        with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
            wrong.put(bucket, "c.rpm", body, hashlib.sha256(body).hexdigest(), {})
        assert "c.rpm" not in target.objects()


def test_progress_counts_files_when_verifying_and_bytes_when_uploading(
    tmp_path: Path, s3server: LocalS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's bars come from the one Reporter: 'verifying files' counts files (packages and
    metadata), 'uploading bytes' counts bytes."""
    import contextlib
    from collections.abc import Iterator

    from cernvm_build.cli.app import Output
    from cernvm_build.report import Recorder

    from .repos import make_rpm, make_yum_repo

    rec = Recorder()

    @contextlib.contextmanager
    def recorder(self: Output, **_: Any) -> Iterator[Recorder]:
        yield rec

    monkeypatch.setattr(Output, "reporter", recorder)
    src = tmp_path / "src"
    make_yum_repo(
        src, [make_rpm(tmp_path / "a", "cvm-a", payload=b"a" * 5000), make_rpm(tmp_path / "b", "cvm-b")]
    )
    assert (
        main(["mirror", "yum", str(src), f"s3://{bucket}/r", "--endpoint-url", s3server.endpoint, "-q"]) == 0
    )
    last: dict[str, tuple[int, int]] = {}
    for _, what, done, total in (e for e in rec.events if e[0] == "progress"):
        last[what] = (int(done), int(total))
    assert last["verifying files"] == (2, 2)  # the two packages
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert last["uploading bytes"] == (size, size)


def test_index_writer_is_a_fresh_process_that_writes_only_what_it_is_handed(
    tmp_path: Path, s3: Any, bucket: str
) -> None:
    """The index writer is a new interpreter (not a fork of the threaded mirror) in its own session;
    closed before the hand-over it writes nothing; handed a list, it writes it in order and reports
    each ETag back."""
    import hashlib
    import os

    from cernvm_build.mirror.hashcache import signature
    from cernvm_build.mirror.indexwriter import IndexWriter
    from cernvm_build.mirror.s3client import parse_s3_url
    from cernvm_build.mirror.s3plan import Action, LocalFile
    from cernvm_build.mirror.s3write import Conditions

    url = parse_s3_url(f"s3://{bucket}/r")
    idle = IndexWriter(s3, url, conditional=True, conditions=Conditions(True), acl=None)
    # Popen returns before the child's exec is done: until then /proc shows no command line
    for _ in range(200):
        cmdline = Path(f"/proc/{idle.proc.pid}/cmdline").read_bytes().split(b"\0")
        if b"-P" in cmdline:
            break
        time.sleep(0.05)
    assert b"from cernvm_build.mirror.indexwriter import main; main()" in cmdline
    assert os.getsid(idle.proc.pid) == idle.proc.pid != os.getsid(0)
    idle.close()
    assert idle.status == 0 and "Contents" not in s3.list_objects_v2(Bucket=bucket)

    files = []
    for name, data in (("repomd.xml", b"<repomd/>"), ("repomd.xml.asc", b"signature")):
        (tmp_path / name).write_bytes(data)
        st = os.stat(tmp_path / name)
        lf = LocalFile(name, tmp_path / name, len(data), hashlib.sha256(data).hexdigest(), signature(st))
        files.append((Action("create", name, len(data), "new", last=True), lf))
    seen: list[tuple[str, str]] = []
    helper = IndexWriter(s3, url, conditional=True, conditions=Conditions(True), acl=None)
    try:
        helper.write([[files[0]], [files[1]]], lambda rel, etag: seen.append((rel, etag)))
    finally:
        helper.close()
    assert [rel for rel, _ in seen] == ["repomd.xml", "repomd.xml.asc"]
    for rel, etag in seen:
        head = s3.head_object(Bucket=bucket, Key=f"r/{rel}")
        assert (
            head["ETag"] == etag
            and head["Metadata"]["sha256"] == hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
        )
