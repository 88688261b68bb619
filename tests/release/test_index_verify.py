"""The release index, SHA256SUMS, its signature, and what `release verify` catches."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from cernvm_build import gpg
from cernvm_build import releaseindex as idx
from cernvm_build.errors import CernVMError, IntegrityError
from cernvm_build.release import notes, sums
from cernvm_build.release.verify import verify


def _release(root: Path, version: str = "2026.11-1", tag: str = "HEAD4", root_hash: str = "ab" * 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    arts = []
    for name, content in (("images/el7/ucernvm-v4prod.2026.11-1.cernvm.x86_64.iso", b"iso" * 1000),
                          ("containers/el7/el7.oci.tar", b"tar" * 500)):  # fmt: skip
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        arts.append(
            idx.ReleaseArtifact(
                name=p.name,
                path=name,
                profile="el7",
                kind=name.split("/")[0][:-1],
                format=p.suffix[1:],
                sha256=hashlib.sha256(content).hexdigest(),
                size=len(content),
            )
        )
    snap = idx.Snapshot("cernvm-prod.cern.ch", "/cvm4", root_hash, 42, tag)
    release = idx.ReleaseIndex(
        version=version, date="2026-11-25T00:00:00Z", source_date_epoch=1764028800,
        profiles=(idx.ProfileRecord("el7", "CentOS 7", False, snap, "00" * 32),), artifacts=tuple(arts),
    )  # fmt: skip
    sums.write(root, release.artifacts)
    (root / "index.json").write_text(release.dumps())
    return root / "index.json"


def test_clean_release_verifies(tmp_path: Path) -> None:
    report = verify(_release(tmp_path / "r"))
    assert report.ok and report.checked == 2


def test_flipped_byte_is_caught_and_named(tmp_path: Path) -> None:
    index = _release(tmp_path / "r")
    iso = next((tmp_path / "r/images/el7").iterdir())
    data = bytearray(iso.read_bytes())
    data[100] ^= 0x01
    iso.write_bytes(bytes(data))
    report = verify(index)
    assert not report.ok
    assert [f.artifact for f in report.findings] == [iso.name]
    assert "sha256" in report.findings[0].problem


def test_missing_artifact_and_edited_sums(tmp_path: Path) -> None:
    index = _release(tmp_path / "r")
    (tmp_path / "r/containers/el7/el7.oci.tar").unlink()
    (tmp_path / "r/SHA256SUMS").write_text((tmp_path / "r/SHA256SUMS").read_text().replace("a", "b", 1))
    problems = {f.artifact: f.problem for f in verify(index).findings}
    assert problems["el7.oci.tar"].startswith("missing")
    assert "differs from the index" in problems["SHA256SUMS"]


@pytest.mark.integration
def test_signature_checked_with_real_gpg(tmp_path: Path) -> None:
    secret, public = gpg.generate_test_key(tmp_path / "keys")
    index = _release(tmp_path / "r")
    with gpg.Keyring([secret]) as kr:
        kr.sign_detached(tmp_path / "r/SHA256SUMS", tmp_path / "r/SHA256SUMS.asc")
        fpr = kr.secret_fingerprints()[0]
    data = json.loads(index.read_text())
    data.update(signature="SHA256SUMS.asc", signer=fpr)
    index.write_text(json.dumps(data))
    report = verify(index, public_keys=[public])
    assert report.ok and report.signer == fpr
    _other_secret, other_public = gpg.generate_test_key(tmp_path / "other", name="Not The Release Key")
    report = verify(index, public_keys=[other_public])
    assert not report.ok and "unknown key" in report.findings[0].problem


def _signed_release(tmp_path: Path, secret: Path, when: dt.datetime | None) -> tuple[Path, str]:
    index = _release(tmp_path / "r")
    with gpg.Keyring([secret], now=when) as kr:
        kr.sign_detached(tmp_path / "r/SHA256SUMS", tmp_path / "r/SHA256SUMS.asc")
        fpr = kr.secret_fingerprints()[0]
    data = json.loads(index.read_text())
    data.update(signature="SHA256SUMS.asc", signer=fpr)
    index.write_text(json.dumps(data))
    return index, fpr


@pytest.mark.integration
def test_a_release_signed_while_its_key_was_valid_verifies_years_later_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The archivist's "years later": a key made 2020-01-01 that expired 2021-01-01 signed the release
    on 2020-06-01. The signature stands (a warning naming the key, both dates; ``--json`` carries
    them); it was "signed by key …, which expired" and the release failed once the key expired."""
    from cernvm_build.cli.main import main

    made = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    secret, public = gpg.generate_test_key(tmp_path / "keys", created=made, expire="2021-01-01")
    index, fpr = _signed_release(tmp_path, secret, dt.datetime(2020, 6, 1, tzinfo=dt.UTC))
    report = verify(index, public_keys=[public])
    assert report.ok and report.signer == fpr, report.findings
    assert report.signature == gpg.Signed(fpr, "2020-06-01", "2021-01-01")
    assert main(["release", "verify", str(index.parent), "--key", str(public)]) == 0
    err = capsys.readouterr().err
    assert f"signed on 2020-06-01, before key {fpr} expired on 2021-01-01" in err
    assert main(["release", "verify", str(index.parent), "--key", str(public), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["signature"] == {"signer": fpr, "signed_on": "2020-06-01", "key_expired": "2021-01-01"}


@pytest.mark.integration
def test_a_release_signed_by_a_revoked_key_is_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr33b: the archivist's command line lost gpg's hint (only "'release verify --json' lists them
    all") and ended "signature NOT checked (pass --key ...)" although --key was passed and refused."""
    from cernvm_build.cli.main import main

    secret, public = gpg.generate_test_key(tmp_path / "keys", revoked=True)
    index, fpr = _signed_release(tmp_path, secret, None)
    report = verify(index, public_keys=[public])
    assert not report.ok and f"signed by key {fpr} " in report.findings[0].problem
    assert "which has been revoked" in report.findings[0].problem
    assert report.findings[0].artifact == "SHA256SUMS.asc"
    assert main(["release", "verify", str(index), "--key", str(public)]) == IntegrityError.exit_code
    out, err = capsys.readouterr()
    assert "signature REFUSED" in out and "NOT checked" not in out
    assert "hint: the publisher revoked this key: get the publisher's new key" in err
    assert main(["release", "verify", str(index), "--key", str(public), "--json"]) == IntegrityError.exit_code
    (finding,) = json.loads(capsys.readouterr().out)["findings"]
    assert finding["hint"].startswith("the publisher revoked this key")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("version"), "missing key 'version'"),
        (lambda d: d.update(version="v1"), "not of the form YYYY.MM-N"),
        # the pattern's digits are a date: month 13 and year 0 were a traceback from calendar.timegm
        (lambda d: d.update(version="2026.13-1"), "'2026.13-1': month 13 is not 01 to 12"),
        (lambda d: d.update(version="2026.00-1"), "'2026.00-1': month 00 is not 01 to 12"),
        (lambda d: d.update(previous="0000.01-1"), "'0000.01-1': year 0000 is before 1970"),
        (lambda d: d["artifacts"][0].update(path="../../etc/passwd"), "leaves the release directory"),
        (lambda d: d["artifacts"][0].update(path="file:///dev/zero"), "leaves the release directory"),
        (lambda d: d["artifacts"][0].update(path="//other.example/x.hdd"), "leaves the release directory"),
        (lambda d: d.update(signature="http://other.example/SHA256SUMS.asc"), "leaves the release directory"),
        (lambda d: d["artifacts"][0].update(sha256="xyz"), "not 64 hex digits"),
        # pr26b 14: a name is a printable file name ("a.iso\nOK: release ..." forged a verify line)
        (
            lambda d: d["artifacts"][0].update(name="a.iso\nOK"),
            r"artifacts\[0\].name: name 'a.iso\\nOK' is not",
        ),
        (lambda d: d["artifacts"][0].update(name="../x.iso"), "name '../x.iso' is not a file name"),
        (lambda d: d["artifacts"][0].update(name=""), "name '' is not a file name"),
        (
            lambda d: d["profiles"][0].update(profile_sha256="x"),
            r"profiles\[0\].profile_sha256: .* not 64 hex",
        ),
        (lambda d: d.update(schema=99), "schema 99 is not supported"),
        # bool is an int to isinstance, and nothing refused a negative size or a list as inputs
        (lambda d: d["artifacts"][0].update(size=True), "'size' should be int, is bool"),
        (lambda d: d.update(source_date_epoch=False), "'source_date_epoch' should be int, is bool"),
        (lambda d: d["artifacts"][0].update(size=-3), r"artifacts\[0\].size: size -3 is negative"),
        (lambda d: d["artifacts"][0].update(inputs=[1]), r"'inputs' should be dict or null, is list"),
        (lambda d: d.update(profiles=[1]), r"'profiles\[0\]' should be an object, is int"),
        (lambda d: d.update(profiles=["snapshot"]), r"'profiles\[0\]' should be an object, is str"),
        (lambda d: d.update(artifacts=[[]]), r"'artifacts\[0\]' should be an object, is list"),
        # lf18: the one date rule (utcdate.parse): the form, ASCII digits only, and the calendar
        (lambda d: d.update(date="2026-11-25"), r"date '2026-11-25' is not YYYY-MM-DDTHH:MM:SSZ"),
        (lambda d: d.update(date="\u0662\u0660\u0662\u0666-11-25T00:00:00Z"), "is not YYYY-MM-DDTHH:MM:SSZ"),
        (lambda d: d.update(date="2026-02-30T00:00:00Z"), r"date '2026-02-30T00:00:00Z' is not a real date"),
    ],
)
def test_damaged_index_is_one_clear_error(tmp_path: Path, edit: object, message: str) -> None:
    index = _release(tmp_path / "r")
    data = json.loads(index.read_text())
    edit(data)  # type: ignore[operator]
    index.write_text(json.dumps(data))
    with pytest.raises(CernVMError, match=message) as e:
        idx.load(index)
    assert str(index) in str(e.value)


def test_notes_say_what_changed(tmp_path: Path) -> None:
    old = idx.load(_release(tmp_path / "a", "2026.10-1", tag="HEAD4", root_hash="11" * 20))
    new = idx.load(_release(tmp_path / "b", "2026.11-1", tag="HEAD4", root_hash="22" * 20))
    text = notes.render(new, old)
    assert "## Changes since 2026.10-1" in text
    assert "`el7`: OS snapshot HEAD4 (`111111111111`) → HEAD4 (`222222222222`)." in text
    assert "| el7 | CentOS 7 | cernvm-prod.cern.ch | /cvm4 | HEAD4 |" in text


def test_notes_keep_each_value_in_its_table_cell(tmp_path: Path) -> None:
    """pr18a's leftover: index values went into the Markdown tables as they were, so a tag holding '|'
    split its cell (the row had a column too many) and '<' began raw HTML in the notes."""
    import dataclasses

    new = idx.load(_release(tmp_path / "b"))
    odd = dataclasses.replace(new.profiles[0].snapshot, tag="a|b <img src=x onerror=alert(1)>\nc")
    new = dataclasses.replace(new, profiles=(dataclasses.replace(new.profiles[0], snapshot=odd),))
    (row,) = [line for line in notes.render(new, None).splitlines() if line.startswith("| el7 |")]
    assert row.replace("\\|", "").count("|") == 8, row  # seven cells
    assert "a\\|b &lt;img src=x onerror=alert(1)> c" in row and "<img" not in row


def test_locate_index_names_what_is_missing(tmp_path: Path) -> None:
    from cernvm_build.release.verify import locate_index

    index = _release(tmp_path / "2026.11-1")
    assert locate_index(str(index), tmp_path) == index
    assert locate_index(str(index.parent), tmp_path) == index
    assert locate_index("2026.11-1", tmp_path) == index
    with pytest.raises(CernVMError, match="no such release index, folder or version"):
        locate_index("/nonexistent/index.json", tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, r": nested too deeply$"),
        (b'{"schema": ' + b"9" * 5000 + b"}", r": a number has more digits than Python reads"),
        (None, r": not a regular file"),  # a FIFO: refused at once, never waited on
        (b" " * 2000, r": more than 1,000 bytes, far more than an index needs"),
    ],
    ids=["nested", "digits", "fifo", "size"],
)
def test_a_hostile_index_is_one_line_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None, message: str
) -> None:
    """lf18: the index is read through the one hostile-data loader (``dataload``, as the site's data
    files) and bounded in size (it was read whole, a FIFO waited on for ever)."""
    import os

    if content == b" " * 2000:
        monkeypatch.setattr(idx, "MAX_INDEX_BYTES", 1000)
    index = tmp_path / "index.json"
    if content is None:
        os.mkfifo(index)
    else:
        index.write_bytes(content)
    with pytest.raises(CernVMError, match=message) as e:
        idx.load(index)
    assert str(index) in str(e.value) and "\n" not in str(e.value)


def test_an_index_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    index = _release(tmp_path / "r")
    index.write_bytes(b'{"schema": "\xff"}')
    with pytest.raises(CernVMError, match="not UTF-8 text") as e:
        idx.load(index)
    assert str(index) in str(e.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b + b"\xff\xfe  x\n", "not UTF-8 text"),
        (lambda b: b.replace(b"\n", b"\r\n"), ":1: not a 'sha256  path' line"),
        # a wrong line before the right one: sha256sum -c fails on it, so must we (not: the last wins)
        (
            lambda b: b"0" * 64 + b"  " + b.split(b"  ", 1)[1].split(b"\n")[0] + b"\n" + b,
            ":2: '.*' is listed a second",
        ),
        (lambda b: b + b.split(b"\n")[0] + b"\n", ":3: '.*' is listed a second time"),
    ],
)
def test_sha256sums_are_read_as_sha256sum_reads_them(tmp_path: Path, edit: object, message: str) -> None:
    index = _release(tmp_path / "r")
    path = tmp_path / "r/SHA256SUMS"
    assert len(sums.parse(path)) == 2
    path.write_bytes(edit(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(CernVMError, match=message) as e:
        sums.parse(path)
    assert e.value.hint and "\n" not in e.value.message
    with pytest.raises(CernVMError, match=message):  # release verify: one line, exit 6
        verify(index)


def test_an_index_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO named index.json (in a release folder, or the site's data/releases/) blocked the read
    for ever: `release verify DIR` and the site build hung."""
    import os

    from cernvm_build.release.verify import locate_index

    index = _release(tmp_path / "2026.11-1")
    index.unlink()
    os.mkfifo(index)
    with pytest.raises(CernVMError, match="not a regular file") as e:
        verify(locate_index(str(index.parent), tmp_path))
    assert str(index) in str(e.value)


def test_an_index_larger_than_the_cap_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _release(tmp_path / "r")
    monkeypatch.setattr(idx, "MAX_INDEX_BYTES", 100)
    with pytest.raises(CernVMError, match="more than 100 bytes") as e:
        idx.load(index)
    assert str(index) in str(e.value)


@pytest.mark.parametrize(
    ("version", "said"),
    [
        ("2026.13-1", "month 13 is not 01 to 12"),
        ("2026.00-1", "month 00 is not 01 to 12"),
        ("0000.01-1", "year 0000 is before 1970"),
        ("1969.12-1", "year 1969 is before 1970"),
        ("2026.11", "is not of the form YYYY.MM-N"),
    ],
)
def test_a_version_that_is_no_month_is_one_error_before_the_build(version: str, said: str) -> None:
    """pr26a 12: a version of the right form whose year is before 1970 (or whose month is 13) was
    "not of the form YYYY.MM-N"; the error says which part is wrong now."""
    from cernvm_build.release.build import release_context

    with pytest.raises(CernVMError) as e:
        release_context(version)
    assert e.value.message.startswith(f"release version '{version}'") and said in e.value.message
    assert e.value.hint and "month 01 to 12" in e.value.hint


def test_a_version_dated_past_the_initrd_s_last_time_names_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pr26a 12: ``release 2107.01-1`` without SOURCE_DATE_EPOCH failed in the image build with "set
    SOURCE_DATE_EPOCH to an earlier time", though the time came from the version. With the variable
    set (to a time that fits) that version builds as before."""
    from cernvm_build.release.build import release_context

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    with pytest.raises(CernVMError) as e:
        release_context("2107.01-1")
    assert e.value.message.startswith("release version '2107.01-1' dates the release 2107-01-01T00:00:00Z")
    assert e.value.hint and "earlier release" in e.value.hint
    assert release_context("2106.02-1").epoch == 4294425600  # the last month that fits
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    assert release_context("2107.01-1").epoch == 1767225600


def test_notes_that_are_not_utf8_are_refused_before_anything_is_published(tmp_path: Path) -> None:
    """They were read after the artifacts were uploaded, and a UnicodeDecodeError traceback."""
    from cernvm_build.release.publish import publish_release

    index = _release(tmp_path / "r")
    (tmp_path / "r/RELEASE-NOTES.md").write_bytes(b"# CernVM release\n\nnotes \xff\n")
    with pytest.raises(CernVMError, match="not UTF-8 text") as e:  # the endpoint is never asked
        publish_release(
            index.parent, "s3://b/releases", endpoint_url="http://127.0.0.1:9", site_dest="s3://b/site"
        )
    assert str(tmp_path / "r/RELEASE-NOTES.md") in str(e.value)


def test_sha256sums_larger_than_the_cap_are_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SHA256SUMS was read whole (and copied to decode it), however large."""
    index = _release(tmp_path / "r")
    monkeypatch.setattr(sums, "MAX_SUMS", 100)
    with pytest.raises(CernVMError, match="SHA256SUMS: larger than 100 bytes"):
        verify(index)


def test_a_key_that_cannot_sign_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    """A missing --sign-key was a FileNotFoundError traceback, and a public or expired key an error,
    both only after every profile had been built."""
    from cernvm_build.context import BuildContext
    from cernvm_build.release.build import ReleaseOptions, build_release

    secret, public = gpg.generate_test_key(tmp_path / "keys")
    when = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    expired, _ = gpg.generate_test_key(tmp_path / "old", created=when, expire="1d")
    ctx = BuildContext(epoch=1764028800)
    out = tmp_path / "releases"
    for key, message in (
        (tmp_path / "missing.asc", "no such key file"),
        (public, "cannot sign with this key: no secret key"),
        # pr33b: gpg's "signing failed: Unusable secret key" alone; the key and its expiry now
        (expired, r"cannot sign with this key: key [0-9A-F]{40} expired on 2020-01-02"),
    ):
        opts = ReleaseOptions(version="2026.11-1", profiles=(), out=out, sign_key=key)
        with pytest.raises(CernVMError, match=message) as e:
            build_release(opts, ctx)
        assert str(key) in str(e.value) and not out.exists()
    assert "gpg --quick-set-expire" in (e.value.hint or "")
    release, final = build_release(ReleaseOptions("2026.11-1", (), out, sign_key=secret), ctx)
    assert release.signer and (final / "SHA256SUMS.asc").is_file()


def test_an_image_certificate_not_valid_at_the_release_s_build_time_is_refused_before_anything_is_built(
    tmp_path: Path,
) -> None:
    """The images' signing time is the release's build time: a certificate that was not valid then
    signs nothing (and ``release rebuild``, at the same build time, decides the same)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from cernvm_build.context import BuildContext
    from cernvm_build.image.signature import Signer
    from cernvm_build.release import build

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired signer")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(datetime.datetime(2010, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2015, 1, 1, tzinfo=datetime.UTC)).sign(key, hashes.SHA256())
    )  # fmt: skip
    out = tmp_path / "releases"
    opts = build.ReleaseOptions("2026.11-1", (), out, image_signer=Signer(key, cert))
    calls: list[object] = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(build, "build_profile_part", lambda *a: calls.append(a))
        with pytest.raises(CernVMError, match="not at the image's build time 2025-11-25") as e:
            build.build_release(opts, BuildContext(epoch=1764028800))
    assert e.value.where == "--image-cert" and not out.exists() and not calls


def test_a_previous_index_that_cannot_be_read_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    from cernvm_build.context import BuildContext
    from cernvm_build.release import build

    out = tmp_path / "releases"
    opts = build.ReleaseOptions("2026.11-1", (), out, previous=tmp_path / "none/index.json")
    calls: list[object] = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(build, "build_profile_part", lambda *a: calls.append(a))
        with pytest.raises(CernVMError, match="no such release index"):
            build.build_release(opts, BuildContext(epoch=1764028800))
    assert not out.exists() and not calls


def test_a_key_that_is_a_fifo_is_a_finding_not_a_wait(tmp_path: Path) -> None:
    """`release verify --key FIFO` blocked for ever in the key's read_bytes."""
    import os

    index = _release(tmp_path / "r")
    data = json.loads(index.read_text())
    data.update(signature="SHA256SUMS.asc")
    index.write_text(json.dumps(data))
    (tmp_path / "r/SHA256SUMS.asc").write_text("not checked before the key is read\n")
    os.mkfifo(tmp_path / "key.asc")
    report = verify(index, public_keys=[tmp_path / "key.asc"])
    assert [(f.artifact, f.problem) for f in report.findings] == [
        ("SHA256SUMS.asc", f"{tmp_path / 'key.asc'}: cannot read the key: not a regular file")
    ]


@pytest.mark.parametrize("item", ["=s3://cvmrepo/yum", "./yum", "./yum=/tmp/x"])
def test_a_repository_flag_without_source_or_s3_destination_is_a_usage_error(
    tmp_path: Path, item: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty SOURCE ('--yum =s3://…') mirrored the current folder as the repository."""
    from cernvm_build.cli.main import main

    index = _release(tmp_path / "r")
    code = main(["release", "publish", str(index.parent), "s3://cvmrepo/releases", "--yum", item])
    err = capsys.readouterr().err
    assert code == 2 and f"--yum '{item}' is not SOURCE=s3://bucket/prefix" in err


def test_bad_publishing_flags_of_a_build_are_refused_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`release VERSION --publish … --yum BAD` built every profile, then refused the flag."""
    from cernvm_build.cli.main import main
    from cernvm_build.release import build

    monkeypatch.setattr(build, "release_profiles", lambda names: pytest.fail("profiles loaded"))
    for flags in (["--publish", "cvmrepo/releases"], ["--publish", "s3://b/r", "--apt", "=s3://b/apt"]):
        code = main(["release", "2026.11-1", "--out", str(tmp_path), *flags])
        assert code == 2 and "is not" in capsys.readouterr().err


def test_a_rebuild_from_a_profile_that_is_not_the_recorded_one_is_refused_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`release rebuild` loads each profile by the name the index records: one changed since the
    release (or a hostile index naming another profile) was built with a note, and the comparison
    said nothing about the release. Refused with one line naming the index key, nothing built."""
    from cernvm_build import profile
    from cernvm_build.cli.main import main
    from cernvm_build.release import rebuild
    from cernvm_build.release.build import for_release, profile_hash

    monkeypatch.setattr(rebuild, "build_release", lambda *a, **k: pytest.fail("built"))
    index = _release(tmp_path / "r")  # profile el7, recorded settings sha256 00…
    el7, el9 = (profile_hash(for_release(profile.load(n), "2026.11-1")) for n in ("el7", "el9"))
    for recorded in ("00" * 32, el9):  # changed since; the hash of another profile
        data = json.loads(index.read_text())
        data["profiles"][0]["profile_sha256"] = recorded
        index.write_text(json.dumps(data))
        assert main(["release", "rebuild", str(index)]) == idx.ReleaseError.exit_code
        err = capsys.readouterr().err
        assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
            f"error: {index}: profiles[0].profile_sha256: profile el7: the release recorded settings "
            f"sha256 {recorded[:16]}…, the profile's are now {el7[:16]}…"
        ], err
        assert "Traceback" not in err and "as they were for 2026.11-1" in err
    data["profiles"][0]["name"] = str(Path(profile.locate("el7")))  # the same profile, by its file
    data["profiles"][0]["profile_sha256"] = el7
    index.write_text(json.dumps(data))
    assert main(["release", "rebuild", str(index)]) == idx.ReleaseError.exit_code
    err = capsys.readouterr().err
    assert f"profiles[0].name: profile name '{data['profiles'][0]['name']}'"[:60] in err
    assert "is a path, not a profile name" in err and "Traceback" not in err


def test_verify_says_when_the_signature_was_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr19d finding 2: `release verify INDEX` without --key printed "OK: ... artifacts checked" for a
    signed release whose signature it never read, as it did for an unsigned one."""
    from cernvm_build.cli.main import main

    index = _release(tmp_path / "r")
    assert main(["release", "verify", str(index)]) == 0
    assert capsys.readouterr().out.strip() == "OK: release 2026.11-1: 2 artifacts checked, not signed"
    (tmp_path / "r/SHA256SUMS.asc").write_text("not read without a key")
    data = json.loads(index.read_text())
    data.update(signature="SHA256SUMS.asc", signer="AB" * 20)
    index.write_text(json.dumps(data))
    assert main(["release", "verify", str(index)]) == 0
    assert "signature NOT checked (pass --key" in capsys.readouterr().out
    assert main(["release", "verify", str(index), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["signed"] is True and shown["signer"] is None


def test_a_profile_named_twice_is_refused_at_argument_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr19d: `release VERSION --profiles demo,demo` was not refused before the build (both parts in
    the same folders). One usage line naming the flag, nothing loaded or written."""
    from cernvm_build.cli.main import main
    from cernvm_build.release import build

    monkeypatch.setattr(build, "release_profiles", lambda names: pytest.fail("profiles loaded"))
    with pytest.raises(SystemExit) as e:
        main(["release", "2026.11-1", "--out", str(tmp_path / "out"), "--profiles", "demo, el9,demo"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert e.value.code == 2 and errors == ["error: argument --profiles: 'demo' is given twice"], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit", ["artifact", "sums", "removed"])
def test_a_release_folder_edited_since_its_build_is_refused_before_anything_is_published(
    tmp_path: Path, edit: str
) -> None:
    """`release publish` uploaded the folder as it was: an artifact edited (same size), SHA256SUMS
    changed or an artifact removed since the build went up under sums and a signature that no longer
    matched them."""
    from cernvm_build.release.publish import publish_release

    index = _release(tmp_path / "r")
    iso = tmp_path / "r/images/el7/ucernvm-v4prod.2026.11-1.cernvm.x86_64.iso"
    if edit == "artifact":
        iso.write_bytes(b"ISO" * 1000)
    elif edit == "sums":
        (tmp_path / "r/SHA256SUMS").write_text((tmp_path / "r/SHA256SUMS").read_text().replace("a", "b", 1))
    else:
        iso.unlink()
    with pytest.raises(IntegrityError) as e:  # the endpoint is never asked
        publish_release(index.parent, "s3://b/releases", endpoint_url="http://127.0.0.1:9")
    assert str(tmp_path / "r") in str(e.value) and "release verify" in (e.value.hint or "")


def test_a_release_folder_holding_another_release_s_index_is_refused_before_publishing(
    tmp_path: Path,
) -> None:
    """releases/2026.11-1/ whose index.json says 2026.12-1 (copied over) was uploaded as 2026.12-1,
    over that release's artifacts."""
    from cernvm_build.release.publish import publish_release

    index = _release(tmp_path / "2026.11-1", version="2026.12-1")
    with pytest.raises(IntegrityError, match=r"version 2026\.12-1, in the folder of release 2026\.11-1"):
        publish_release(index.parent, "s3://b/releases", endpoint_url="http://127.0.0.1:9")


def test_a_failed_verify_says_so_with_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rv24: -q leaves results out (pr24b), and with them verify's FAIL lines: a damaged release was
    a silent non-zero exit. The failure is an error line, shown with -q and after --json's document."""
    from cernvm_build.cli.main import main

    index = _release(tmp_path / "r")
    (tmp_path / "r/containers/el7/el7.oci.tar").write_bytes(b"changed")
    assert main(["release", "verify", str(index), "-q"]) == IntegrityError.exit_code
    got = capsys.readouterr()
    assert got.out == ""
    line = "error: release 2026.11-1: 1 problem(s), first: el7.oci.tar: size 7 != 1500"
    assert got.err.startswith(line), got.err
    assert main(["release", "verify", str(index), "--json"]) == IntegrityError.exit_code
    got = capsys.readouterr()
    assert json.loads(got.out)["ok"] is False and "error: release 2026.11-1" in got.err
    assert main(["release", "verify", str(index)]) == IntegrityError.exit_code
    assert "FAIL el7.oci.tar" in capsys.readouterr().out


def test_a_rebuild_that_differs_says_so_with_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rv24: as verify's, rebuild's table is a result -q leaves out: a rebuild that differs was a silent
    exit 1. Its first difference is an error line."""
    from cernvm_build.cli.main import main
    from cernvm_build.release import rebuild

    index = _release(tmp_path / "r")
    differs = rebuild.RebuildReport("2026.11-1", [rebuild.Outcome("el7.oci.tar", False, "layer 2 differs")])
    monkeypatch.setattr(rebuild, "rebuild", lambda *a, **k: differs)
    assert main(["release", "rebuild", str(index), "-q"]) == CernVMError.exit_code
    got = capsys.readouterr()
    assert got.out == ""
    assert (
        "error: release 2026.11-1: 1 artifact(s) not byte-identical, first: el7.oci.tar: layer 2" in got.err
    )
    monkeypatch.setattr(rebuild, "rebuild", lambda *a, **k: rebuild.RebuildReport("2026.11-1"))
    assert main(["release", "rebuild", str(index), "-q"]) == CernVMError.exit_code
    assert "error: release 2026.11-1: no artifact was rebuilt" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.usefixtures("s3env")
def test_publish_shows_one_line_per_destination_and_json_keeps_the_report(
    tmp_path: Path, s3server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr33b: `release publish` without --json printed its whole report as pretty JSON, an action
    per object (619 of them for the demo release), where `mirror` prints one line per destination."""
    from cernvm_build.cli.main import main
    from cernvm_build.mirror.s3client import make_client

    make_client(endpoint_url=s3server.endpoint).create_bucket(Bucket="pr33b-rel")
    index = _release(tmp_path / "r")
    argv = [
        "release",
        "publish",
        str(index.parent),
        "s3://pr33b-rel/releases",
        "--endpoint-url",
        s3server.endpoint,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    dest = "s3://pr33b-rel/releases/2026.11-1"
    assert out.splitlines() == [f"{dest}: uploaded 4 object(s) (5952 bytes), deleted 0, unchanged 0"], out
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["artifacts"]["dest"] == dest and doc["artifacts"]["unchanged"] == 4
