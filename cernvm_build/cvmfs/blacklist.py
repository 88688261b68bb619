"""The certificate blacklist (``/etc/cvmfs/blacklist``): revoked signing certificates and revision floors.

A whitelist vouches for a certificate until it expires (up to 30 days); a certificate whose key leaked
must stop being trusted at once. The real client reads a blacklist file of lines, each either

- a certificate fingerprint ``AB:CD:...`` (the hash of the DER certificate, as a whitelist lists it:
  40 hex digits of SHA-1, or with a ``-RMD160`` / ``-SHAKE128`` suffix; colons optional, case free;
  anything after a space, tab or ``#`` is a comment): a manifest signed by that certificate is refused;
- ``<REPOSITORY N``: every revision of REPOSITORY below N is refused (a revision published before a
  leak was noticed, or one a replayer may offer).

Comment lines start with ``#``; blank lines are ignored. Several files add up (the real client appends
the config repository's list to the local one): nothing in a later file takes an entry back.

Unlike the real client, which skips a line it cannot read, a line that is neither is an error naming
``file:line``: a mistyped revocation must not be silently ineffective. For the same reason a revision
line with a comment or trailing blanks after N counts (the real client ignores such a line).

Used by ``repository._verify_chain`` (every open: the reader commands, the mount daemon, the
replicator, the monitor, image builds) and by the μCernVM init, which hands the mount the image's
list and the user data's additions. Standard library only: the initrd runtime imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import CvmfsError, IntegrityError
from ..fsutil import TooLarge, read_capped
from ..numtext import decimal
from .limits import MAX_BLACKLIST_BYTES
from .manifest import check_fqrn
from .objects import hash_bytes

#: where the real client looks when ``CVMFS_BLACKLIST`` is unset (read when it exists)
DEFAULT_PATH = Path("/etc/cvmfs/blacklist")

_HEX = re.compile(r"[0-9a-f]+\Z")
#: suffix of a fingerprint -> hash algorithm; no suffix: SHA-1. (The real client would also take 32
#: hex digits as an MD5 fingerprint; no whitelist lists one, and the initrd's Python may lack MD5.)
_SUFFIXED = {"-rmd160": "rmd160", "-shake128": "shake128"}
_FIX = "fix or remove the line (a fingerprint AB:CD:..., '<REPOSITORY REVISION' or a '#' comment)"


class Revoked(IntegrityError):
    """What a blacklist refuses: a certificate it lists, a revision below its floor (the monitor
    reports it as its own problem, ``revoked``)."""


class Blacklist:
    """The entries of one or more blacklist files: ``certificates`` maps (algorithm, lower-case hex)
    to the ``file:line`` that lists it; ``floors`` maps a repository name to the lowest revision it
    may have and the ``file:line`` that says so (the highest of its lines)."""

    __slots__ = ("certificates", "files", "floors")

    def __init__(self) -> None:
        self.certificates: dict[tuple[str, str], str] = {}
        self.floors: dict[str, tuple[int, str]] = {}
        self.files: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.certificates or self.floors)

    def add(self, other: Blacklist) -> None:
        """``other``'s entries too (an entry is never taken back: the first file naming it is kept)."""
        for key, where in other.certificates.items():
            self.certificates.setdefault(key, where)
        for name, (floor, where) in other.floors.items():
            if name not in self.floors or floor > self.floors[name][0]:
                self.floors[name] = (floor, where)
        self.files += other.files

    def certificate_entry(self, cert_der: bytes) -> tuple[str, str] | None:
        """(fingerprint as listed, ``file:line``) when the DER certificate is blacklisted."""
        for algorithm in sorted({a for a, _ in self.certificates}):
            digest = _digest(cert_der, algorithm)
            where = self.certificates.get((algorithm, digest))
            if where is not None:
                return fingerprint_text(digest, algorithm), where
        return None

    def check_certificate(self, fqrn: str, cert_der: bytes, what: str) -> None:
        """IntegrityError naming the repository, the fingerprint and the blacklist line when the
        certificate ``what`` (e.g. ``certificate <hash>X``) is blacklisted."""
        found = self.certificate_entry(cert_der)
        if found is not None:
            fpr, where = found
            raise Revoked(
                f"{fqrn}: the manifest is signed by {what} (fingerprint {fpr}), which is blacklisted "
                f"at {where}",
                hint="the certificate was revoked: the publisher must re-sign the repository with a new "
                "certificate (a new <fqrn>.crt and <fqrn>.key, 'cernvm-build cvmfs resign "
                "--new-certificate', then publish)",
            )

    def check_revision(self, fqrn: str, revision: int, what: str = "revision") -> None:
        """IntegrityError when ``fqrn``'s ``revision`` is below a floor of the blacklist."""
        floor = self.floors.get(fqrn)
        if floor is not None and revision < floor[0]:
            raise Revoked(
                f"{fqrn}: {what} {revision} is blacklisted: revisions below {floor[0]} are refused "
                f"at {floor[1]}",
                hint="the publisher revoked these revisions: use a newer revision (the trunk, a later "
                "tag) or a server that has it",
            )


def _digest(data: bytes, algorithm: str) -> str:
    return hash_bytes(data, algorithm).hex


def fingerprint_text(hex_digest: str, algorithm: str) -> str:
    """``AB:CD:...`` (with ``-RMD160``-style suffix), as a whitelist and ``openssl -fingerprint`` write it."""
    text = ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()
    suffix = {v: k.upper() for k, v in _SUFFIXED.items()}.get(algorithm, "")
    return text + suffix


def parse_fingerprint(token: str) -> tuple[str, str] | None:
    """(algorithm, lower-case hex) of a fingerprint token, or None when it is not one. Colons are
    dropped and case ignored, as the real client reads a line."""
    text = token.replace(":", "").lower()
    algorithm = "sha1"
    for suffix, name in _SUFFIXED.items():
        if text.endswith(suffix):
            text, algorithm = text.removesuffix(suffix), name
            break
    if len(text) != 40 or not _HEX.match(text):
        return None
    return algorithm, text


def parse(data: bytes, name: str) -> Blacklist:
    """The entries of blacklist file ``name`` (its text ``data``); a CvmfsError naming ``name:line``
    for binary data or a line that is neither a fingerprint, a revision line nor a comment."""
    out = Blacklist()
    out.files.append(name)
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{name}:{lineno}"
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            line = "\0"
        if not line.replace("\t", " ").isprintable():  # NUL and other controls too
            raise CvmfsError(
                f"{where}: not a text line (binary data or control characters): not a blacklist",
                hint=f"name the blacklist file (fingerprints and '<REPOSITORY REVISION' lines); {_FIX}",
            )
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("<"):
            fields = text[1:].split("#", 1)[0].split()
            floor = decimal(fields[1]) if len(fields) == 2 else None
            if floor is None:
                raise CvmfsError(
                    f"{where}: a revision line is '<REPOSITORY REVISION' (e.g. '<sft.cern.ch 1234'), "
                    f"got {text[:60]!r}",
                    hint=_FIX,
                )
            try:
                check_fqrn(fields[0])
            except CvmfsError as e:
                raise CvmfsError(f"{where}: {e.message}", hint=_FIX) from None
            if fields[0] not in out.floors or floor > out.floors[fields[0]][0]:
                out.floors[fields[0]] = (floor, where)
            continue
        token = re.split(r"[ \t#]", text, maxsplit=1)[0]
        key = parse_fingerprint(token)
        if key is None:
            raise CvmfsError(
                f"{where}: not a certificate fingerprint (40 hex digits, AB:CD:...) nor a "
                f"'<REPOSITORY REVISION' line: {text[:60]!r}",
                hint=_FIX,
            )
        out.certificates.setdefault(key, where)
    return out


def read(path: Path) -> tuple[bytes, Blacklist]:
    """The bytes of blacklist file ``path`` and its entries (an image build embeds the bytes it
    checked: the initrd's mount reads the same file)."""
    try:
        # a regular file within a cap: a device or a FIFO named here would be read for ever
        data = read_capped(path, MAX_BLACKLIST_BYTES)
    except TooLarge as e:
        raise CvmfsError(
            f"{path}:1: blacklist file is {e.strerror}, more than any list of revoked certificates",
            hint="name the blacklist file (e.g. /etc/cvmfs/blacklist)",
        ) from None
    except OSError as e:
        raise CvmfsError(
            f"{path}: blacklist cannot be read: {e.strerror}",
            hint="check --blacklist FILE (default /etc/cvmfs/blacklist, read when it exists)",
        ) from None
    return data, parse(data, str(path))


def load(paths: Iterable[Path]) -> Blacklist:
    """The entries of every file in ``paths``, added up; each must exist (it was named)."""
    out = Blacklist()
    for path in paths:
        out.add(read(path)[1])
    return out


def resolve(paths: Sequence[Path] = ()) -> Blacklist:
    """The blacklist a consumer applies: the files named, else ``/etc/cvmfs/blacklist`` when it
    exists (as the real client's ``CVMFS_BLACKLIST`` replaces its default), else none."""
    if paths:
        return load(paths)
    try:
        DEFAULT_PATH.stat()
    except (FileNotFoundError, NotADirectoryError):
        return Blacklist()
    except OSError:
        # a folder above it not searchable (``Path.exists`` raised PermissionError, a traceback):
        # ``read`` says it cannot be read, in one line. Not taken as absent: a revocation the user
        # cannot see must not be silently ineffective (the real client runs as root, and sees it).
        pass
    return load([DEFAULT_PATH])


def of_image(path: Path | None) -> Blacklist:
    """The list an image build applies (its snapshot query, its seed): the profile's
    ``cvmfs.blacklist`` only, never the host's ``/etc/cvmfs/blacklist``. The image carries the
    profile's list (the initrd's), so the build resolves the snapshot as the booted client will; and
    the image depends on the profile alone (its fingerprint names the profile's list), not on which
    host built it. A host's revocation is given to an image by naming that file in the profile."""
    return load([path] if path is not None else [])
