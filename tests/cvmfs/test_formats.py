"""Byte-level formats: manifest, whitelist, RSA, object names, catalog keys (no network)."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import zlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa as crsa

from cernvm_build.cvmfs import manifest, objects, rsa, whitelist
from cernvm_build.cvmfs.catalog import md5_pair, parse_xattrs
from cernvm_build.cvmfs.history import parse_date
from cernvm_build.cvmfs.masterkey import FileMasterKey
from cernvm_build.errors import CvmfsError

from .conftest import FIXTURE, FQRN, ROOT_REV2

REPO = FIXTURE / "repo"


def test_manifest_parses_and_serializes_byte_for_byte() -> None:
    data = (REPO / ".cvmfspublished").read_bytes()
    signed = manifest.split_signed(data, "m")
    m = manifest.parse(signed.body)
    assert (m.root_hash, m.revision, m.fqrn, m.root_size, m.ttl) == (ROOT_REV2, 2, FQRN, 65536, 240)
    assert m.history_hash and m.certificate_hash and m.timestamp > 0
    assert manifest.serialize(m) == signed.body
    assert manifest.body_hash(signed.body) == signed.hash_text
    assert manifest.join_signed(signed.body, signed.hash_text, signed.signature) == data


def test_manifest_missing_field_is_named() -> None:
    with pytest.raises(CvmfsError, match="required field 'S' missing"):
        manifest.parse(b"C" + b"a" * 40 + b"\nRd41d8cd98f00b204e9800998ecf8427e\nD240\n")
    with pytest.raises(CvmfsError, match="no signature block"):
        manifest.split_signed(b"Cabc\nS1\n", "x")


def test_whitelist_parses_and_serializes_byte_for_byte() -> None:
    data = (REPO / ".cvmfswhitelist").read_bytes()
    signed = manifest.split_signed(data, "w")
    w = whitelist.parse(signed.body)
    assert w.fqrn == FQRN and len(w.fingerprints) == 1
    assert w.expires.year - w.created.year == 10
    assert whitelist.serialize(w) == signed.body


def test_whitelist_expiry_is_checked_at_hour_granularity() -> None:
    w = whitelist.Whitelist(
        created=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        expires=dt.datetime(2026, 2, 1, 10, 45, 0, tzinfo=dt.UTC),
        fqrn="x.y",
        fingerprints=("AA:BB",),
    )
    assert not w.expired(dt.datetime(2026, 2, 1, 9, 59, tzinfo=dt.UTC))
    assert w.expired(dt.datetime(2026, 2, 1, 10, 0, 1, tzinfo=dt.UTC))


def test_whitelist_bad_lines_name_their_line() -> None:
    with pytest.raises(CvmfsError, match=r":2: expected 'E<expiry>'"):
        whitelist.parse(b"20260101000000\nX\nNx\n")
    with pytest.raises(CvmfsError, match=r":4: not a certificate fingerprint"):
        whitelist.parse(b"20260101000000\nE20270101000000\nNx\nnot-a-fingerprint\n")


def test_whitelist_dates_are_read_as_strptime_read_them() -> None:
    """The dates are parsed by hand (strptime imports two modules into the mount's start): the same
    datetimes, and an impossible date is the same one-line error."""
    w = whitelist.parse(b"20260228235959\nE20991231235959\nNx\n")
    assert w.created == dt.datetime.strptime("20260228235959", "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    assert w.expires == dt.datetime(2099, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    for bad, line in (
        (b"20260230000000", 1),
        (b"20261301000000", 1),
        (b"00000101000000", 1),
        (b"20260101246000", 2),
    ):
        body = bad + b"\nE20270101000000\nNx\n" if line == 1 else b"20260101000000\nE" + bad + b"\nNx\n"
        with pytest.raises(CvmfsError, match=rf":{line}: .* is not a valid date"):
            whitelist.parse(body)
    with pytest.raises(CvmfsError, match=r":1: creation time is not YYYYMMDDhhmmss"):
        whitelist.parse(b"2026010100000\nE20270101000000\nNx\n")


def test_fixture_signatures_verify_with_pure_python_rsa() -> None:
    m_signed = manifest.split_signed((REPO / ".cvmfspublished").read_bytes(), "m")
    m = manifest.parse(m_signed.body)
    assert m.certificate_hash
    cert_obj = (REPO / objects.object_path(m.certificate_hash, "X")).read_bytes()
    assert str(objects.hash_bytes(cert_obj)) == m.certificate_hash
    cert = rsa.load_certificate(zlib.decompress(cert_obj))
    assert rsa.verify_pkcs1_sha1(cert.public_key, m_signed.hash_text.encode(), m_signed.signature)
    assert not rsa.verify_pkcs1_sha1(cert.public_key, b"0" * 40, m_signed.signature)

    w_signed = manifest.split_signed((REPO / ".cvmfswhitelist").read_bytes(), "w")
    pub = rsa.load_public_key((FIXTURE / "keys" / f"{FQRN}.pub").read_bytes())
    assert rsa.verify_raw([pub], w_signed.hash_text.encode(), w_signed.signature)
    assert whitelist.parse(w_signed.body).lists(whitelist.fingerprint(cert.der))
    # The master key signs the whitelist, not the manifest.
    assert not rsa.verify_raw([pub], m_signed.hash_text.encode(), m_signed.signature)


def test_raw_signing_reproduces_the_real_tools_signature() -> None:
    """Our whitelist signing (OpenSSL pkeyutl, PKCS#1 type 1 over the raw hex hash) makes the very
    bytes cvmfs_server made with the same master key."""
    w_signed = manifest.split_signed((REPO / ".cvmfswhitelist").read_bytes(), "w")
    key = FileMasterKey((FIXTURE / "keys" / f"{FQRN}.masterkey").read_bytes())
    assert key.sign_raw(w_signed.hash_text.encode()) == w_signed.signature


def test_rsa_agrees_with_cryptography() -> None:
    key = crsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pkcs1 = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    ours = rsa.load_public_key(pem)
    assert ours == rsa.load_public_key(pkcs1)
    assert ours.n == key.public_key().public_numbers().n
    sig = key.sign(b"abc123", padding.PKCS1v15(), hashes.SHA1())
    assert rsa.verify_pkcs1_sha1(ours, b"abc123", sig)
    assert not rsa.verify_pkcs1_sha1(ours, b"abc124", sig)
    assert not rsa.verify_pkcs1_sha1(ours, b"abc123", sig[:-1])
    n = key.private_numbers()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    raw = FileMasterKey(private_pem).sign_raw(b"hexhash")
    assert key.public_key().recover_data_from_signature(raw, padding.PKCS1v15(), None) == b"hexhash"
    assert rsa.recover_raw(ours, raw) == b"hexhash"
    assert rsa.load_private_key(private_pem).d == n.d


def test_bad_key_files_are_one_line_errors() -> None:
    with pytest.raises(CvmfsError, match="no PUBLIC KEY"):
        rsa.load_public_key(b"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n", where="k.pub")
    with pytest.raises(CvmfsError, match=r"k\.pub: not a readable RSA public key"):
        rsa.load_public_key(b"garbage", where="k.pub")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "k.pub: the key file is empty"),
        (b"garbage", "k.pub: not a readable RSA public key ("),
        (
            b"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n",
            "k.pub: no PUBLIC KEY or CERTIFICATE block found",
        ),
    ],
    ids=["empty", "garbage", "other-pem"],
)
def test_a_bad_key_file_says_what_a_key_file_is(data: bytes, message: str) -> None:
    """--key naming an empty or wrong file was a line without a hint (rv34a)."""
    with pytest.raises(CvmfsError) as e:
        rsa.load_public_key(data, where="k.pub")
    assert str(e.value).startswith(message)
    assert "<fqrn>.pub" in (e.value.hint or "") and "BEGIN PUBLIC KEY" in (e.value.hint or "")


def test_object_names_and_algorithms() -> None:
    h = objects.parse_hash("AB" + "c" * 38 + "-rmd160")
    assert h.algorithm == "rmd160" and str(h) == "ab" + "c" * 38 + "-rmd160"
    assert h.path("C") == "data/ab/" + "c" * 38 + "-rmd160C"
    assert objects.object_path("1234", "") == "data/12/34"
    assert len(objects.hash_bytes(b"x", "shake128").hex) == 40
    assert objects.hash_bytes(b"x", "shake128").hex == hashlib.shake_128(b"x").hexdigest(20)
    assert objects.algorithm_from_flags(4 | (1 << 8)) == "rmd160"
    assert objects.algorithm_from_flags(4 | (2 << 8)) == "shake128"
    with pytest.raises(ValueError):
        objects.parse_hash("xyz")
    with pytest.raises(zlib.error):
        objects.decompress(zlib.compress(b"abc") + b"junk")


def test_md5_pair_matches_the_real_catalog(tmp_path: object) -> None:
    from cernvm_build.cvmfs.store import ObjectStore  # noqa: F401  (import check only)

    cat_obj = (REPO / objects.object_path(ROOT_REV2, "C")).read_bytes()
    db = tmp_path / "c.db"  # type: ignore[operator]
    db.write_bytes(zlib.decompress(cat_obj))
    con = sqlite3.connect(db)
    row = con.execute(
        "SELECT md5path_1, md5path_2, parent_1, parent_2 FROM catalog WHERE name='bin'"
    ).fetchone()
    assert tuple(row[:2]) == md5_pair("/usr/bin")
    assert tuple(row[2:]) == md5_pair("/usr")
    root = con.execute(
        "SELECT md5path_1, md5path_2, parent_1, parent_2 FROM catalog WHERE name=''"
    ).fetchone()
    assert tuple(root) == (*md5_pair("/"), 0, 0)


def test_xattr_blob() -> None:
    blob = bytes([1, 2, 3, 2]) + b"a.bxy" + bytes([1, 0]) + b"c"
    assert parse_xattrs(blob, "w") == {"a.b": b"xy", "c": b""}
    with pytest.raises(CvmfsError, match="truncated"):
        parse_xattrs(bytes([1, 1, 5, 5]) + b"ab", "w")


def test_snapshot_date_format_is_strict() -> None:
    assert parse_date("1970-01-02T00:00:00Z") == 86400
    with pytest.raises(CvmfsError, match="YYYY-MM-DDTHH:MM:SSZ"):
        parse_date("2026-01-01 00:00:00")
    # lf18: one date rule (utcdate.parse) for the snapshot, the release index and profiles:
    # strptime's digits are any Unicode digit ('\u0662' is Arabic-Indic 2), ours 0-9
    with pytest.raises(CvmfsError, match="is not YYYY-MM-DDTHH:MM:SSZ"):
        parse_date("\u0662\u0660\u0662\u0666-01-01T00:00:00Z")
    with pytest.raises(CvmfsError, match="snapshot date '2026-02-30T00:00:00Z' is not a real date"):
        parse_date("2026-02-30T00:00:00Z")


def test_pure_python_ripemd160_matches_hashlib() -> None:
    import os

    from cernvm_build.cvmfs.ripemd160 import Ripemd160

    assert Ripemd160(b"abc").hexdigest() == "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"
    for n in (0, 55, 56, 63, 64, 65, 200):
        data = os.urandom(n)
        h = Ripemd160()
        h.update(data[:10])
        h.update(data[10:])
        assert h.hexdigest() == hashlib.new("ripemd160", data).hexdigest()
