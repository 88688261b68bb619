"""The repository manifest ``.cvmfspublished``: parse, serialize, and its signature block.

Body lines are ``<key letter><value>``; the signed file appends ``--\\n<hex hash of body>\\n<signature>``.
The hash uses the algorithm of the root catalog hash; the signature is RSA PKCS#1 v1.5 with SHA-1
over the ASCII hex hash, made with the certificate's key.
"""

from __future__ import annotations

import hashlib

from ..errors import CvmfsError
from ..numtext import decimal
from .limits import MAX_MTIME
from .objects import ObjectHash, hash_bytes, parse_hash

MD5_EMPTY = hashlib.md5(b"").hexdigest()
SEPARATOR = b"--\n"


def check_fqrn(fqrn: str) -> None:
    """A repository name is a DNS-like name; it becomes file names and URL parts."""
    ok = (
        0 < len(fqrn) <= 253
        and "." in fqrn
        and all(part and all(c.isalnum() or c in "-_" for c in part) for part in fqrn.split("."))
    )
    if not ok:
        raise CvmfsError(
            f"invalid repository name {fqrn!r}",
            hint="use a fully qualified name like 'demo.cernvm.test' (letters, digits, '-', '_', dots)",
        )


class SignedText:
    """A signed text file split into its parts."""

    __slots__ = ("body", "hash_text", "signature")

    def __init__(self, body: bytes, hash_text: str, signature: bytes) -> None:
        self.body = body  # everything up to and including the newline before ``--``
        self.hash_text = hash_text  # the hex hash line after ``--`` (as written, without newline)
        self.signature = signature  # raw signature bytes to EOF


def split_signed(data: bytes, what: str) -> SignedText:
    """Split ``body--\\nHASH\\nSIG``; raises CvmfsError when the block is missing."""
    if data.startswith(SEPARATOR):
        pos = 0
    else:
        pos = data.find(b"\n" + SEPARATOR)
        if pos < 0:
            raise CvmfsError(f"{what}: no signature block ('--' line missing)")
        pos += 1
    body = data[:pos]
    rest = data[pos + len(SEPARATOR) :]
    nl = rest.find(b"\n")
    if nl < 0:
        raise CvmfsError(f"{what}: signature block has no hash line")
    try:
        hash_text = rest[:nl].decode("ascii").strip()
    except UnicodeDecodeError as e:
        raise CvmfsError(f"{what}: hash line after '--' is not ASCII") from e
    return SignedText(body, hash_text, rest[nl + 1 :])


def join_signed(body: bytes, hash_text: str, signature: bytes) -> bytes:
    if not body.endswith(b"\n"):
        body += b"\n"
    return body + SEPARATOR + hash_text.encode("ascii") + b"\n" + signature


def parse_keyvals(body: bytes) -> dict[str, str]:
    """Key letter -> value; the last value wins, except ``Z`` whose values join with ``|``."""
    out: dict[str, str] = {}
    for raw in body.split(b"\n"):
        if raw == b"--":
            break
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not line:
            continue
        key, value = line[0], line[1:]
        if key == "Z" and key in out:
            out[key] += "|" + value
        else:
            out[key] = value
    return out


class Manifest:
    """A repository manifest (``.cvmfspublished``): the fields this code reads. Not to be changed
    once made (``replace`` makes another); compared by identity."""

    __slots__ = (
        "alt_catalog_path",
        "certificate_hash",
        "extra",
        "fqrn",
        "garbage_collectable",
        "history_hash",
        "metainfo_hash",
        "micro_catalog_hash",
        "reflog_hash",
        "revision",
        "root_hash",
        "root_path_md5",
        "root_size",
        "timestamp",
        "ttl",
    )

    def __init__(
        self,
        root_hash: str,  # hex + algorithm id, no suffix
        root_size: int,  # uncompressed root catalog bytes
        revision: int,
        fqrn: str,
        ttl: int = 240,
        timestamp: int = 0,
        certificate_hash: str | None = None,
        history_hash: str | None = None,
        metainfo_hash: str | None = None,
        reflog_hash: str | None = None,
        micro_catalog_hash: str | None = None,
        root_path_md5: str = MD5_EMPTY,
        garbage_collectable: bool = False,
        alt_catalog_path: bool = False,
        extra: dict[str, str] | None = None,  # None: {}
    ) -> None:
        self.root_hash = root_hash
        self.root_size = root_size
        self.revision = revision
        self.fqrn = fqrn
        self.ttl = ttl
        self.timestamp = timestamp
        self.certificate_hash = certificate_hash
        self.history_hash = history_hash
        self.metainfo_hash = metainfo_hash
        self.reflog_hash = reflog_hash
        self.micro_catalog_hash = micro_catalog_hash
        self.root_path_md5 = root_path_md5
        self.garbage_collectable = garbage_collectable
        self.alt_catalog_path = alt_catalog_path
        self.extra: dict[str, str] = {} if extra is None else extra

    def replace(self, **changes: object) -> Manifest:
        """A copy with ``changes`` (field=value) applied, as ``dataclasses.replace`` made one (the
        publisher's tag edit: another history, reflog and time; the tests' edited manifests)."""
        new = object.__new__(Manifest)
        for name in self.__slots__:
            setattr(new, name, changes.pop(name) if name in changes else getattr(self, name))
        if changes:
            raise TypeError(f"Manifest has no field {next(iter(changes))!r}")
        return new

    @property
    def root(self) -> ObjectHash:
        return parse_hash(self.root_hash)

    @property
    def algorithm(self) -> str:
        return self.root.algorithm


_KNOWN = set("CBRDSGANXHTMYL")


def _time(t: int, where: str) -> int:
    # signed and hostile manifests alike: a publish time past year 2242 is no time (dates overflow)
    if t > MAX_MTIME:
        raise CvmfsError(f"{where}: field 'T' is not a publish time: {t}")
    return t


def parse(data: bytes, where: str = ".cvmfspublished") -> Manifest:
    """Parse a manifest (signed or not). Raises CvmfsError naming the missing or bad field."""
    kv = parse_keyvals(data)
    for key in "CRDS":
        if key not in kv:
            raise CvmfsError(f"{where}: required field '{key}' missing")

    def num(key: str, default: int | None = None) -> int:
        if key not in kv:
            if default is None:
                raise CvmfsError(f"{where}: required field '{key}' missing")
            return default
        text = kv[key]
        number = decimal(text, 19)
        if number is None:
            raise CvmfsError(f"{where}: field '{key}' is not a non-negative number: {text[:40]!r}")
        return number

    def opt_hash(key: str) -> str | None:
        value = kv.get(key)
        if not value:
            return None
        try:
            return str(parse_hash(value))
        except ValueError as e:
            raise CvmfsError(f"{where}: field '{key}' is not a content hash: {value!r}") from e

    root = opt_hash("C")
    if root is None:
        raise CvmfsError(f"{where}: required field 'C' (the root catalog) is empty")
    return Manifest(
        root_hash=root,
        root_size=num("B", 0),
        revision=num("S"),
        fqrn=kv.get("N", ""),
        ttl=num("D"),
        timestamp=_time(num("T", 0), where),
        certificate_hash=opt_hash("X"),
        history_hash=opt_hash("H"),
        metainfo_hash=opt_hash("M"),
        reflog_hash=opt_hash("Y"),
        micro_catalog_hash=opt_hash("L"),
        root_path_md5=kv["R"],
        garbage_collectable=kv.get("G") == "yes",
        alt_catalog_path=kv.get("A") == "yes",
        extra={k: v for k, v in kv.items() if k not in _KNOWN},
    )


def serialize(m: Manifest) -> bytes:
    """The unsigned body, in the order the server writes it."""
    yn = {True: "yes", False: "no"}
    lines = [
        f"C{m.root_hash}",
        f"B{m.root_size}",
        f"R{m.root_path_md5}",
        f"D{m.ttl}",
        f"S{m.revision}",
        f"G{yn[m.garbage_collectable]}",
        f"A{yn[m.alt_catalog_path]}",
    ]
    if m.micro_catalog_hash:
        lines.append(f"L{m.micro_catalog_hash}")
    lines.append(f"N{m.fqrn}")
    if m.certificate_hash:
        lines.append(f"X{m.certificate_hash}")
    if m.history_hash:
        lines.append(f"H{m.history_hash}")
    lines.append(f"T{m.timestamp}")
    if m.metainfo_hash:
        lines.append(f"M{m.metainfo_hash}")
    if m.reflog_hash:
        lines.append(f"Y{m.reflog_hash}")
    lines.extend(f"{k}{v}" for k, v in sorted(m.extra.items()))
    return ("\n".join(lines) + "\n").encode("utf-8")


def body_hash(body: bytes, algorithm: str = "sha1") -> str:
    """The hex hash written after ``--`` (with the algorithm id for non-SHA-1)."""
    return str(hash_bytes(body, algorithm))
