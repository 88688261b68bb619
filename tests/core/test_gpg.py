"""Signatures with the real gpg: good ones name their key, anything else is an IntegrityError."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from cernvm_build import gpg
from cernvm_build.errors import IntegrityError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return gpg.generate_test_key(tmp_path_factory.mktemp("keys"))


def test_detached_and_clearsigned_round_trip(keys: tuple[Path, Path], tmp_path: Path) -> None:
    secret, public = keys
    data = tmp_path / "SHA256SUMS"
    data.write_text("abc  file\n")
    with gpg.Keyring([secret]) as kr:
        kr.sign_detached(data, tmp_path / "SHA256SUMS.asc")
        kr.clearsign(data, tmp_path / "InRelease")
        fpr = kr.secret_fingerprints()[0]
    with gpg.Keyring([public]) as kr:
        assert kr.verify_detached(tmp_path / "SHA256SUMS.asc", data) == fpr
        signer, content = kr.verify_clearsigned(tmp_path / "InRelease")
        assert signer == fpr and content == b"abc  file\n"
        data.write_text("abd  file\n")  # one byte flipped
        with pytest.raises(IntegrityError, match="bad signature"):
            kr.verify_detached(tmp_path / "SHA256SUMS.asc", data)


def test_relative_names_beginning_with_a_dash_are_files_not_options(
    keys: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr26c finding 11: in a release folder '-o', gpg read '-o/SHA256SUMS.asc' as ``-o`` (--output):
    a good signature was "no valid signature", a signature there was never written."""
    secret, public = keys
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-o").mkdir()
    data, sig = Path("-o/SHA256SUMS"), Path("-o/SHA256SUMS.asc")
    data.write_text("abc  x\n")
    with gpg.Keyring([secret]) as kr:
        kr.sign_detached(data, sig)
        kr.clearsign(data, Path("-o/InRelease"))
        fpr = kr.secret_fingerprints()[0]
    with gpg.Keyring([public]) as kr:
        assert kr.verify_detached(sig, data) == fpr
        assert kr.verify_clearsigned(Path("-o/InRelease"))[1] == b"abc  x\n"


def test_signature_by_another_key_is_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    other_secret, _ = gpg.generate_test_key(tmp_path / "other", name="Someone Else")
    data = tmp_path / "f"
    data.write_text("x")
    with gpg.Keyring([other_secret]) as kr:
        kr.sign_detached(data, tmp_path / "f.asc")
    with gpg.Keyring([keys[1]]) as kr, pytest.raises(IntegrityError, match="unknown key"):
        kr.verify_detached(tmp_path / "f.asc", data)


def _three_years_ago() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=3 * 365)


@pytest.fixture(scope="module")
def expired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dt.datetime]:
    """A key made three years ago that expired a year later, and a time when it was still valid."""
    made = _three_years_ago()
    secret, public = gpg.generate_test_key(
        tmp_path_factory.mktemp("expired"), name="Expired Key", created=made, expire="1y"
    )
    return secret, public, made + dt.timedelta(days=30)


@pytest.fixture(scope="module")
def revoked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return gpg.generate_test_key(tmp_path_factory.mktemp("revoked"), name="Revoked Key", revoked=True)


def test_signatures_by_an_expired_key_are_refused(
    expired: tuple[Path, Path, dt.datetime], tmp_path: Path
) -> None:
    """gpg says VALIDSIG for them (next to EXPKEYSIG): apt and dnf refuse them, and so do we."""
    secret, public, valid_then = expired
    data = tmp_path / "Release"
    data.write_text("Suite: stable\n")
    with gpg.Keyring([secret], now=valid_then) as kr:
        kr.sign_detached(data, tmp_path / "Release.gpg")
        kr.clearsign(data, tmp_path / "InRelease")
        fpr = kr.secret_fingerprints()[0]
    with gpg.Keyring([public], now=valid_then) as kr:  # then, the signature was good
        assert kr.verify_detached(tmp_path / "Release.gpg", data) == fpr
    expiry = (valid_then - dt.timedelta(days=30) + dt.timedelta(days=365)).strftime("%Y-%m-%d")
    message = (
        rf"Release\S*: signed by key {fpr} \(Expired Key <test@cernvm.test>\), which expired on {expiry}"
    )
    with gpg.Keyring([public]) as kr:
        with pytest.raises(IntegrityError, match=message) as e:
            kr.verify_detached(tmp_path / "Release.gpg", data)
        assert e.value.hint and "\n" not in str(e.value)
        with pytest.raises(IntegrityError, match=message.replace("Release", "InRelease", 1)):
            kr.verify_clearsigned(tmp_path / "InRelease")


#: a key made on 2020-01-01 that expired on 2021-01-01 (fixed dates: gpg's --faked-system-time)
MADE, EXPIRY = dt.datetime(2020, 1, 1, tzinfo=dt.UTC), "2021-01-01"


def _sign_at(secret: Path, when: dt.datetime, data: Path, sig: Path) -> str:
    with gpg.Keyring([secret], now=when) as kr:
        kr.sign_detached(data, sig)
        return kr.secret_fingerprints()[0]


def test_a_past_signature_made_while_its_key_was_valid_is_kept_with_the_expiry(tmp_path: Path) -> None:
    """A release signed in 2020-06 by a key that expired in 2021 is still its publisher's years later
    (``verify_archived``, for release verify); live repository metadata keeps refusing it."""
    secret, public = gpg.generate_test_key(tmp_path / "k", name="Old Key", created=MADE, expire=EXPIRY)
    data, sig = tmp_path / "SHA256SUMS", tmp_path / "SHA256SUMS.asc"
    data.write_text("abc  x\n")
    fpr = _sign_at(secret, dt.datetime(2020, 6, 1, tzinfo=dt.UTC), data, sig)
    with gpg.Keyring([public]) as kr:
        assert kr.verify_archived(sig, data) == gpg.Signed(fpr, "2020-06-01", EXPIRY)
        with pytest.raises(IntegrityError, match="which expired on"):
            kr.verify_detached(sig, data)  # as apt does
        data.write_text("abd  x\n")
        with pytest.raises(IntegrityError, match="bad signature"):
            kr.verify_archived(sig, data)


def test_a_past_signature_made_after_its_key_expired_is_refused(tmp_path: Path) -> None:
    """The secret key's expiry extended later (``--quick-set-expire``) signs in 2022; the verifier's
    key is the one it was given, which expired in 2021: that signature is not trusted."""
    secret, public = gpg.generate_test_key(tmp_path / "k", name="Old Key", created=MADE, expire=EXPIRY)
    later = dt.datetime(2022, 3, 1, tzinfo=dt.UTC)
    with gpg.Keyring([secret], now=later) as kr:
        fpr = kr.secret_fingerprints()[0]
        kr._gpg("--pinentry-mode", "loopback", "--passphrase", "", "--quick-set-expire", fpr, "2030-01-01")
        extended = tmp_path / "extended.asc"
        kr.export(fpr, extended, secret=True)
    data, sig = tmp_path / "SHA256SUMS", tmp_path / "SHA256SUMS.asc"
    data.write_text("abc  x\n")
    _sign_at(extended, later, data, sig)
    message = f"signed on 2022-03-01 by key {fpr} .*after it expired on {EXPIRY}"
    with gpg.Keyring([public]) as kr, pytest.raises(IntegrityError, match=message):
        kr.verify_archived(sig, data)


def test_a_past_signature_by_a_revoked_key_or_from_the_future_is_refused(
    revoked: tuple[Path, Path], tmp_path: Path
) -> None:
    data, sig = tmp_path / "SHA256SUMS", tmp_path / "SHA256SUMS.asc"
    data.write_text("abc  x\n")
    _sign_at(revoked[0], dt.datetime.now(dt.UTC), data, sig)
    with gpg.Keyring([revoked[1]]) as kr, pytest.raises(IntegrityError, match="has been revoked"):
        kr.verify_archived(sig, data)
    # a status gpg gives for a key that expired in 2021, the signature dated 2099
    status = "NEWSIG\nKEYEXPIRED 1609459200\nEXPKEYSIG K U\nVALIDSIG F d 4070908800 0 4 0 1 8 0 F"
    status = "\n".join(f"[GNUPG:] {ln}" for ln in status.splitlines())
    with pytest.raises(IntegrityError, match="after it expired"):
        gpg.archived_signer(status, "x", {"F": 1609459200})
    with pytest.raises(IntegrityError, match="in the future"):
        gpg.archived_signer(status, "x", {"F": 4102444800 + 10**6}, now=MADE)


def test_signatures_by_a_revoked_key_are_refused(revoked: tuple[Path, Path], tmp_path: Path) -> None:
    secret, public = revoked
    data = tmp_path / "repomd.xml"
    data.write_text("<repomd/>\n")
    with gpg.Keyring([secret]) as kr:  # the signer's own keyring does not know of the revocation
        kr.sign_detached(data, tmp_path / "repomd.xml.asc")
        kr.clearsign(data, tmp_path / "InRelease")
        fpr = kr.secret_fingerprints()[0]
    message = rf"signed by key {fpr} \(Revoked Key <test@cernvm.test>\), which has been revoked"
    with gpg.Keyring([public]) as kr:
        with pytest.raises(IntegrityError, match=message):
            kr.verify_detached(tmp_path / "repomd.xml.asc", data)
        with pytest.raises(IntegrityError, match=message):
            kr.verify_clearsigned(tmp_path / "InRelease")


def test_a_key_that_expires_later_is_still_good(keys: tuple[Path, Path], tmp_path: Path) -> None:
    secret, public = gpg.generate_test_key(tmp_path / "k", name="Expires Later", expire="1y")
    data = tmp_path / "f"
    data.write_text("x")
    with gpg.Keyring([secret]) as kr:
        kr.sign_detached(data, tmp_path / "f.asc")
        fpr = kr.secret_fingerprints()[0]
    with gpg.Keyring([public]) as kr:
        assert kr.verify_detached(tmp_path / "f.asc", data) == fpr


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("NEWSIG\nEXPSIG 0123 A\nVALIDSIG F d 1 0 4 0 1 10 00 PRIMARY", "the signature by key PRIMARY"),
        ("NEWSIG\nKEYREVOKED\nGOODSIG 0123 A\nVALIDSIG F d 1 0 4 0 1 10 00 P", "has been revoked"),
        ("NEWSIG\nKEYEXPIRED 1577836800\nGOODSIG 0 A\nVALIDSIG F d 1 0 4 0 1 1 0 P", "expired on 2020-01-01"),
        ("NEWSIG\nBADSIG 0123 A", "bad signature"),
        ("NEWSIG\nERRSIG 0123 1 10 00 1 9\nNO_PUBKEY 0123", "unknown key"),
        ("", "no valid signature"),
    ],
)  # fmt: skip
def test_status_lines_that_do_not_make_a_good_signature(status: str, message: str) -> None:
    lines = "\n".join(f"[GNUPG:] {ln}" for ln in status.splitlines())
    with pytest.raises(IntegrityError, match=message):
        gpg.valid_signer(lines, "f")


def test_one_good_signature_among_worthless_ones_is_enough() -> None:
    status = (
        "[GNUPG:] NEWSIG\n[GNUPG:] EXPKEYSIG 0123 Old\n[GNUPG:] VALIDSIG F d 1 0 4 0 1 10 00 OLD\n"
        "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 4567 New\n[GNUPG:] VALIDSIG G d 1 0 4 0 1 10 00 NEW\n"
    )
    assert gpg.valid_signer(status, "f") == "NEW"


def test_a_key_file_that_does_not_import_is_one_line_and_leaves_no_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--key /dev/zero`` (images pull, releaseKeys) filled the memory and a folder was an
    IsADirectoryError traceback; any refused key left the temporary GNUPGHOME behind (``with`` runs no
    ``__exit__`` when ``__enter__`` raises)."""
    import os

    from cernvm_build.errors import CernVMError

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    notakey = tmp_path / "notakey.asc"
    notakey.write_text("not a key\n")
    fifo = tmp_path / "fifo.asc"
    os.mkfifo(fifo)
    big = tmp_path / "big.asc"
    big.write_bytes(b"\0" * (gpg.MAX_KEY_FILE + 1))
    for bad, said in (
        (Path("/dev/zero"), "not a regular file"),
        (tmp_path, "not a regular file"),
        (fifo, "not a regular file"),
        (big, "larger than"),
        (notakey, "no OpenPGP key"),
    ):
        with pytest.raises(CernVMError, match=said), gpg.Keyring([bad]):
            pass
    assert list(temp.iterdir()) == []


def test_a_killed_keyring_s_home_and_agent_are_reclaimed_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr19e finding 10: a run SIGKILLed inside ``gpg.Keyring`` (mirror, release signing) left its
    ``cernvm-gpg-<rnd>`` home in the temp folder (the keys it imported) and its gpg-agent running,
    for ever: ``__exit__`` never ran. The home names its pid; the next keyring reclaims it."""
    import signal
    import subprocess
    import sys
    import tempfile

    script = (
        "import os, signal\n"
        "from cernvm_build import gpg\n"
        "with gpg.Keyring([]) as k:\n"
        "    (k.home / 'secret').write_text('x')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (dead,) = tmp_path.iterdir()
    assert (dead / "secret").is_file()
    other = tmp_path / "cernvm-gpg-notapid-x"  # not a name we give: kept
    other.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with gpg.Keyring([]) as k:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([k.home.name, other.name])
    assert [p.name for p in tmp_path.iterdir()] == [other.name]
