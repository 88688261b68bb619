"""Repositories signed by an expired or a revoked key are refused, as real apt and dnf refuse them: by
`mirror yum/apt` before anything is uploaded, and by `mirror verify` on a published copy (issues 12, 18).
gpg reports VALIDSIG for such signatures too; only GOODSIG from a key still valid counts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cli.main import main
from cernvm_build.gpg import Keyring, generate_test_key

from .conftest import Target
from .repos import make_apt_repo, make_deb, make_rpm, make_yum_repo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def expired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dt.datetime, str]:
    """(secret, public, a time the key was valid, what the error says): made three years ago, valid
    for one year."""
    made = dt.datetime.now(dt.UTC) - dt.timedelta(days=3 * 365)
    secret, public = generate_test_key(
        tmp_path_factory.mktemp("expired"), name="Expired Key", created=made, expire="1y"
    )
    ends = (made + dt.timedelta(days=365)).strftime("%Y-%m-%d")
    return (
        secret,
        public,
        made + dt.timedelta(days=30),
        f"(Expired Key <test@cernvm.test>), which expired on {ends}",
    )


@pytest.fixture(scope="module")
def revoked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, None, str]:
    secret, public = generate_test_key(tmp_path_factory.mktemp("revoked"), name="Revoked Key", revoked=True)
    return secret, public, None, "(Revoked Key <test@cernvm.test>), which has been revoked"


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("pkgs")
    return {
        "yum": make_rpm(work / "rpm", "cvm-alpha", payload=b"alpha\n"),
        "apt": make_deb(work / "deb" / "cvm-alpha_1.0_all.deb", "cvm-alpha", payload=b"alpha\n"),
    }


def _fingerprint(secret: Path) -> str:
    with Keyring([secret]) as kr:
        return kr.secret_fingerprints()[0]


def _objects(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


#: every case on moto; one on Ceph RGW (the refusal comes before any write, and `mirror verify` reads
#: the bucket through the same client on any server: one case shows it there, within the suite's time)
CASES = [
    *(pytest.param(kind, which, "moto", id=f"{which}-{kind}-moto")
      for which in ("expired", "revoked") for kind in ("yum", "apt")),
    pytest.param("apt", "revoked", "rgw", id="revoked-apt-rgw"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "which", "target"), CASES, indirect=["target"])
def test_repository_signed_by_a_dead_key_is_refused(
    kind: str,
    which: str,
    request: pytest.FixtureRequest,
    packages: dict[str, Path],
    tmp_path: Path,
    target: Target,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3, bucket = target.client, target.bucket
    secret, public, sign_time, says = request.getfixturevalue(which)
    src = tmp_path / "src"
    if kind == "yum":
        make_yum_repo(src, [packages["yum"]], secret_key=secret, sign_time=sign_time)
        signed = ["repodata/repomd.xml.asc"]
    else:
        make_apt_repo(src, "stable", [packages["apt"]], secret_key=secret, sign_time=sign_time)
        signed = ["dists/stable/InRelease", "dists/stable/Release.gpg"]
    expected = f"signed by key {_fingerprint(secret)} {says}"

    url = f"s3://{bucket}/r"
    common = ["--endpoint-url", target.endpoint, "--gpg-key", str(public)]
    rc = main(["mirror", kind, str(src), url, *common])
    err = capsys.readouterr().err
    assert rc == 9, err
    assert "Traceback" not in err
    for rel in signed:
        assert f"{rel}: {expected}" in err, err
    assert _objects(s3, bucket) == set()  # nothing uploaded

    # The same tree published by other means (e.g. before the key expired): verify finds it out.
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        s3.upload_file(str(f), bucket, f"r/{f.relative_to(src)}")
    rc = main(["mirror", "verify", kind, url, *common])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert rc == 9, output
    assert "Traceback" not in output
    assert f"{signed[0]}: {expected}" in output, output
