"""Pure-Python RSA for CernVM-FS signatures (stdlib only: it also runs inside the initrd).

- a tiny DER reader for PEM/DER public keys (SubjectPublicKeyInfo and PKCS#1), X.509 certificates
  and, for the publisher, PKCS#1/PKCS#8 private keys;
- RSASSA-PKCS1-v1_5 verification with SHA-1 (the manifest signature);
- raw type-1 padding recovery (the whitelist signature: the master key "encrypts" the hex hash).

Only public operations live here: they work on public data, so timing side channels do not matter.
Signing (private keys) goes through OpenSSL (``masterkey``) and ``cryptography`` (``keys``), which blind
and run in constant time; the DER private-key reader remains for key checks in tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from ..errors import CvmfsError, IntegrityError
from .limits import MAX_RSA_BITS

_RSA_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
_SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


class DerError(ValueError):
    pass


class PublicKey:
    """An RSA public key: modulus and exponent. Compared and hashed by value."""

    __slots__ = ("e", "n")

    def __init__(self, n: int, e: int) -> None:
        self.n = n
        self.e = e

    def __eq__(self, other: object) -> bool:
        if type(other) is not PublicKey:
            return NotImplemented
        return self.n == other.n and self.e == other.e

    def __hash__(self) -> int:
        return hash((self.n, self.e))

    @property
    def size(self) -> int:
        """Modulus length in bytes."""
        return (self.n.bit_length() + 7) // 8


class PrivateKey:
    """An RSA private key: modulus, public and private exponents."""

    __slots__ = ("d", "e", "n")

    def __init__(self, n: int, e: int, d: int) -> None:
        self.n = n
        self.e = e
        self.d = d

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.n, self.e)


class Certificate:
    """An X.509 certificate's DER bytes and the RSA key it holds."""

    __slots__ = ("der", "public_key")

    def __init__(self, der: bytes, public_key: PublicKey) -> None:
        self.der = der
        self.public_key = public_key


# -- DER -------------------------------------------------------------------------------------


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``."""
    if pos + 2 > len(data):
        raise DerError("truncated DER element")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        nbytes = length & 0x7F
        if nbytes == 0 or nbytes > 4 or pos + nbytes > len(data):
            raise DerError("bad DER length")
        length = int.from_bytes(data[pos : pos + nbytes], "big")
        pos += nbytes
    end = pos + length
    if end > len(data):
        raise DerError("DER element runs past the end")
    return tag, pos, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, s, e = _tlv(data, pos)
        out.append((tag, s, e))
        pos = e
    return out


def _int(data: bytes, el: tuple[int, int, int]) -> int:
    tag, s, e = el
    if tag != 0x02:
        raise DerError("expected INTEGER")
    return int.from_bytes(data[s:e], "big", signed=True)


def _expect(el: tuple[int, int, int], tag: int, what: str) -> tuple[int, int, int]:
    if el[0] != tag:
        raise DerError(f"expected {what}")
    return el


def _rsa_public_pkcs1(data: bytes, start: int, end: int) -> PublicKey:
    seq = _expect(_tlv(data, start), 0x30, "SEQUENCE")
    kids = _children(data, seq[1], seq[2])
    if len(kids) < 2:
        raise DerError("RSAPublicKey needs modulus and exponent")
    n, e = _int(data, kids[0]), _int(data, kids[1])
    # A hostile certificate (read before its signature chain holds) must not buy minutes of pow():
    # refuse moduli and exponents no real key has before any arithmetic.
    if n.bit_length() > MAX_RSA_BITS or e.bit_length() > 64 or n < 3 or e < 3:
        raise DerError(f"RSA key with a {n.bit_length()}-bit modulus and a {e.bit_length()}-bit exponent")
    return PublicKey(n, e)


def _spki(data: bytes, el: tuple[int, int, int]) -> PublicKey:
    """SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING }"""
    _expect(el, 0x30, "SubjectPublicKeyInfo")
    alg, bits = _children(data, el[1], el[2])[:2]
    oid = _children(data, alg[1], alg[2])[0]
    if oid[0] != 0x06 or data[oid[1] : oid[2]] != _RSA_OID:
        raise DerError("not an RSA key")
    _expect(bits, 0x03, "BIT STRING")
    return _rsa_public_pkcs1(data, bits[1] + 1, bits[2])


def public_key_from_der(der: bytes) -> PublicKey:
    top = _expect(_tlv(der, 0), 0x30, "SEQUENCE")
    kids = _children(der, top[1], top[2])
    if kids and kids[0][0] == 0x30:
        return _spki(der, top)
    return _rsa_public_pkcs1(der, 0, len(der))


def certificate_from_der(der: bytes) -> Certificate:
    cert = _expect(_tlv(der, 0), 0x30, "Certificate")
    tbs = _expect(_children(der, cert[1], cert[2])[0], 0x30, "TBSCertificate")
    fields = _children(der, tbs[1], tbs[2])
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version
        fields = fields[1:]
    # serial, signature, issuer, validity, subject, subjectPublicKeyInfo
    if len(fields) < 6:
        raise DerError("TBSCertificate too short")
    return Certificate(der, _spki(der, fields[5]))


def private_key_from_der(der: bytes) -> PrivateKey:
    top = _expect(_tlv(der, 0), 0x30, "SEQUENCE")
    kids = _children(der, top[1], top[2])
    if len(kids) >= 3 and kids[1][0] == 0x30 and kids[2][0] == 0x04:  # PKCS#8 wrapper
        return private_key_from_der(der[kids[2][1] : kids[2][2]])
    if len(kids) < 4:
        raise DerError("RSAPrivateKey too short")
    return PrivateKey(_int(der, kids[1]), _int(der, kids[2]), _int(der, kids[3]))


# -- PEM -------------------------------------------------------------------------------------

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.S)


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """(label, DER) for each PEM block in ``data``."""
    out = []
    for m in _PEM_RE.finditer(data):
        try:
            der = base64.b64decode(b"".join(m.group(2).split()), validate=True)
        except binascii.Error as e:
            raise DerError(f"bad base64 in PEM block {m.group(1).decode()}") from e
        out.append((m.group(1).decode(), der))
    return out


def load_public_key(data: bytes, where: str = "public key") -> PublicKey:
    """A PEM (``PUBLIC KEY``, ``RSA PUBLIC KEY`` or ``CERTIFICATE``) or DER RSA public key."""
    if not data:
        raise CvmfsError(f"{where}: the key file is empty", hint=_KEY_HINT)
    try:
        blocks = pem_blocks(data)
        if not blocks:
            return public_key_from_der(data)
        for label, der in blocks:
            if label in ("PUBLIC KEY", "RSA PUBLIC KEY"):
                return public_key_from_der(der)
            if label == "CERTIFICATE":
                return certificate_from_der(der).public_key
    except (DerError, IndexError) as e:
        raise CvmfsError(f"{where}: not a readable RSA public key ({e})", hint=_KEY_HINT) from e
    raise CvmfsError(f"{where}: no PUBLIC KEY or CERTIFICATE block found", hint=_KEY_HINT)


#: what --key should name (it named an empty file, a private key or a tar without a word on what to give)
_KEY_HINT = (
    "give the repository's master public key, <fqrn>.pub (a PEM file starting '-----BEGIN PUBLIC KEY-----',"
    " as 'cvmfs keygen' writes and /etc/cvmfs/keys/ holds)"
)


def load_certificate(data: bytes, where: str = "certificate") -> Certificate:
    """An X.509 certificate in PEM (the first CERTIFICATE block) or DER."""
    try:
        blocks = pem_blocks(data)
        if not blocks:
            return certificate_from_der(data)
        for label, der in blocks:
            if label in ("CERTIFICATE", "TRUSTED CERTIFICATE", "X509 CERTIFICATE"):
                return certificate_from_der(der)
    except (DerError, IndexError) as e:
        raise CvmfsError(f"{where}: not a readable X.509 certificate ({e})") from e
    raise CvmfsError(f"{where}: no CERTIFICATE block found")


def load_private_key(data: bytes, where: str = "private key") -> PrivateKey:
    """An unencrypted PEM (``RSA PRIVATE KEY`` or ``PRIVATE KEY``) or DER RSA private key."""
    try:
        blocks = pem_blocks(data)
        if not blocks:
            return private_key_from_der(data)
        for label, der in blocks:
            if label in ("RSA PRIVATE KEY", "PRIVATE KEY"):
                return private_key_from_der(der)
    except (DerError, IndexError) as e:
        raise CvmfsError(f"{where}: not a readable RSA private key ({e})") from e
    raise CvmfsError(f"{where}: no unencrypted RSA PRIVATE KEY block found")


# -- PKCS#1 v1.5 -----------------------------------------------------------------------------


def _public_op(key: PublicKey, signature: bytes) -> bytes | None:
    if len(signature) != key.size:
        return None
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        return None
    return pow(s, key.e, key.n).to_bytes(key.size, "big")


def _type1_payload(em: bytes) -> bytes | None:
    """The message inside ``00 01 FF..FF 00 M`` (at least 8 FF bytes), else None."""
    if len(em) < 11 or em[0] != 0 or em[1] != 1:
        return None
    sep = em.find(b"\x00", 2)
    if sep < 10 or em[2:sep] != b"\xff" * (sep - 2):
        return None
    return em[sep + 1 :]


def recover_raw(key: PublicKey, signature: bytes) -> bytes | None:
    """What a raw PKCS#1 type-1 signature (``RSA_private_encrypt``) carries, or None if malformed."""
    em = _public_op(key, signature)
    return None if em is None else _type1_payload(em)


def verify_pkcs1_sha1(key: PublicKey, message: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-1 over ``message``."""
    payload = recover_raw(key, signature)
    return payload == _SHA1_DIGEST_INFO + hashlib.sha1(message).digest()


def verify_raw(keys: list[PublicKey], message: bytes, signature: bytes) -> bool:
    """True if any key's raw type-1 recovery of ``signature`` gives exactly ``message``."""
    return any(recover_raw(k, signature) == message for k in keys)


def require(ok: bool, message: str, hint: str | None = None) -> None:
    """Raise IntegrityError(message) unless ``ok``."""
    if not ok:
        raise IntegrityError(message, hint=hint)
