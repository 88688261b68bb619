"""The repository as it is now, and the commit of a new one: certificate, history, reflog, a file-system
sync, then the signed manifest LAST, by rename (the only step that makes the revision visible)."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import CvmfsError, IntegrityError
from ..fsutil import atomic_write, read_capped
from . import manifest as mf
from . import rsa as rsa_raw
from . import whitelist as wl
from .catalog_build import CatalogBuilder
from .catalog_write import (
    DEFAULT_TTL,
)
from .history_write import HistoryWriter, Tag, auto_tag_name
from .keys import KeySet
from .limits import MAX_MANIFEST_BYTES, MAX_WHITELIST_BYTES, MAX_WHITELIST_DAYS
from .objwrite import ObjectWriter
from .options import Options
from .previous import PreviousTree, read_object
from .stage import Stage


@dataclass(frozen=True)
class PublishResult:
    revision: int
    root_hash: str
    tag: str | None
    objects_written: int
    bytes_written: int
    files: int
    catalogs: int
    timestamp: int = 0
    catalogs_reused: int = 0
    warnings: tuple[str, ...] = ()
    #: directories that got a nested catalog from /.cvmfsdirtab, and from the automatic split
    nested_by_dirtab: tuple[str, ...] = ()
    nested_auto: tuple[str, ...] = ()


def _read_signed_file(path: Path, cap: int) -> bytes:
    """A stratum's ``.cvmfspublished``/``.cvmfswhitelist``, a regular file of at most ``cap`` bytes
    (read_bytes waited for ever on a FIFO there and read a 3 GB one whole: 3.1 GB RSS);
    FileNotFoundError is left to the caller."""
    try:
        return read_capped(path, cap)
    except FileNotFoundError:
        raise
    except OSError as e:  # TooLarge, a FIFO or a folder, no permission
        raise CvmfsError(
            f"{path}: cannot read: {e.strerror}",
            hint="the stratum is damaged: restore the file from a backup or a replica",
        ) from None


def read_current(stratum: Path, fqrn: str) -> mf.Manifest:
    """The repository's manifest, after checking its name, hash and signature."""
    path = stratum / ".cvmfspublished"
    try:
        data = _read_signed_file(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise CvmfsError(
            f"{stratum}: not a repository (no .cvmfspublished)",
            hint=f"create it first with 'cernvm-build cvmfs create {stratum} --fqrn {fqrn} --keys DIR'",
        ) from None
    signed = mf.split_signed(data, str(path))
    m = mf.parse(signed.body, str(path))
    if m.fqrn != fqrn:
        raise CvmfsError(
            f"{path}: repository is {m.fqrn!r}, not {fqrn!r}", hint="pass the repository's own name"
        )
    if mf.body_hash(signed.body, m.algorithm) != signed.hash_text:
        raise IntegrityError(f"{path}: manifest body does not match its hash (damaged file)")
    if m.certificate_hash:
        cert_pem = read_object(stratum, m.certificate_hash, "X", str(path))
        cert = rsa_raw.load_certificate(cert_pem, f"certificate {m.certificate_hash}")
        rsa_raw.require(
            rsa_raw.verify_pkcs1_sha1(cert.public_key, signed.hash_text.encode(), signed.signature),
            f"{path}: manifest signature does not verify against certificate {m.certificate_hash}",
        )
    return m


def check_whitelist(stratum: Path, keys: KeySet, opts: Options) -> None:
    path = stratum / ".cvmfswhitelist"
    try:
        data = _read_signed_file(path, MAX_WHITELIST_BYTES)
    except FileNotFoundError:
        opts.warnings.append(f"{path} is missing: clients cannot mount until it is re-signed")
        return
    w = wl.parse(mf.split_signed(data, str(path)).body, str(path))
    if not w.lists(keys.fingerprint()):
        raise CvmfsError(
            f"{path}: certificate {keys.fingerprint()} is not in the whitelist",
            hint="these are not the keys the repository was created with; "
            "or re-sign the whitelist with 'cernvm-build cvmfs resign'",
        )
    if w.expired():
        opts.warnings.append(
            f"{path} expired on {w.expires:%Y-%m-%d}: re-sign it ('cernvm-build cvmfs resign')"
        )


def write_reflog(stratum: Path, scratch: Path, fqrn: str, refs: list[tuple[str, int]], ts: int) -> str:
    """Add ``refs`` (hash, type: 0 catalog, 1 certificate, 2 history) to ``.cvmfsreflog``."""
    path = stratum / ".cvmfsreflog"
    tmp = scratch / "reflog.db"
    if path.exists():
        shutil.copyfile(path, tmp)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("BEGIN")
        if not path.exists():
            db.execute(
                "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));"
            )
            db.execute(
                "CREATE TABLE refs (hash TEXT, type INTEGER, timestamp INTEGER, "
                "CONSTRAINT pk_refs PRIMARY KEY (hash));"
            )
            db.executemany(
                "INSERT INTO properties VALUES (?, ?)",
                [("schema", "1.0"), ("schema_revision", "0"), ("fqrn", fqrn)],
            )
        db.executemany("INSERT OR IGNORE INTO refs VALUES (?, ?, ?)", [(h, t, ts) for h, t in refs])
        db.execute("COMMIT")
    finally:
        db.close()
    blob = tmp.read_bytes()
    atomic_write(path, blob)
    return hashlib.sha1(blob).hexdigest()


def sign_manifest(m: mf.Manifest, keys: KeySet) -> bytes:
    body = mf.serialize(m)
    hash_text = mf.body_hash(body, m.algorithm)
    return mf.join_signed(body, hash_text, keys.sign_manifest(hash_text))


def check_whitelist_days(days: int) -> None:
    if not 1 <= days <= MAX_WHITELIST_DAYS:
        raise CvmfsError(
            f"whitelist validity must be 1 to {MAX_WHITELIST_DAYS} days, got {days}",
            hint="clients refuse an expired whitelist; 30 days is the usual validity",
        )


def whitelist_bytes(fqrn: str, keys: KeySet, created: int, days: int) -> bytes:
    check_whitelist_days(days)
    start = dt.datetime.fromtimestamp(created, dt.UTC).replace(microsecond=0)
    w = wl.Whitelist(start, start + dt.timedelta(days=days), fqrn, (keys.fingerprint(),))
    body = wl.serialize(w)
    hash_text = hashlib.sha1(body).hexdigest()
    return mf.join_signed(body, hash_text, keys.sign_whitelist(hash_text))


def previous_history(stratum: Path, scratch: Path, m: mf.Manifest | None) -> Path | None:
    """The history database of revision ``m`` (None: it has none), inflated into the session's
    scratch once: a publish ``--tag`` reads it for the tag check and again for the new history (it
    was inflated twice). A session holds the lock, so its ``m`` is the one current revision."""
    if m is None or not m.history_hash:
        return None
    path = scratch / "hist.old.db"
    if not path.exists():
        path.write_bytes(read_object(stratum, m.history_hash, "H", "history"))
    return path


def history_db(stratum: Path, scratch: Path, m: mf.Manifest | None, fqrn: str) -> HistoryWriter:
    prev_db = previous_history(stratum, scratch, m)
    return HistoryWriter(
        scratch / "hist.new.db", fqrn, previous_db=prev_db, previous_hash=m.history_hash if m else None
    )


def commit(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    store: ObjectWriter,
    scratch: Path,
    stage: Stage,
    prev: PreviousTree | None,
    current: mf.Manifest | None,
    opts: Options,
    tag: str | None,
    description: str,
    auto_tag: bool,
    whitelist: bytes | None = None,
) -> PublishResult:
    revision = current.revision + 1 if current else 1
    ts = max(opts.timestamp, current.timestamp + 1) if current else opts.timestamp
    builder = CatalogBuilder(stage, store, prev, scratch, revision, ts)
    root_name, root_size, counters = builder.build()
    opts.reached("catalogs")
    cert_name = store.put_bytes(keys.cert_pem, "X")
    hist = history_db(stratum, scratch, current, fqrn)
    head = Tag("trunk", root_name, revision, ts, root_size)
    hist.advance_trunk(head)
    if tag:
        hist.put(replace(head, name=tag, description=description))
    if auto_tag:
        hist.put(replace(head, name=auto_tag_name(ts), description="automatically generated tag"))
    hist.close()
    hist_name = store.put_path(scratch / "hist.new.db", "H")
    opts.reached("history")
    refs = [(c, 0) for c in builder.new_catalogs] + [(cert_name, 1), (hist_name, 2)]
    reflog = write_reflog(stratum, scratch, fqrn, refs, ts)
    opts.reached("reflog")
    if whitelist is not None:
        atomic_write(stratum / ".cvmfswhitelist", whitelist)
    store.sync()
    m = mf.Manifest(
        root_hash=root_name,
        root_size=root_size,
        revision=revision,
        fqrn=fqrn,
        ttl=DEFAULT_TTL,
        timestamp=ts,
        certificate_hash=cert_name,
        history_hash=hist_name,
        reflog_hash=reflog,
    )
    atomic_write(stratum / ".cvmfspublished", sign_manifest(m, keys))
    total = counters.total()
    return PublishResult(
        revision=revision,
        root_hash=root_name,
        tag=tag,
        objects_written=store.objects_written,
        bytes_written=store.bytes_written,
        files=total["regular"],
        catalogs=total["nested"] + 1,
        timestamp=ts,
        catalogs_reused=builder.reused,
        warnings=tuple(opts.warnings),
    )
