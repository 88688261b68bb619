"""CernVM's in-band image signature: a 64 KiB trailer appended to iso and hdd images.

Firmware and hypervisors ignore bytes past the end of the filesystem/partitions, so the image stays
bootable. Layout (as the real μCernVM ``sign.sh``): the first 32 KiB hold JSON metadata
(``ucernvm-version``, ``os-repo``, ``snapshot`` and more), NUL-padded; the second 32 KiB hold JSON
with the base64 DER ``certificate`` and the base64 ``signature``, which covers the image plus the
first block. Signatures are RSA PKCS#1 v1.5 over SHA-256 (the ``algorithm`` field says so).

The signing time of a reproducible image is its build time (SOURCE_DATE_EPOCH), recorded in the
signed first block as ``source-date-epoch``: the certificate must be valid then (``check_signing_time``
at build, ``validity`` at verify), not at the clock's time — a rebuild years later makes the same
decision, and an image verified after its certificate expired is good with a warning. An image whose
block records no build time is checked against no time (not against one an attacker could choose).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from .. import jsonable, utcdate
from ..context import MAX_EPOCH
from ..errors import BuildError, IntegrityError, UsageError
from ..fsutil import open_regular, read_capped, sha256_file

BLOCK = 32 * 1024
TRAILER = 2 * BLOCK
MAGIC = "ucernvm-signature"
ALGORITHM = "rsa-pkcs1v15-sha256"
MAX_PEM = 1 << 20  # bytes of a key or certificate file (--sign-key, --sign-cert, --cert)


@dataclass(frozen=True)
class Signer:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    def identity(self) -> str:
        """SHA-256 of the certificate (DER): which signer, for cache keys and records."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class Trailer:
    metadata: dict[str, Any]
    certificate: x509.Certificate | None
    signature: bytes | None
    algorithm: str | None
    image_size: int  # bytes before the trailer


#: what ``--cert`` wants, for each way it can be wrong (pr19d finding 5: no hint)
CERT_HINT = (
    "give the release signer's certificate (PEM, '-----BEGIN CERTIFICATE-----'), e.g. the .crt "
    "beside the key the image was signed with; not its public key"
)


def _read_pem(path: Path, flag: str, hint: str = "give the path of a PEM file") -> bytes:
    """A key or certificate file the user names: a regular file of at most MAX_PEM bytes
    (``/dev/zero`` filled the memory, a FIFO was waited on for ever). A file that cannot be read is
    said so: "not a PEM X.509 certificate ([Errno 2] No such file ...)" was about a missing file."""
    try:
        return read_capped(path, MAX_PEM)
    except OSError as e:
        raise BuildError(f"{path}: cannot read it: {e.strerror or e}", where=flag, hint=hint) from None


def load_signer(key_pem: Path, cert_pem: Path) -> Signer:
    try:
        key = serialization.load_pem_private_key(_read_pem(key_pem, "--sign-key"), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise BuildError(
            f"{key_pem}: not a readable unencrypted PEM private key ({e})", where="--sign-key"
        ) from e
    try:
        cert = x509.load_pem_x509_certificate(_read_pem(cert_pem, "--sign-cert"))
    except (OSError, ValueError) as e:
        raise BuildError(f"{cert_pem}: not a PEM X.509 certificate ({e})", where="--sign-cert") from e
    if not isinstance(key, rsa.RSAPrivateKey):
        raise BuildError(f"{key_pem}: only RSA keys can sign images", where="--sign-key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise BuildError(
            f"{cert_pem}: certificate does not belong to {key_pem}",
            hint="pass the matching key and certificate",
        )
    return Signer(key=key, certificate=cert)


#: the first block's key for the build time, the image's signing time (seconds since the epoch)
BUILD_TIME = "source-date-epoch"


def _cert_span(cert: x509.Certificate) -> tuple[int, int]:
    return (
        int(cert.not_valid_before_utc.timestamp()),
        int(cert.not_valid_after_utc.timestamp()),
    )


def check_signing_time(cert: x509.Certificate, epoch: int, where: str = "--sign-cert") -> None:
    """Refuse to sign an image built at ``epoch`` with a certificate not valid then: its signature
    would be one the certificate never covered (and ``verify`` refuses it)."""
    start, end = _cert_span(cert)
    if not start <= epoch <= end:
        raise BuildError(
            f"the certificate is valid from {utcdate.text(start)} to {utcdate.text(end)}, not at the "
            f"image's build time {utcdate.text(epoch)} (SOURCE_DATE_EPOCH)",
            where=where,
            hint=(
                "no build time was given (SOURCE_DATE_EPOCH unset means 1970-01-01): set it to the signing "
                "time, e.g. SOURCE_DATE_EPOCH=$(date +%s)"
                if epoch == 0
                else "sign with a certificate valid at the build time, or build at a time within its validity"
            ),
        )


@dataclass(frozen=True)
class Validity:
    """The certificate's validity against the image's signing time (its recorded build time)."""

    not_before: str
    not_after: str
    build_time: str | None  # None: the signed block records none, and nothing was checked
    valid_when_signed: bool | None
    expired_on: str | None  # the certificate expired since the signing (a warning)


def validity(t: Trailer, now: dt.datetime | None = None) -> Validity | None:
    """``t``'s certificate against the build time its signed first block records (None: unsigned)."""
    if t.certificate is None:
        return None
    start, end = _cert_span(t.certificate)
    recorded = t.metadata.get(BUILD_TIME)
    stamp = recorded if isinstance(recorded, int) and not isinstance(recorded, bool) else None
    clock = int((now or dt.datetime.now(dt.UTC)).timestamp())
    valid = None if stamp is None else start <= stamp <= end
    # a time no certificate covers (past year 9999, before 1970) is shown as recorded, not as a date
    shown = None if stamp is None else utcdate.text(stamp) if 0 <= stamp <= MAX_EPOCH else str(stamp)
    return Validity(
        not_before=utcdate.text(start),
        not_after=utcdate.text(end),
        build_time=shown,
        valid_when_signed=valid,
        expired_on=utcdate.text(end)[:10] if valid and end < clock else None,
    )


def _block(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    if len(data) > BLOCK:
        raise BuildError(f"signature metadata is {len(data)} bytes, more than {BLOCK}")
    return data.ljust(BLOCK, b"\0")


def _digest_file(path: Path, size: int, extra: bytes) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    h.update(extra)
    return h.digest()


def trailer_bytes(image: Path, metadata: dict[str, Any], signer: Signer | None) -> bytes:
    """The 64 KiB to append to ``image`` (which must not have a trailer yet)."""
    meta = _block({"magic": MAGIC, **metadata})
    sig: dict[str, Any] = {"algorithm": None, "certificate": None, "signature": None}
    if signer is not None:
        digest = _digest_file(image, image.stat().st_size, meta)

        signature = signer.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        der = signer.certificate.public_bytes(serialization.Encoding.DER)
        sig = {
            "algorithm": ALGORITHM,
            "certificate": base64.b64encode(der).decode(),
            "signature": base64.b64encode(signature).decode(),
        }
    return meta + _block(sig)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_block(block: bytes) -> Any:
    """One block's JSON: strict (``NaN``/``Infinity``, which ``json`` reads, would make ``--json``
    output that is no JSON)."""
    return json.loads(block.rstrip(b"\0"), parse_constant=_refuse_constant)


def read_trailer(image: Path) -> Trailer:
    """The trailer of ``image``, or an IntegrityError when it has none."""
    try:
        st = image.stat()
    except OSError as e:
        raise UsageError(
            f"{e.strerror}", where=str(image), hint="give the path of an iso or hdd image"
        ) from e
    if not stat.S_ISREG(st.st_mode):  # a small folder or a FIFO was "too small to carry a signature block"
        raise UsageError("not a regular file", where=str(image), hint="give the path of an iso or hdd image")
    size = st.st_size
    if size < TRAILER:
        raise IntegrityError(
            "too small to carry a signature block", where=str(image), hint="is this a μCernVM image?"
        )
    try:
        with open_regular(image) as f:  # a folder is refused, not a traceback
            f.seek(size - TRAILER)
            raw = f.read(TRAILER)
    except OSError as e:
        raise UsageError(
            f"{e.strerror}", where=str(image), hint="give the path of an iso or hdd image"
        ) from None
    try:
        meta = _json_block(raw[:BLOCK])
        sig = _json_block(raw[BLOCK:])
    except (ValueError, RecursionError):  # RecursionError: ``[[[[…`` nested past the decoder's depth
        raise IntegrityError(
            "no μCernVM signature block at the end",
            where=str(image),
            hint="only iso and hdd images carry one",
        ) from None
    if not isinstance(meta, dict) or meta.get("magic") != MAGIC or not isinstance(sig, dict):
        raise IntegrityError(
            "no μCernVM signature block at the end", where=str(image), hint="only iso and hdd carry one"
        )
    cert = None
    try:
        if sig.get("certificate"):
            cert = x509.load_der_x509_certificate(base64.b64decode(sig["certificate"]))
            # parsed lazily: a subject that is no valid string or an unknown key type raised only
            # later, in ``describe``/``verify``, as a traceback
            cert.subject.rfc4514_string()
            cert.public_key()
        signature = base64.b64decode(sig["signature"]) if sig.get("signature") else None
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise IntegrityError(f"the signature block is damaged ({e})", where=str(image)) from e
    meta.pop("magic", None)
    return Trailer(meta, cert, signature, sig.get("algorithm"), size - TRAILER)


def verify(image: Path, trusted: x509.Certificate | None = None) -> Trailer:
    """Check the signature of ``image`` (and that it was made by ``trusted`` when given)."""
    t = read_trailer(image)
    if t.signature is None or t.certificate is None:
        raise IntegrityError(
            "the image is not signed", where=str(image), hint="build it with --sign-key and --sign-cert"
        )
    if t.algorithm != ALGORITHM:
        raise IntegrityError(f"unknown signature algorithm {t.algorithm!r}", where=str(image))
    if trusted is not None and t.certificate.fingerprint(hashes.SHA256()) != trusted.fingerprint(
        hashes.SHA256()
    ):
        raise IntegrityError(
            f"signed by '{t.certificate.subject.rfc4514_string()}', not by the given certificate",
            where=str(image),
            hint="pass the certificate of the release signer with --cert",
        )
    with open(image, "rb") as f:
        f.seek(t.image_size)
        meta_block = f.read(BLOCK)
    digest = _digest_file(image, t.image_size, meta_block)

    pub = t.certificate.public_key()
    if not isinstance(pub, rsa.RSAPublicKey):
        raise IntegrityError("the certificate does not hold an RSA key", where=str(image))
    try:
        pub.verify(t.signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    except InvalidSignature as e:
        raise IntegrityError(
            "signature does not match the image (modified after signing)",
            where=str(image),
            hint="download the image again and compare its .sha256",
        ) from e
    v = validity(t)
    if v is not None and v.valid_when_signed is False:
        raise IntegrityError(
            f"signed with a certificate valid from {v.not_before} to {v.not_after}, not at the "
            f"image's build time {v.build_time}",
            where=str(image),
            hint="the certificate never covered this signature: do not trust the image",
        )
    return t


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read_pem(path, "--cert", CERT_HINT))
    except (OSError, ValueError) as e:
        raise BuildError(
            f"{path}: not a PEM X.509 certificate ({e})",
            where="--cert",
            hint=CERT_HINT,
        ) from e


def describe(image: Path, t: Trailer) -> dict[str, Any]:
    """What ``image inspect``/``verify`` report about an image and its signature block."""
    cert = t.certificate
    return {
        "image": str(image),
        "sha256": sha256_file(image),
        "metadata": t.metadata,
        "signed": t.signature is not None,
        "algorithm": t.algorithm,
        "signer": cert.subject.rfc4514_string() if cert else None,
        "signer_sha256": cert.fingerprint(hashes.SHA256()).hex() if cert else None,
        "certificate_validity": jsonable.encode(validity(t)),
    }
