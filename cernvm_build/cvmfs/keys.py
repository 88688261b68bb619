"""Repository keys: the master key (signs the whitelist) and the certificate (signs the manifest).

A key set lives in a directory as the real server keeps it in ``/etc/cvmfs/keys``:
``<fqrn>.masterkey`` (RSA private key), ``<fqrn>.pub`` (its public half, what clients get as
``CVMFS_PUBLIC_KEY``), ``<fqrn>.crt`` (self-signed X.509 certificate) and ``<fqrn>.key`` (its key).
The master key may instead live on a token (``master_uri``, a ``pkcs11:`` URI; see ``masterkey``).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from ..errors import CvmfsError
from ..fsutil import TooLarge, atomic_write, process_umask, read_capped, reclaim_stale
from . import masterkey
from . import rsa as rsa_raw
from . import whitelist as wl
from .manifest import check_fqrn as check_fqrn  # where it is (stdlib: the reader checks names too)

#: a PEM key or certificate file is a few KiB (pr18d finding 14)
MAX_KEY_FILE_BYTES = 1 << 20

KEY_BITS = 2048
CERT_DAYS = 365


@dataclass(frozen=True)
class KeySet:
    """The four PEM files of a repository."""

    fqrn: str
    master_key_pem: bytes
    public_key_pem: bytes
    cert_pem: bytes
    cert_key_pem: bytes
    master_uri: str | None = None  # a pkcs11: URI when the master key is on a token (no masterkey PEM)

    def save(self, directory: Path) -> list[Path]:
        """Write the four files (private keys mode 0600); returns their paths."""
        make_folder(directory, "--out")
        files = [
            *([(f"{self.fqrn}.masterkey", self.master_key_pem, 0o600)] if self.master_key_pem else []),
            (f"{self.fqrn}.pub", self.public_key_pem, 0o644),
            (f"{self.fqrn}.crt", self.cert_pem, 0o644),
            (f"{self.fqrn}.key", self.cert_key_pem, 0o600),
        ]
        out = []
        for name, data, mode in files:
            # a killed keygen's temporary (a private key among them) stayed beside the keys for ever
            reclaim_stale(directory / name)
            atomic_write(directory / name, data, mode)
            out.append(directory / name)
        return out

    # -- what the publisher needs -------------------------------------------------------------
    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def fingerprint(self) -> str:
        """SHA-1 fingerprint of the certificate, ``AB:CD:…`` as the whitelist lists it."""
        return wl.fingerprint(self.certificate.public_bytes(serialization.Encoding.DER))

    @functools.cached_property
    def _cert_key(self) -> rsa.RSAPrivateKey:
        return _load_private(self.cert_key_pem, Path(f"{self.fqrn}.key"))

    def sign_manifest(self, hash_text: str) -> bytes:
        """RSASSA-PKCS1-v1_5 SHA-1 over the ASCII hex hash, with the certificate's key."""
        return self._cert_key.sign(hash_text.encode("ascii"), padding.PKCS1v15(), hashes.SHA1())

    def sign_whitelist(self, hash_text: str) -> bytes:
        """Raw PKCS#1 type-1 over the ASCII hex hash (no DigestInfo), with the master key (file or
        token, through OpenSSL), checked against ``<fqrn>.pub`` before it is returned."""
        key = masterkey.master_key(self.master_uri, self.master_key_pem or None)
        public = rsa_raw.load_public_key(self.public_key_pem, f"{self.fqrn}.pub")
        return masterkey.sign_checked(key, public, hash_text.encode("ascii"))


def make_folder(directory: Path, flag: str) -> None:
    """``directory`` made if missing; a file there (or above it) is one line naming ``flag``, not a
    FileExistsError/NotADirectoryError traceback (keygen --out, create STRATUM).

    A folder made here is writable by its owner alone whatever the umask: under ``umask 000`` the keys
    folder was 0777, and anyone could replace the 0600 master key in it (or the repository's files).
    So is every folder above it made here (``--out new/keys``): a 0777 parent let anyone rename the
    keys folder away and put another in its place."""
    try:
        made = [p for p in (directory, *directory.parents) if not p.is_dir()]
        directory.mkdir(parents=True, exist_ok=True)
        umask = process_umask()
        if umask & 0o022 != 0o022:
            for folder in made:
                os.chmod(folder, 0o777 & ~umask & ~0o022)
    except OSError as e:
        raise CvmfsError(
            f"{directory}: cannot make the folder: {e.strerror}",
            hint=f"give a folder (or a new name) for {flag}",
        ) from None


def _pem_private(key: rsa.RSAPrivateKey) -> bytes:
    # Traditional "RSA PRIVATE KEY" like `openssl genrsa` writes, which the real tools read.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _pem_public(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def self_signed_certificate(fqrn: str, key: rsa.RSAPrivateKey, *, days: int = CERT_DAYS) -> bytes:
    """A certificate like ``cvmfs_server`` makes: CN "<fqrn> CernVM-FS Release Managers"."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{fqrn} CernVM-FS Release Managers")])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def generate_keys(fqrn: str, *, bits: int = KEY_BITS) -> KeySet:
    """A fresh master key and a certificate key with its self-signed certificate."""
    check_fqrn(fqrn)
    master = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    cert_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return KeySet(
        fqrn=fqrn,
        master_key_pem=_pem_private(master),
        public_key_pem=_pem_public(master.public_key()),
        cert_pem=self_signed_certificate(fqrn, cert_key),
        cert_key_pem=_pem_private(cert_key),
    )


def load_keys(
    directory: Path, fqrn: str, master_key: str | None = None, *, signs_whitelist: bool = True
) -> KeySet:
    """Read ``<fqrn>.{masterkey,pub,crt,key}`` from ``directory`` and check they belong together.

    ``master_key`` names the master key elsewhere: another PEM file, or a ``pkcs11:`` URI of a key on
    a token (then ``<fqrn>.pub`` is required; each signature is checked against it).
    ``signs_whitelist=False`` (publish, tag): the master key may be absent, kept offline as the
    publishing guide advises (a publisher without it was refused, "key file missing"); the
    returned keys then sign manifests only."""
    check_fqrn(fqrn)  # a file name's part: 'hub ingest --hub-fqrn ../x' read <keys>/../x.masterkey (pr21 N5)
    on_token = bool(master_key and master_key.startswith("pkcs11:"))
    paths = {ext: directory / f"{fqrn}.{ext}" for ext in ("masterkey", "pub", "crt", "key")}
    if master_key and not on_token:
        paths["masterkey"] = Path(master_key)
    offline = not signs_whitelist and not master_key and not os.path.lexists(paths["masterkey"])
    if on_token or offline:
        del paths["masterkey"]
    data: dict[str, bytes] = {}
    for ext, path in paths.items():
        try:
            # regular and capped: --master-key /dev/zero read until memory ran out, a FIFO for ever
            data[ext] = read_capped(path, MAX_KEY_FILE_BYTES)
        except FileNotFoundError:
            if ext == "pub" and ("masterkey" in data or offline):
                continue  # derived below, or not needed to sign manifests
            hint = f"create keys with 'cernvm-build cvmfs keygen {fqrn} --out {directory}'"
            if ext == "masterkey" and os.path.lexists(paths["crt"]):
                # new keys would not be the repository's: the missing one is the offline master key
                hint = (
                    "signing the whitelist needs the repository's master key: put it there, or pass"
                    " --master-key FILE (or pkcs11:URI)"
                )
            raise CvmfsError(f"{path}: key file missing", hint=hint) from None
        except TooLarge as e:
            raise CvmfsError(
                f"{path}: key file {e.strerror}", hint="name the PEM file of the key (or certificate)"
            ) from None
        except OSError as e:
            raise CvmfsError(f"{path}: cannot read key file: {e.strerror}") from e
    cert_key = _load_private(data["key"], paths["key"])
    if offline:  # signs manifests only; the .pub, if there, is not used for that
        _check_cert(data, paths, cert_key)
        return KeySet(fqrn, b"", data.get("pub", b""), data["crt"], data["key"])
    if on_token:
        assert master_key is not None
        return _on_token(fqrn, master_key, data, paths, cert_key)
    master = _load_private(data["masterkey"], paths["masterkey"])
    if "pub" not in data:
        data["pub"] = _pem_public(master.public_key())
    try:
        pub = serialization.load_pem_public_key(data["pub"])
    except ValueError as e:
        raise CvmfsError(f"{paths['pub']}: not a PEM public key") from e
    if not isinstance(pub, rsa.RSAPublicKey) or pub.public_numbers() != master.public_key().public_numbers():
        raise CvmfsError(
            f"{paths['pub']}: does not match {paths['masterkey'].name}",
            hint="the .pub file must be the public half of the master key",
        )
    _check_cert(data, paths, cert_key)
    return KeySet(fqrn, data["masterkey"], data["pub"], data["crt"], data["key"])


def _check_cert(data: dict[str, bytes], paths: dict[str, Path], cert_key: rsa.RSAPrivateKey) -> None:
    try:
        cert = x509.load_pem_x509_certificate(data["crt"])
    except ValueError as e:
        raise CvmfsError(f"{paths['crt']}: not a PEM X.509 certificate") from e
    cert_pub = cert.public_key()
    if (
        not isinstance(cert_pub, rsa.RSAPublicKey)
        or cert_pub.public_numbers() != cert_key.public_key().public_numbers()
    ):
        raise CvmfsError(
            f"{paths['crt']}: certificate does not match {paths['key'].name}",
            hint="the .key file must be the private key of the certificate",
        )


def _on_token(
    fqrn: str, uri: str, data: dict[str, bytes], paths: dict[str, Path], cert_key: rsa.RSAPrivateKey
) -> KeySet:
    masterkey.Pkcs11Uri.parse(uri)  # a malformed URI is refused before any work
    if "pub" not in data:
        raise CvmfsError(
            f"{paths['pub']}: key file missing", hint="a master key on a token needs its .pub beside"
        )
    rsa_raw.load_public_key(data["pub"], str(paths["pub"]))
    _check_cert(data, paths, cert_key)
    return KeySet(fqrn, b"", data["pub"], data["crt"], data["key"], master_uri=uri)


def _load_private(pem: bytes, path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise CvmfsError(
            f"{path}: not an unencrypted PEM private key", hint="keys must be PEM without a passphrase"
        ) from e
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CvmfsError(f"{path}: not an RSA key", hint="CernVM-FS signs with RSA keys")
    return key


def keys_exist(directory: Path, fqrn: str) -> bool:
    return all(os.path.exists(directory / f"{fqrn}.{ext}") for ext in ("masterkey", "crt", "key"))
