"""The repository whitelist ``.cvmfswhitelist``: parse and serialize.

It lists the fingerprints of the certificates allowed to sign the manifest, for one repository and
until an expiry date, and is signed with the repository's master key (raw PKCS#1 type-1 padding of
the hex hash of the body, no DigestInfo).
"""

from __future__ import annotations

import datetime as dt
import re

from ..errors import CvmfsError
from ..numtext import decimal

_STAMP = "%Y%m%d%H%M%S"
_FPR_RE = re.compile(r"^([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+)(-[A-Za-z0-9]+)?\Z")


class Whitelist:
    """A repository whitelist (``.cvmfswhitelist``): its dates (UTC, tz-aware; ``expires`` as
    written, seconds precision), name and certificate fingerprints ("AB:CD:..." upper case, with a
    "-RMD160"-style suffix if any)."""

    __slots__ = ("cachain", "created", "expires", "fingerprints", "fqrn", "pkcs7")

    def __init__(
        self,
        created: dt.datetime,
        expires: dt.datetime,
        fqrn: str,
        fingerprints: tuple[str, ...],
        pkcs7: bool = False,
        cachain: bool = False,
    ) -> None:
        self.created = created
        self.expires = expires
        self.fqrn = fqrn
        self.fingerprints = fingerprints
        self.pkcs7 = pkcs7
        self.cachain = cachain

    @property
    def expiry_checked(self) -> dt.datetime:
        """The client compares at hour granularity: minutes and seconds are dropped."""
        return self.expires.replace(minute=0, second=0)

    def expired(self, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.UTC)
        return now >= self.expiry_checked

    def lists(self, fingerprint: str) -> bool:
        return fingerprint.upper() in self.fingerprints


def _stamp(text: str, where: str, what: str) -> dt.datetime:
    if len(text) != 14 or decimal(text, 14) is None:
        raise CvmfsError(f"{where}: {what} is not YYYYMMDDhhmmss: {text!r}")
    # by hand, not strptime: that imports _strptime and calendar into the mount's start
    try:
        y, mo, d, h, mi, s = (
            int(text[i : i + n]) for i, n in ((0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2))
        )
        return dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC)
    except ValueError as e:
        raise CvmfsError(f"{where}: {what} is not a valid date: {text!r}") from e


def parse(body: bytes, where: str = ".cvmfswhitelist") -> Whitelist:
    """Parse the body (the part before ``--``; a full signed file also works)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        text = body.split(b"\n--\n")[0].decode("ascii", errors="replace")
    lines = text.split("\n")
    if len(lines) < 3:
        raise CvmfsError(f"{where}: too short to be a whitelist")
    created = _stamp(lines[0].rstrip("\r"), f"{where}:1", "creation time")
    e_line = lines[1].rstrip("\r")
    if not e_line.startswith("E"):
        raise CvmfsError(f"{where}:2: expected 'E<expiry>' line, got {e_line[:20]!r}")
    expires = _stamp(e_line[1:], f"{where}:2", "expiry")
    n_line = lines[2].rstrip("\r")
    if not n_line.startswith("N"):
        raise CvmfsError(f"{where}:3: expected 'N<repository name>' line, got {n_line[:40]!r}")
    fqrn = n_line[1:]
    pkcs7 = cachain = False
    fprs: list[str] = []
    for lineno, raw in enumerate(lines[3:], start=4):
        line = raw.rstrip("\r")
        if line == "--":
            break
        if not line:
            continue
        if line == "Vpkcs7":
            pkcs7 = True
            continue
        if line == "Wcachain":
            cachain = True
            continue
        token = re.split(r"[ \t#]", line, maxsplit=1)[0]
        if not _FPR_RE.match(token):
            raise CvmfsError(f"{where}:{lineno}: not a certificate fingerprint: {line[:60]!r}")
        fprs.append(token.upper())
    return Whitelist(created, expires, fqrn, tuple(fprs), pkcs7, cachain)


def serialize(w: Whitelist) -> bytes:
    """The unsigned body, as the server writes it."""
    lines = [
        w.created.astimezone(dt.UTC).strftime(_STAMP),
        "E" + w.expires.astimezone(dt.UTC).strftime(_STAMP),
        "N" + w.fqrn,
    ]
    if w.pkcs7:
        lines.append("Vpkcs7")
    if w.cachain:
        lines.append("Wcachain")
    lines.extend(w.fingerprints)
    return ("\n".join(lines) + "\n").encode("ascii")


def fingerprint(cert_der: bytes, algorithm: str = "sha1") -> str:
    """``AB:CD:...`` fingerprint of a DER certificate, as whitelists list it."""
    from .objects import hash_bytes

    h = hash_bytes(cert_der, algorithm)
    text = ":".join(h.hex[i : i + 2] for i in range(0, len(h.hex), 2)).upper()
    suffix = {"sha1": "", "rmd160": "-RMD160", "shake128": "-SHAKE128"}[algorithm]
    return text + suffix
