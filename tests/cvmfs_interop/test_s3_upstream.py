"""S3-backed repositories (issue 20): ``cvmfs create/publish/tag/replicate`` into ``s3://bucket/prefix``
against moto and a real Ceph RADOS Gateway (the mirror's servers), read back over the endpoint's
plain HTTP by the project's reader and mounted by the real cvmfs2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs import s3upstream
from cernvm_build.cvmfs.publish import publish_tree
from cernvm_build.cvmfs.repository import SnapshotSpec, open_repository
from tests.support.s3servers import Target

from .real import locate, mounted

pytestmark = pytest.mark.integration

FQRN = "s3.cernvm.test"


def _keys(tmp_path: Path) -> tuple[keymod.KeySet, Path]:
    """Keys in ``tmp_path/keys`` and the public key's path."""
    keys = keymod.generate_keys(FQRN)
    keys.save(tmp_path / "keys")
    return keys, tmp_path / "keys" / f"{FQRN}.pub"


def _tree(root: Path, step: int) -> Path:
    for i in range(12):
        d = root / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(b"file %d of step %d\n" % (i, step if i < 2 else 0))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / ".cvmfscatalog").write_bytes(b"")
    (root / "sub" / "nested").write_text(f"nested catalog, step {step}\n")
    (root / "big.bin").write_bytes(os.urandom(64 * 1024) * 90)  # chunked: over 4 MiB
    return root


def _cli(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> dict[str, object]:
    got = main([*argv, "--json"])
    out = capsys.readouterr()
    assert got == code, out.err
    if code:
        assert "Traceback" not in out.err and len(out.err.strip().splitlines()) <= 2
        return {"err": out.err}
    return json.loads(out.out)  # type: ignore[no-any-return]


def _read_all(source: str | Path, pub: Path, tag: str | None = None) -> dict[str, bytes]:
    with open_repository(source, fqrn=FQRN, public_keys=[pub], snapshot=SnapshotSpec(tag=tag)) as repo:
        assert repo.verify().ok
        return {e.path: repo.read_bytes(e) for e in repo.walk("/") if e.is_file}


def _stratum_files(stratum: Path) -> set[str]:
    out = {p.relative_to(stratum).as_posix() for p in (stratum / "data").glob("??/*") if p.is_file()}
    out |= {p.relative_to(stratum).as_posix() for p in (stratum / "stats").glob("*") if p.is_file()}
    return out | {p.name for p in stratum.glob(".cvmfs*") if p.is_file()}


@pytest.mark.parametrize("target", ["rgw"], indirect=True)  # the real server; moto below (suite budget)
def test_create_publish_tag_into_a_bucket_read_over_http_and_by_the_real_cvmfs2(
    target: Target, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pub = _keys(tmp_path)
    url = target.url(FQRN)
    s3 = ["--endpoint-url", target.endpoint, "--spool", str(tmp_path / "spool")]
    common = [*s3, "--keys", str(tmp_path / "keys")]
    made = _cli(capsys, "cvmfs", "create", url, "--fqrn", FQRN, *common)
    assert made["revision"] == 1 and made["s3"]["uploaded"] > 0  # type: ignore[index]
    first = _cli(capsys, "cvmfs", "publish", url, str(_tree(tmp_path / "src1", 1)), "--tag", "v1", *common)
    second = _cli(capsys, "cvmfs", "publish", url, str(_tree(tmp_path / "src2", 2)), *common)
    assert (first["revision"], second["revision"]) == (2, 3)
    _cli(capsys, "cvmfs", "tag", "add", url, "v2", *common)

    # The real server's S3 layout: the Stratum directory under the prefix, nothing of the working state.
    keys_in_bucket = {k for k in target.objects() if not k.startswith(f"{FQRN}/.cernvm-sync")}
    spool = tmp_path / "spool"
    assert keys_in_bucket == {f"{FQRN}/{rel}" for rel in _stratum_files(spool)}
    assert {".cvmfspublished", ".cvmfswhitelist", ".cvmfsreflog"} <= {
        k.split("/", 1)[1] for k in keys_in_bucket
    }
    assert not any("/txn/" in k for k in keys_in_bucket)

    http = target.http(FQRN)
    assert _read_all(http, pub) == _read_all(spool, pub)
    v1 = _read_all(http, pub, tag="v1")
    assert v1["/d0/f0"] == b"file 0 of step 1\n"
    assert _read_all(http, pub, tag="v2")["/d0/f0"] == b"file 0 of step 2\n"

    tools = locate(tmp_path)
    with mounted(tools, http, FQRN, pub, tmp_path / "real") as mnt:
        got = {"/" + str(p.relative_to(mnt)): p.read_bytes() for p in mnt.rglob("*") if p.is_file()}
        assert got == _read_all(http, pub)
        assert os.getxattr(mnt, "user.revision") == b"3"
    with mounted(tools, http, FQRN, pub, tmp_path / "real-v1", CVMFS_REPOSITORY_TAG="v1") as mnt:
        assert (mnt / "d0" / "f0").read_bytes() == b"file 0 of step 1\n"

    # A missing working copy is refused before anything is written; one copied from the bucket
    # (the hint's replicate) publishes; the first is then behind the bucket and refused.
    before = target.objects()
    other = [
        "--endpoint-url",
        target.endpoint,
        "--spool",
        str(tmp_path / "other"),
        "--keys",
        str(tmp_path / "keys"),
    ]
    src1 = str(tmp_path / "src1")
    refused = _cli(capsys, "cvmfs", "publish", url, src1, *other, code=5)
    assert "working copy" in str(refused["err"]) and "replicate" in str(refused["err"])
    assert target.objects() == before
    _cli(capsys, "cvmfs", "replicate", http, str(tmp_path / "other"), "--key", str(pub), "--fqrn", FQRN)
    assert _cli(capsys, "cvmfs", "publish", url, src1, *other)["revision"] == 4
    after = target.objects()
    refused = _cli(capsys, "cvmfs", "publish", url, src1, *common, code=5)
    assert "revision 4" in str(refused["err"]) and "revision 3" in str(refused["err"])
    refused = _cli(capsys, "cvmfs", "create", url, "--fqrn", FQRN, *common, code=5)
    assert "working copy" in str(refused["err"])
    assert target.objects() == after
    refused = _cli(
        capsys,
        "cvmfs",
        "create",
        url,
        "--fqrn",
        FQRN,
        *s3[:2],
        "--spool",
        str(tmp_path / "new"),
        "--keys",
        str(tmp_path / "keys"),
        code=5,
    )
    assert "already holds repository" in str(refused["err"])
    assert _read_all(http, pub)["/d0/f0"] == b"file 0 of step 1\n"


@pytest.mark.parametrize("target", ["moto"], indirect=True)  # the order is the sync engine's, on any server
def test_signed_files_go_last_and_an_interrupted_push_is_finished_by_the_next_command(
    target: Target, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, pub = _keys(tmp_path)
    url = target.url("repo")
    up = s3upstream.upstream(url, spool=tmp_path / "spool", endpoint_url=target.endpoint)
    s3 = [
        "--endpoint-url",
        target.endpoint,
        "--spool",
        str(tmp_path / "spool"),
        "--keys",
        str(tmp_path / "keys"),
    ]
    _cli(capsys, "cvmfs", "create", url, "--fqrn", FQRN, *s3)

    # A publish whose push never happened (the process died after the local commit) ...
    publish_tree(up.spool, FQRN, keys, _tree(tmp_path / "src", 1), tag="v1")
    assert _read_all(target.http("repo"), pub) == {}  # the bucket still publishes revision 1
    events: list[tuple[str, str]] = []
    report = s3upstream.push(up, checkpoint=lambda event, key: events.append((event, key)))
    uploads = [key for event, key in events if event in ("uploaded", "index")]
    assert len(uploads) == len(report.uploaded) > 3
    # ... is finished by the next push: every object before the signed files, the manifest last.
    assert uploads[-1] == ".cvmfspublished"
    first_signed = min(i for i, k in enumerate(uploads) if not k.startswith("data/"))
    assert all(not k.startswith("data/") for k in uploads[first_signed:])
    assert _read_all(target.http("repo"), pub, tag="v1") == _read_all(up.spool, pub)
    # nothing left to push: the next command uploads only its new signed files
    tagged = _cli(capsys, "cvmfs", "tag", "add", url, "v1b", *s3)
    assert tagged["s3"]["uploaded"] <= 4  # type: ignore[index]


@pytest.mark.parametrize("target", ["moto"], indirect=True)
def test_replicate_into_a_bucket(target: Target, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, pub = _keys(tmp_path)
    s3 = ["--endpoint-url", target.endpoint]
    origin = target.url("stratum0")
    _cli(
        capsys,
        "cvmfs",
        "create",
        origin,
        "--fqrn",
        FQRN,
        *s3,
        "--spool",
        str(tmp_path / "s0"),
        "--keys",
        str(tmp_path / "keys"),
    )
    _cli(
        capsys,
        "cvmfs",
        "publish",
        origin,
        str(_tree(tmp_path / "src", 1)),
        "--tag",
        "v1",
        *s3,
        "--spool",
        str(tmp_path / "s0"),
        "--keys",
        str(tmp_path / "keys"),
    )
    replica = target.url("stratum1")
    args = [
        target.http("stratum0"),
        replica,
        "--key",
        str(pub),
        "--fqrn",
        FQRN,
        *s3,
        "--spool",
        str(tmp_path / "s1"),
    ]
    got = _cli(capsys, "cvmfs", "replicate", *args)
    assert got["revision"] == 2 and got["s3"]["uploaded"] > 0  # type: ignore[index]
    assert _read_all(target.http("stratum1"), pub, tag="v1") == _read_all(target.http("stratum0"), pub)
    again = _cli(capsys, "cvmfs", "replicate", *args)
    assert again["objects_fetched"] == 0 and again["s3"]["uploaded"] <= 1  # type: ignore[index]


@pytest.mark.parametrize("target", ["moto"], indirect=True)
def test_a_stale_source_replicated_through_a_fresh_spool_does_not_roll_the_bucket_back(
    target: Target, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr18d finding 9: ``replicate`` checks the rollback floor against its spool only; a fresh spool
    (another machine, a lost cache) replicating a stale source pushed its older manifest over the
    bucket's newer one."""
    import shutil

    from cernvm_build.cvmfs.publish import create_repository

    keys, pub = _keys(tmp_path)
    s0 = tmp_path / "s0"
    create_repository(s0, FQRN, keys)
    publish_tree(s0, FQRN, keys, _tree(tmp_path / "src", 1))
    shutil.copytree(s0, tmp_path / "stale")
    publish_tree(s0, FQRN, keys, _tree(tmp_path / "src", 2))
    s3 = ["--endpoint-url", target.endpoint, "--key", str(pub), "--fqrn", FQRN]
    new = _cli(capsys, "cvmfs", "replicate", str(s0), target.url("s1"), *s3, "--spool", str(tmp_path / "a"))
    published = target.client.get_object(Bucket=target.bucket, Key="s1/.cvmfspublished")["Body"].read()
    stale = [str(tmp_path / "stale"), target.url("s1"), *s3, "--spool", str(tmp_path / "b")]
    assert main(["cvmfs", "replicate", *stale]) == 5
    err = capsys.readouterr().err
    assert f"error: {target.url('s1')}: the bucket publishes revision {new['revision']}, newer" in err, err
    assert "Traceback" not in err
    after = target.client.get_object(Bucket=target.bucket, Key="s1/.cvmfspublished")["Body"].read()
    assert after == published
