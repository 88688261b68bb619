"""sync_tree against a real S3 server: content-hash planning, safe order, CAS, faults, re-runs."""

from __future__ import annotations

import hashlib
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.errors import MirrorError
from cernvm_build.mirror.locals3 import Fault, LocalS3
from cernvm_build.mirror.s3client import watching
from cernvm_build.mirror.s3sync import MANIFEST, ConflictError, sync_tree

pytestmark = pytest.mark.integration


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def keys(s3: Any, bucket: str) -> dict[str, bytes]:
    out = {}
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        out[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def test_initial_then_no_change_then_same_size_change(tmp_path: Path, s3: Any, bucket: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"alpha", "d/b.bin": b"\x00" * 1000, "index.txt": b"a.txt\nd/b.bin\n"})
    dest = f"s3://{bucket}/pub"
    first = sync_tree(src, dest, client=s3, last=["index.txt"])
    assert sorted(first.uploaded) == ["a.txt", "d/b.bin", "index.txt"]
    head = s3.head_object(Bucket=bucket, Key="pub/a.txt")
    assert head["Metadata"]["sha256"] == "8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f8"
    assert head["ContentType"].startswith("text/plain")

    again = sync_tree(src, dest, client=s3, last=["index.txt"])
    assert again.actions == [] and again.uploaded == [] and again.unchanged == 3
    # One LIST and one GET of the manifest: no HEAD per object, no PUT.
    assert again.requests == {"GET": 2}

    (src / "a.txt").write_bytes(b"ALPHA")  # same size, same name: size/mtime tools miss this
    changed = sync_tree(src, dest, client=s3, last=["index.txt"])
    assert [(a.op, a.rel, a.reason) for a in changed.actions] == [
        ("update", "a.txt", "content differs (same size)")
    ]
    assert changed.uploaded == ["a.txt"]
    assert keys(s3, bucket)["pub/a.txt"] == b"ALPHA"


def test_without_manifest_the_stored_hash_is_asked(tmp_path: Path, s3: Any, bucket: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"x": b"one", "y": b"two"})
    dest = f"s3://{bucket}"
    sync_tree(src, dest, client=s3)
    s3.delete_object(Bucket=bucket, Key=MANIFEST)
    (src / "x").write_bytes(b"ONE")
    rep = sync_tree(src, dest, client=s3)
    assert rep.uploaded == ["x"] and rep.requests.get("HEAD") == 2
    assert keys(s3, bucket)["x"] == b"ONE"
    assert MANIFEST in keys(s3, bucket)


def test_a_manifest_nested_too_deeply_is_passed_over_as_damaged(tmp_path: Path, s3: Any, bucket: str) -> None:
    """json.loads raises RecursionError for 100,000 nested lists: it escaped read_manifest (which
    passes over a damaged manifest) as a traceback."""
    src = tmp_path / "src"
    write_tree(src, {"x": b"one", "y": b"two"})
    dest = f"s3://{bucket}"
    sync_tree(src, dest, client=s3)
    s3.put_object(Bucket=bucket, Key=MANIFEST, Body=b"[" * 100_000 + b"]" * 100_000)
    (src / "x").write_bytes(b"ONE")
    rep = sync_tree(src, dest, client=s3)
    assert rep.uploaded == ["x"] and rep.requests.get("HEAD") == 2  # as without a manifest
    assert keys(s3, bucket)["x"] == b"ONE" and keys(s3, bucket)[MANIFEST].startswith(b"{")


def test_dry_run_writes_nothing(tmp_path: Path, s3: Any, bucket: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"x": b"one"})
    rep = sync_tree(src, f"s3://{bucket}/p", client=s3, dry_run=True)
    assert [(a.op, a.rel) for a in rep.actions] == [("create", "x")]
    assert keys(s3, bucket) == {}
    assert "PUT" not in rep.requests


def test_indexes_go_last_and_deletions_after_them(tmp_path: Path, s3: Any, bucket: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"old.pkg": b"o", "repomd.xml": b"old.pkg"})
    dest = f"s3://{bucket}/r"
    sync_tree(src, dest, client=s3, last=["repomd.xml"])
    (src / "old.pkg").unlink()
    write_tree(src, {f"p{i}.pkg": b"x" * i for i in range(20)} | {"repomd.xml": b"new", "sig.asc": b"s"})
    order: list[tuple[str, str]] = []

    def record(method: str, path: str) -> None:
        if method in ("PUT", "POST", "DELETE"):
            order.append((method, path.rsplit("/", 1)[-1]))

    with watching(s3, record):
        sync_tree(src, dest, client=s3, last=["repomd.xml", "*.asc"], jobs=4)
    names = [n for _, n in order if not n.startswith(".cernvm-sync")]
    assert names[-3:-1] == ["repomd.xml", "sig.asc"]
    assert set(names[:20]) == {f"p{i}.pkg" for i in range(20)}
    assert order[-2][0] == "POST"  # DeleteObjects, after the indexes
    assert "r/old.pkg" not in keys(s3, bucket)


def test_keep_protects_previous_generations(tmp_path: Path, s3: Any, bucket: str) -> None:
    src = tmp_path / "src"
    dest = f"s3://{bucket}"
    for gen in range(4):
        for p in src.glob("*.pkg") if src.exists() else []:
            p.unlink()
        write_tree(src, {f"g{gen}.pkg": b"x", "index": f"g{gen}.pkg".encode()})
        rep = sync_tree(src, dest, client=s3, keep=2, last=["index"])
    present = {k for k in keys(s3, bucket) if k.endswith(".pkg")}
    assert present == {"g1.pkg", "g2.pkg", "g3.pkg"}
    assert rep.kept == ["g1.pkg", "g2.pkg"] and rep.deleted == ["g0.pkg"]


def test_a_second_publisher_is_detected(tmp_path: Path, s3: Any, s3server: LocalS3, bucket: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"pkg": b"1", "index": b"v1"})
    dest = f"s3://{bucket}"
    sync_tree(src, dest, client=s3, last=["index"])
    write_tree(src, {"pkg2": b"2", "index": b"v2"})
    fired = []

    def other_publisher(stage: str, done: int, total: int) -> None:
        if stage == "upload" and not fired:
            fired.append(1)
            s3.put_object(Bucket=bucket, Key="index", Body=b"someone else")

    with pytest.raises(ConflictError, match="index: changed by someone else"):
        sync_tree(src, dest, client=s3, last=["index"], progress=other_publisher)
    assert keys(s3, bucket)["index"] == b"someone else"


def test_server_without_conditional_writes_still_guards_indexes(tmp_path: Path, s3: Any, bucket: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"pkg": b"1", "index": b"v1"})
    dest = f"s3://{bucket}"
    rep = sync_tree(src, dest, client=s3, last=["index"], conditional=False)
    assert rep.conditional_writes is False and rep.notes
    write_tree(src, {"index": b"v2"})

    def other_publisher(stage: str, done: int, total: int) -> None:
        if stage == "upload":
            s3.put_object(Bucket=bucket, Key="index", Body=b"someone else")

    write_tree(src, {"pkg": b"2"})
    with pytest.raises(ConflictError):
        sync_tree(src, dest, client=s3, last=["index"], conditional=False, progress=other_publisher)


def test_probe_finds_conditional_writes(tmp_path: Path, s3: Any, bucket: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"x": b"1"})
    rep = sync_tree(src, f"s3://{bucket}", client=s3)
    assert rep.conditional_writes is True
    assert set(keys(s3, bucket)) == {"x", MANIFEST}  # the probe object is gone


def test_failure_midway_keeps_old_index_and_rerun_finishes(
    tmp_path: Path, s3: Any, s3server: LocalS3, bucket: str
) -> None:
    src = tmp_path / "src"
    files = {f"pkg{i:02d}": f"v1-{i}".encode() for i in range(10)}
    write_tree(src, files | {"index": b"\n".join(k.encode() for k in sorted(files))})
    dest = f"s3://{bucket}"
    sync_tree(src, dest, client=s3, last=["index"])
    new = {f"new{i:02d}": f"v2-{i}".encode() for i in range(10)}
    write_tree(src, new | {"index": b"\n".join(k.encode() for k in sorted(files | new))})
    s3server.faults.append(Fault("PUT", after=5, status=500, key_part=bucket))
    with pytest.raises(MirrorError) as err:
        sync_tree(src, dest, client=s3, last=["index"], jobs=2)
    assert "re-run" in (err.value.hint or "")
    assert keys(s3, bucket)["index"].count(b"\n") == 9  # still the old index, every object it names there
    s3server.faults.clear()
    rep = sync_tree(src, dest, client=s3, last=["index"], jobs=2)
    assert "index" in rep.uploaded and len(rep.uploaded) < 11
    assert keys(s3, bucket)["index"].count(b"\n") == 19


def test_reader_never_sees_missing_objects(tmp_path: Path, s3: Any, s3server: LocalS3, bucket: str) -> None:
    src = tmp_path / "src"
    dest = f"s3://{bucket}/repo"
    base = f"{s3server.endpoint}/{bucket}/repo"

    def publish(gen: int) -> None:
        for p in src.glob("*.pkg") if src.exists() else []:
            p.unlink()
        names = [f"g{gen}-{i}.pkg" for i in range(15)]
        write_tree(src, {n: n.encode() * 50 for n in names} | {"index": "\n".join(names).encode()})
        sync_tree(src, dest, client=s3, last=["index"], keep=1, jobs=4)

    publish(0)
    stop = threading.Event()
    problems: list[str] = []
    started, done = [0], [0]  # reader rounds begun / finished
    progress = threading.Condition()

    def reader() -> None:
        while True:
            with progress:
                started[0] += 1
                this = started[0]
            index = urllib.request.urlopen(f"{base}/index").read().decode().split("\n")
            for name in index:
                try:
                    urllib.request.urlopen(f"{base}/{name}").read()
                except urllib.error.HTTPError as e:
                    problems.append(f"{name}: {e.code}")
            with progress:
                done[0] = this
                progress.notify_all()
            if stop.is_set():
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        for gen in range(1, 5):
            publish(gen)
            # The promise covers readers one index behind (keep=1): before the next publish, let a
            # round that began after this one finish, however slowly the loaded machine runs it.
            with progress:
                after = started[0]
                if not progress.wait_for(lambda after=after: done[0] > after, timeout=120):
                    pytest.fail("the reader made no progress in 120 s")
    finally:
        stop.set()
        t.join()
    assert done[0] >= 4
    assert problems == []


def test_missing_bucket_is_a_clear_error(tmp_path: Path, s3: Any) -> None:
    src = tmp_path / "src"
    write_tree(src, {"x": b"1"})
    with pytest.raises(MirrorError, match="bucket does not exist"):
        sync_tree(src, "s3://no-such-bucket-here/p", client=s3)
    # pr33b: a name S3 never takes was "does not exist; create it first" (which S3 then refuses)
    for bad in ("mr", "My_Bucket"):
        with pytest.raises(MirrorError, match=f"'{bad}' is not a valid S3 bucket name") as err:
            sync_tree(src, f"s3://{bad}/p", client=s3)
        assert "3 to 63 lower-case letters" in (err.value.hint or "")


def test_no_credentials_is_a_clear_error(
    tmp_path: Path, s3env: None, s3server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    src = tmp_path / "src"
    write_tree(src, {"x": b"1"})
    with pytest.raises(MirrorError, match="no S3 credentials found") as err:
        sync_tree(src, "s3://bucket/p", endpoint_url=s3server.endpoint)
    assert "AWS_ACCESS_KEY_ID" in (err.value.hint or "")


def test_unknown_profile_is_a_clear_error(tmp_path: Path, s3env: None) -> None:
    src = tmp_path / "src"
    write_tree(src, {"x": b"1"})
    with pytest.raises(MirrorError, match="profile 'nope' is not configured"):
        sync_tree(src, "s3://bucket/p", profile="nope")


def test_bad_destination_url(tmp_path: Path) -> None:
    with pytest.raises(MirrorError, match="not an S3 URL"):
        sync_tree(tmp_path, "bucket/p")


@pytest.mark.parametrize("prefix", ["../x", "a/./b", "a//b", "a\x01b", "p/..", "a\nb"])
def test_a_prefix_no_reader_can_name_is_a_usage_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prefix: str
) -> None:
    """'s3://b/../x' published under the keys '../x/...', which a reader over HTTP cannot name (its
    URL resolves the '..' away), and a control character was taken as well (rv34b)."""
    from cernvm_build.cli.main import main

    write_tree(tmp_path / "src", {"index.html": b"1"})
    assert main(["mirror", "sync", str(tmp_path / "src"), f"s3://b/{prefix}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "the prefix has a '.', '..' or empty segment, or a control" in err, err
    assert "\x01" not in err and "hint: write the prefix as the plain path" in err


def test_odd_key_names_round_trip(tmp_path: Path, s3: Any, bucket: str) -> None:
    src = tmp_path / "src"
    names = {"a b+c/ü.txt": b"1", "pkg_1.0+git~1_all.deb": b"2", "%41.txt": b"3"}
    write_tree(src, names)
    assert sorted(sync_tree(src, f"s3://{bucket}/p q", client=s3).uploaded) == sorted(names)
    assert set(keys(s3, bucket)) == {f"p q/{n}" for n in names} | {f"p q/{MANIFEST}"}
    again = sync_tree(src, f"s3://{bucket}/p q", client=s3)
    assert again.actions == [] and again.unchanged == 3


def test_a_stale_key_no_xml_can_name_is_deleted(tmp_path: Path, s3: Any, bucket: str) -> None:
    """A stale object whose key holds a control character (\\x01: no XML 1.0 document can hold it,
    not even as a reference) made DeleteObjects' body malformed: every sync failed with "S3 error
    500", for ever (rv34b). Such a key is deleted on its own; the others still in one batch."""
    src = tmp_path / "src"
    write_tree(src, {"index.html": b"1"})
    sync_tree(src, f"s3://{bucket}/p", client=s3)
    odd = ["p/a\x01b", "p/c\x1fd/e", "p/plain"]
    for key in odd:
        s3.put_object(Bucket=bucket, Key=key, Body=b"stale")
    done = sync_tree(src, f"s3://{bucket}/p", client=s3)
    assert sorted(done.deleted) == ["a\x01b", "c\x1fd/e", "plain"]
    assert set(keys(s3, bucket)) == {"p/index.html", f"p/{MANIFEST}"}


def test_server_ignoring_conditions_is_detected(
    tmp_path: Path, s3: Any, s3server: LocalS3, bucket: str
) -> None:
    s3server.ignore_conditions = True
    src = tmp_path / "src"
    write_tree(src, {"pkg": b"1", "index": b"v1"})
    rep = sync_tree(src, f"s3://{bucket}", client=s3, last=["index"])
    assert rep.conditional_writes is False
    assert any("conditional writes" in n for n in rep.notes)
    assert keys(s3, bucket)["index"] == b"v1"


def test_a_key_longer_than_s3_takes_is_refused_before_anything_is_written(
    tmp_path: Path, s3: Any, bucket: str
) -> None:
    """moto takes keys over 1024 bytes, AWS and RGW refuse them: partway through a sync, after other
    files were sent. The sync refuses the tree before its first request that writes."""
    src = tmp_path / "src"
    (src / "a.txt").parent.mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    deep = src.joinpath(*["d" * 200] * 4)  # "p/" and 4 x 201 bytes: 806
    deep.mkdir(parents=True)
    (deep / ("f" * 210)).write_bytes(b"f")
    sync_tree(src, f"s3://{bucket}/p", client=s3)  # a key of 1016 bytes: fine
    (deep / ("f" * 210)).unlink()
    (deep / ("g" * 219)).write_bytes(b"g")  # 1025 bytes
    (src / "b.txt").write_bytes(b"b")
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    with pytest.raises(
        MirrorError, match=r"s3://.*/p: the key of 'd.*' would be 1025 bytes; S3 takes at most 1024"
    ):
        sync_tree(src, f"s3://{bucket}/p", client=s3)
    assert s3.list_objects_v2(Bucket=bucket)["Contents"] == listed


def test_a_published_file_is_read_one_byte_past_the_size_its_index_gives(
    tmp_path: Path, s3: Any, bucket: str
) -> None:
    """`mirror verify` read each object to its end, whatever the index said its size was (an endpoint's
    endless body was hashed, and staged to disk, for ever); a download stops one byte past it."""
    from cernvm_build.mirror.s3client import parse_s3_url
    from cernvm_build.mirror.source import S3Source

    s3.put_object(Bucket=bucket, Key="p/a.rpm", Body=b"x" * 100_000)
    stage = tmp_path / "stage"
    source = S3Source(s3, parse_s3_url(f"s3://{bucket}/p"), stage=stage, stage_suffixes=(".rpm",))
    _digest, size = source.digest("a.rpm", "sha256", None, 10) or ("", 0)
    assert size == 11 and (stage / "a.rpm").stat().st_size == 11
    assert source.digest("a.rpm", "sha256", None, 100_000) == (
        hashlib.sha256(b"x" * 100_000).hexdigest(),
        100_000,
    )
