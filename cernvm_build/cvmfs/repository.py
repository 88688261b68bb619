"""Opening a repository: the signature chain and the snapshot, then a ``Repository`` on that root.

``open_repository`` fetches the manifest and whitelist, verifies the whole chain (whitelist signed by a
master key, not expired, for this repository, listing the certificate's fingerprint; manifest signed by
that certificate), picks the snapshot (trunk, a tag, a date or a root hash) and hands the chosen root
catalog to ``revision.Repository`` (the read API, re-exported here with ``VerifyReport``), which reads
catalogs and file contents on demand through the object store.

Hostile input (issue 12) is bounded before it is trusted: the manifest, whitelist and certificate are
size-capped while they stream, and the certificate is neither inflated past its cap nor cached before
the signature chain verifies. What is bounded after (catalogs, nesting, rows) is ``revision.py``'s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import CvmfsError, InputMissing, IntegrityError
from ..fsutil import TooLarge, open_regular, read_capped
from ..numtext import decimal
from . import blacklist as blacklist_mod
from . import manifest as manifest_mod
from . import rsa
from . import whitelist as whitelist_mod
from .blacklist import Blacklist
from .cache import ObjectCache
from .catalog import Chunk, DirEntry
from .fetch import Fetcher, NotFound, Unreachable, make_fetcher
from .history import History, Tag, parse_date
from .limits import (
    MAX_CERTIFICATE_BYTES,
    MAX_HISTORY_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_PUBLIC_KEY_BYTES,
    MAX_WHITELIST_BYTES,
    human,
)
from .manifest import Manifest
from .objects import SUFFIX_CERTIFICATE, SUFFIX_HISTORY, InflateLimit, decompress, hash_bytes, parse_hash
from .plaincache import PlainCache
from .revision import Repository, VerifyReport
from .store import ObjectStore
from .whitelist import Whitelist

__all__ = [
    "Chunk",
    "DirEntry",
    "Manifest",
    "Repository",
    "SnapshotSpec",
    "Tag",
    "VerifyReport",
    "open_repository",
]

MANIFEST_FILE = ".cvmfspublished"
WHITELIST_FILE = ".cvmfswhitelist"
#: the certificate object (as stored, hash X) of the manifest the cache keeps: the rollback floor's
CERTIFICATE_META = ".cvmfscertificate"
#: the signed files the cache keeps (manifest, whitelist, certificate: the rollback floor and the
#: offline open) as one file, replaced whole: written as three, a kill between them left a manifest
#: with another revision's whitelist or certificate, a floor that no longer verified (no floor)
SIGNED_SET = ".cvmfssigned"
_SET_HEAD = b"cernvm-build signed files 1\n"
_SET_LIMITS = {MANIFEST_FILE: MAX_MANIFEST_BYTES, WHITELIST_FILE: MAX_WHITELIST_BYTES,
               CERTIFICATE_META: MAX_CERTIFICATE_BYTES}  # fmt: skip


def kept_signed(cache: ObjectCache) -> dict[str, bytes]:
    """The signed files the cache keeps (``SIGNED_SET``), by name; a cache written before the set
    (the three files) is read as it was. Damaged: none (the cache is a tree anyone with write access
    can edit: an unverifiable floor is no floor anyway). A set older than the three files is stale:
    an older version (which keeps the three) verified a newer manifest after this one wrote the set
    (a downgrade and back), so the three are read, until the next online open writes the set again."""
    data = (
        None
        if _set_is_stale(cache)
        else cache.load_meta(SIGNED_SET, len(_SET_HEAD) + sum(_SET_LIMITS.values()) + 256)
    )
    if data is None:
        legacy = ((name, cache.load_meta(name, limit)) for name, limit in _SET_LIMITS.items())
        return {name: blob for name, blob in legacy if blob is not None}
    if not data.startswith(_SET_HEAD):
        return {}
    kept: dict[str, bytes] = {}
    at = len(_SET_HEAD)
    while at < len(data):
        end = data.find(b"\n", at, at + 64)
        name, _, size = data[at:end].decode("ascii", "replace").partition(" ")
        n = decimal(size, 7)
        if (
            end < 0
            or name not in _SET_LIMITS
            or n is None
            or n > _SET_LIMITS[name]
            or end + 1 + n > len(data)
        ):
            return {}
        kept[name] = data[end + 1 : end + 1 + n]
        at = end + 1 + n
    return kept


def _set_is_stale(cache: ObjectCache) -> bool:
    """The older layout's manifest was written at or after the set: ``keep_signed`` removes the three
    files whenever it writes the set, so only a version that does not know the set wrote it since.
    (A kill between the set's write and that removal leaves three files older than the set: kept.)"""
    try:
        legacy = os.stat(cache.root / MANIFEST_FILE, follow_symlinks=False).st_mtime_ns
        kept = os.stat(cache.root / SIGNED_SET, follow_symlinks=False).st_mtime_ns
    except OSError:
        return False
    return legacy >= kept


def forget_signed(cache_dir: Path, fqrn: str) -> None:
    """Drop the rollback floor a reader cache (``open_repository(cache_dir=…)``) keeps for ``fqrn``:
    only for a repository its owner has just created again under the same name. The demo's is dated
    from a fixed epoch, so a new one is "older" than the last one a cache verified, and every later
    open was refused as a rollback."""
    for name in (SIGNED_SET, *_SET_LIMITS):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cache_dir / fqrn / name)


def keep_signed(cache: ObjectCache, files: dict[str, bytes]) -> None:
    """Keep ``files`` (verified) as the cache's signed set, in one atomic write: a kill leaves the
    old set or the new one. Not written again when unchanged (each write is two fsyncs)."""
    data = _SET_HEAD + b"".join(f"{name} {len(blob)}\n".encode() + blob for name, blob in files.items())
    stale = _set_is_stale(cache)  # (the set holds these bytes, the three files others: they go)
    if cache.save_meta(SIGNED_SET, data) or stale:
        for name in _SET_LIMITS:  # a cache written before the set: its three files are read no more
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cache.root / name)


class SnapshotSpec:
    """Which revision to read: at most one of a tag name, a date (``YYYY-MM-DDTHH:MM:SSZ``: the newest
    tag at or before it) or a root catalog hash. All None: the trunk (the manifest's root catalog).
    Compared and hashed by value."""

    __slots__ = ("date", "root_hash", "tag")

    def __init__(self, tag: str | None = None, date: str | None = None, root_hash: str | None = None) -> None:
        if sum(x is not None for x in (tag, date, root_hash)) > 1:
            raise CvmfsError("choose one snapshot: a tag, a date or a root hash", hint="drop the others")
        self.tag = tag
        self.date = date
        self.root_hash = root_hash

    def _key(self) -> tuple[str | None, str | None, str | None]:
        return (self.tag, self.date, self.root_hash)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if type(other) is SnapshotSpec else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def is_trunk(self) -> bool:
        return self.tag is None and self.date is None and self.root_hash is None


#: what a server URL holds in place of the repository name (``CVMFS_SERVER_URL``'s convention)
FQRN_PLACEHOLDER = "@fqrn@"


def _fqrn_from_source(source: str | Path | Sequence[str]) -> str | None:
    """The name the first URL (or folder) gives; a URL that holds ``@fqrn@`` gives none, the next
    one may."""
    items: list[str | Path] = [source] if isinstance(source, str | Path) else list(source)
    for first in items:
        text = str(first).rstrip("/")
        if FQRN_PLACEHOLDER in text:
            continue
        if text.startswith(("http://", "https://")):
            parts = text.split("/")
            if len(parts) >= 2 and parts[-2] == "cvmfs":
                return parts[-1]
            return None
        # A fixture-style layout ``<fqrn>/repo`` or a plain ``.../<fqrn>`` directory.
        p = Path(text)
        return p.parent.name if p.name == "repo" else p.name
    return None


def with_fqrn(source: str | Path | Sequence[str], name: str) -> str | Path | list[str]:
    """``source`` with ``@fqrn@`` in its URLs replaced by ``name``, as the real client reads
    ``CVMFS_SERVER_URL`` (the site's client-parameter reference sends its users to --server with it;
    the URL was asked for as written, a 404, pr20a finding 7)."""
    if isinstance(source, Path):
        return source
    if isinstance(source, str):
        return source.replace(FQRN_PLACEHOLDER, name)
    return [str(u).replace(FQRN_PLACEHOLDER, name) for u in source]


def local_fqrn(source: str | Path | Sequence[str]) -> str | None:
    """The name a local Stratum directory's manifest gives (``N``), read before any verification:
    it only names the repository; the chain checked afterwards must agree with it."""
    if not isinstance(source, str | Path) or str(source).startswith(("http://", "https://")):
        return None
    base = Path(str(source).removeprefix("file://"))
    for cand in (base, base / "repo"):
        try:
            with open_regular(cand / MANIFEST_FILE) as f:  # a FIFO there waited for ever
                body = f.read(MAX_MANIFEST_BYTES)
        except OSError:
            continue
        return manifest_mod.parse_keyvals(body).get("N") or None
    return None


def check_local_folder(source: str | Path | Sequence[str]) -> None:
    """A local SOURCE (no http(s):// or file:// URL) that is no folder: one line saying so. A typo in the
    path said "no public key found to verify the repository" (the key look-up comes first), and with
    --no-verify "invalid repository name" or "manifest not found ... the hash is wrong"."""
    if not isinstance(source, str | Path) or str(source).startswith(("http://", "https://", "file://")):
        return
    hint = "give a local Stratum folder (the one holding .cvmfspublished) or an http(s):// URL"
    if not os.path.lexists(source):  # what the command line names is not there: exit 2, as in every command
        raise InputMissing(str(source), "folder", hint=hint)
    if not Path(source).is_dir():
        raise CvmfsError(f"{source}: not a folder", hint=hint)


def _load_keys(keys: Sequence[Path | bytes]) -> list[tuple[str, rsa.PublicKey]]:
    out = []
    for k in keys:
        if isinstance(k, bytes):
            out.append(("<key bytes>", rsa.load_public_key(k)))
            continue
        try:
            # a regular file within a cap: --key /dev/zero was read until memory ran out and a FIFO
            # waited for a writer for ever (pr18d finding 13)
            data = read_capped(Path(k), MAX_PUBLIC_KEY_BYTES)
        except TooLarge as e:
            raise CvmfsError(
                f"{k}: public key is {e.strerror}",
                hint="check --key PATH (a PEM RSA public key, e.g. <fqrn>.pub)",
            ) from None
        except OSError as e:
            raise CvmfsError(f"{k}: public key cannot be read: {e.strerror}", hint="check --key PATH") from e
        out.append((str(k), rsa.load_public_key(data, where=str(k))))
    return out


def _utc(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _verified_floor(
    name: str,
    kept: dict[str, bytes],
    store: ObjectStore,
    keys: list[tuple[str, rsa.PublicKey]],
    blacklist: Blacklist,
) -> Manifest | None:
    """The manifest this cache last verified, verified again (its signature and whitelist; an old
    whitelist's expiry does not matter, the question is only whether it was genuinely published):
    the floor a newly offered manifest must not fall below. The cache is a file tree anyone with
    write access can edit, so an unverifiable cached manifest is no floor (audit13c finding 8: a
    forged far-future T refused every genuine revision after it). Its certificate is the one kept
    with it (``CERTIFICATE_META``), not fetched from the server being judged: after a certificate
    rotation, a replayer of an older manifest who answered 404 for the newer certificate made the
    floor unverifiable and the rollback pass (audit13d finding 7). One signed by a certificate
    blacklisted since is no floor either: who holds that key could have forged its T. ``kept``: the
    cache's signed set (``kept_signed``), read once by the open."""
    old, old_w = kept.get(MANIFEST_FILE), kept.get(WHITELIST_FILE)
    if old is None or old_w is None:
        return None
    try:
        prev, _ = _verify_chain(
            fqrn=name,
            manifest_bytes=old,
            whitelist_bytes=old_w,
            store=store,
            keys=keys,
            check_expiry=False,
            certificate=kept.get(CERTIFICATE_META),
            blacklist=blacklist,
        )
    except (CvmfsError, ValueError):
        return None
    return prev


def _verify_chain(
    *,
    fqrn: str,
    manifest_bytes: bytes,
    whitelist_bytes: bytes,
    store: ObjectStore,
    keys: list[tuple[str, rsa.PublicKey]],
    blacklist: Blacklist,
    now: dt.datetime | None = None,
    check_expiry: bool = True,
    certificate: bytes | None = None,
) -> tuple[Manifest, Whitelist]:
    """The manifest and whitelist, verified up to the master key, the certificate not in
    ``blacklist`` (``blacklist.py``: every open passes here); ``certificate``: the stored
    certificate object kept earlier, used when it is the one the manifest names (its hash is X)."""
    where = f"{fqrn}: {MANIFEST_FILE}"
    signed = manifest_mod.split_signed(manifest_bytes, where)
    m = manifest_mod.parse(signed.body, where)
    try:
        algo = parse_hash(signed.hash_text).algorithm
    except ValueError as e:
        raise IntegrityError(f"{where}: hash line after '--' is not a content hash") from e
    if manifest_mod.body_hash(signed.body, algo) != signed.hash_text:
        raise IntegrityError(f"{where}: body does not match its hash: the manifest was modified")
    if m.fqrn != fqrn:
        raise IntegrityError(
            f"{where}: manifest is for repository {m.fqrn!r}, not {fqrn!r}",
            hint="check the server URL / --fqrn",
        )
    if m.root_path_md5 != manifest_mod.MD5_EMPTY:
        raise IntegrityError(f"{where}: field R is {m.root_path_md5}, expected md5('')")
    if not m.certificate_hash:
        raise IntegrityError(f"{where}: no certificate hash (X): the signature cannot be checked")
    # The whitelist first: it is checked against the master key the user holds, so a man in the
    # middle (who has no keys) is stopped before anything he names is fetched or inflated.
    wwhere = f"{fqrn}: {WHITELIST_FILE}"
    wsigned = manifest_mod.split_signed(whitelist_bytes, wwhere)
    try:
        walgo = parse_hash(wsigned.hash_text).algorithm
    except ValueError as e:
        raise IntegrityError(f"{wwhere}: hash line after '--' is not a content hash") from e
    if manifest_mod.body_hash(wsigned.body, walgo) != wsigned.hash_text:
        raise IntegrityError(f"{wwhere}: body does not match its hash: the whitelist was modified")
    if not rsa.verify_raw([k for _, k in keys], wsigned.hash_text.encode("ascii"), wsigned.signature):
        names = ", ".join(n for n, _ in keys)
        raise IntegrityError(
            f"{wwhere}: signature does not match the repository's public key ({names})",
            hint="use the repository's master public key (--key PATH), or the whitelist was tampered with",
        )
    w = whitelist_mod.parse(wsigned.body, wwhere)
    if w.fqrn != fqrn:
        raise IntegrityError(f"{wwhere}: whitelist is for repository {w.fqrn!r}, not {fqrn!r}")
    if check_expiry and w.expired(now):
        raise IntegrityError(
            f"{wwhere}: whitelist expired on {w.expiry_checked:%Y-%m-%d %H:%M:%S} UTC",
            hint="the repository owner must re-sign the whitelist ('cernvm-build cvmfs resign')",
        )
    # The certificate is named by the manifest, whose signature it is to check: it is bounded
    # (stored and inflated), and neither taken from nor put into the cache before the chain holds.
    cwhere = f"{fqrn}: certificate {m.certificate_hash}X"
    x = parse_hash(m.certificate_hash)
    if certificate is not None and hash_bytes(certificate, x.algorithm).hex == x.hex:
        cert_obj = certificate
    else:
        cert_obj = store.raw(
            m.certificate_hash,
            SUFFIX_CERTIFICATE,
            what="certificate",
            limit=MAX_CERTIFICATE_BYTES,
            cached=False,
        )
    try:
        cert_pem = decompress(cert_obj, MAX_CERTIFICATE_BYTES)
    except InflateLimit as e:
        raise IntegrityError(
            f"{cwhere}: inflates to larger than {human(MAX_CERTIFICATE_BYTES)}, more than any certificate",
            hint="the manifest names a certificate that is not genuine (a man in the middle?)",
        ) from e
    except zlib.error as e:
        raise IntegrityError(f"{cwhere} cannot be inflated") from e
    cert = rsa.load_certificate(cert_pem, where=cwhere)
    # revoked before listed: a whitelist vouches for a certificate until it expires, a blacklist
    # withdraws it at once (the real client checks in this order too)
    blacklist.check_certificate(fqrn, cert.der, f"certificate {m.certificate_hash}X")
    fpr = whitelist_mod.fingerprint(cert.der)
    if not w.lists(fpr):
        raise IntegrityError(
            f"{wwhere}: certificate {m.certificate_hash}X (fingerprint {fpr}) is not in the whitelist",
            hint="the manifest is signed by a certificate the repository owner did not approve",
        )
    if not rsa.verify_pkcs1_sha1(cert.public_key, signed.hash_text.encode("ascii"), signed.signature):
        raise IntegrityError(
            f"{where}: signature does not verify against certificate {m.certificate_hash}X",
            hint="the manifest was tampered with or signed by another key",
        )
    store.keep(m.certificate_hash, SUFFIX_CERTIFICATE, cert_obj, what="certificate")
    return m, w


def verify_signed_files(
    fqrn: str,
    manifest_bytes: bytes,
    whitelist_bytes: bytes,
    store: ObjectStore,
    public_keys: Sequence[Path | bytes],
    *,
    check_expiry: bool = True,
    blacklist: Blacklist | None = None,
) -> tuple[Manifest, Whitelist]:
    """The signature chain of fetched signed files, without opening a revision (the monitor's probe:
    it reports an expired whitelist itself, so it can pass ``check_expiry=False``). ``blacklist``:
    None is the system's (``blacklist.resolve``); the trunk's revision is checked against it too."""
    bl = blacklist if blacklist is not None else blacklist_mod.resolve()
    m, w = _verify_chain(
        fqrn=fqrn,
        manifest_bytes=manifest_bytes,
        whitelist_bytes=whitelist_bytes,
        store=store,
        keys=_load_keys(public_keys),
        check_expiry=check_expiry,
        blacklist=bl,
    )
    bl.check_revision(fqrn, m.revision)
    return m, w


def _check_name(name: str, *, given: bool) -> None:
    """``name`` is a repository name, before it names anything: it is a folder of the cache, and
    ``--fqrn ../../x`` (or a URL ending ``/cvmfs/..``, or a local manifest's ``N``) made the cache
    folder outside the cache before the manifest refused the name (pr20a finding 6)."""
    try:
        manifest_mod.check_fqrn(name)
    except CvmfsError as e:
        raise CvmfsError(
            f"{e.message}" + ("" if given else " (read from the source; --fqrn names it)"),
            hint="a repository is named like sft.cern.ch: letters, digits, '-', '_' and dots",
        ) from None


def resolve_name(source: str | Path | Sequence[str], fqrn: str | None) -> tuple[str, str | Path | list[str]]:
    """The repository's name (``fqrn``, else a local Stratum's manifest ``N``, else the source's
    ``/cvmfs/<fqrn>``), checked before it names a folder, and ``source`` with ``@fqrn@`` filled in:
    the one derivation of ``open_repository`` and ``replicate``."""
    name = fqrn or local_fqrn(source) or _fqrn_from_source(source)
    if not name:
        raise CvmfsError(
            f"cannot tell the repository name from {source!r}", hint="pass --fqrn NAME (e.g. sft.cern.ch)"
        )
    _check_name(name, given=fqrn is not None)
    return name, with_fqrn(source, name)


def open_repository(
    source: str | Path | Sequence[str],
    *,
    fqrn: str | None = None,
    public_keys: Sequence[Path | bytes] = (),
    cache_dir: Path | None = None,
    proxy: str | None = None,
    snapshot: SnapshotSpec | None = None,
    verify: bool = True,
    timeout: float = 10,
    retries: int = 2,
    inflated: bool = False,
    blacklist: Blacklist | None = None,
) -> Repository:
    """Open a repository from a Stratum URL (or several, for fail-over) or a local Stratum directory.

    ``verify=False`` skips the signature chain (manifest, whitelist, keys) only; object hashes and
    sizes are always checked. With ``cache_dir`` objects are cached in ``<cache_dir>/<fqrn>/`` and
    the last verified manifest is used when no server answers; with ``inflated`` too, inflated
    copies are kept beside them (``plaincache.py``: the mount daemon's and a seed's cache), the
    catalogs from the root catalog on, so that the next start opens them as they are.
    ``blacklist``: revoked certificates and revision floors (``blacklist.py``); None is the
    system's, ``/etc/cvmfs/blacklist`` when it exists, as for the real client.
    """
    snapshot = snapshot or SnapshotSpec()
    if isinstance(source, str | Path) and not str(source).startswith(("http://", "https://", "file://")):
        if cache_dir is None:  # (with a cache, its last verified manifest may serve a folder gone)
            check_local_folder(source)
        base = Path(source)
        if not (base / MANIFEST_FILE).exists() and (base / "repo" / MANIFEST_FILE).exists():
            base = base / "repo"  # the fixture layout: <fqrn>/{repo,keys}
        source = base
    name, source = resolve_name(source, fqrn)
    fetcher = make_fetcher(source, repo=name, proxy=proxy, timeout=timeout, retries=retries)
    cache = ObjectCache(cache_dir / name, repo=name) if cache_dir is not None else None
    store = ObjectStore(fetcher, cache, repo=name)
    if inflated and cache is not None:
        store.plain_cache = PlainCache(cache.root)
    keys = _load_keys(public_keys) if verify else []
    bl = blacklist if blacklist is not None else blacklist_mod.resolve()
    if verify and not keys:
        raise CvmfsError(
            f"{name}: no public key given to verify the repository",
            hint="pass the master public key with --key PATH (e.g. keys/<fqrn>.pub)",
        )
    try:
        return _open(name, fetcher, store, cache, keys, snapshot, verify, bl)
    except BaseException:
        store.close()
        raise


def open_on_store(
    name: str,
    fetcher: Fetcher,
    store: ObjectStore,
    public_keys: Sequence[Path | bytes],
    blacklist: Blacklist | None = None,
) -> Repository:
    """The verified trunk through a caller's fetcher and store (the replicator's: its objects land in
    the replica). The signed files are not saved anywhere; ``Repository.signed_files`` holds them.
    ``blacklist`` as for ``open_repository``: a replica takes no revision it refuses."""
    _check_name(name, given=True)
    keys = _load_keys(public_keys)
    if not keys:
        raise CvmfsError(
            f"{name}: no public key given to verify the repository",
            hint="pass the master public key with --key PATH (e.g. keys/<fqrn>.pub)",
        )
    bl = blacklist if blacklist is not None else blacklist_mod.resolve()
    return _open(name, fetcher, store, None, keys, SnapshotSpec(), True, bl)


class _NotSigned(IntegrityError):
    """A server's manifest or whitelist is no signed file at all: a proxy's or a captive portal's
    page of its own answered with 200 (the next server is asked; the cache's verified copy serves)."""


def _signed_file(name: str, fetcher: Fetcher, file: str) -> Callable[[Iterator[bytes]], bytes]:
    """The consumer of a fetched manifest or whitelist: its bytes, once they are shaped as one (a
    page that is not fails the fetch there, so the fetcher asks the next server, as for an object
    whose hash is wrong; it stopped the client, the next server unasked, pr20a finding 1)."""

    def consume(blocks: Iterator[bytes]) -> bytes:
        data = b"".join(blocks)
        where = f"{name}: {file}"
        try:
            body = manifest_mod.split_signed(data, where).body
            if file == MANIFEST_FILE:
                manifest_mod.parse(body, where)
            else:
                whitelist_mod.parse(body, where)
        except IntegrityError:
            raise
        except CvmfsError as e:
            raise _NotSigned(
                f"{e.message} (from {fetcher.description})",
                hint="a proxy or captive portal may answer with a page of its own: check --proxy "
                "(CVMFS_HTTP_PROXY) and the server URLs",
            ) from None
        return data

    return consume


def _open(
    name: str,
    fetcher: Fetcher,
    store: ObjectStore,
    cache: ObjectCache | None,
    keys: list[tuple[str, rsa.PublicKey]],
    snapshot: SnapshotSpec,
    verify: bool,
    blacklist: Blacklist,
) -> Repository:
    offline = False
    m: Manifest | None = None
    w: Whitelist | None = None
    try:
        mbytes = fetcher.fetch(
            MANIFEST_FILE,
            _signed_file(name, fetcher, MANIFEST_FILE),
            what="manifest",
            limit=MAX_MANIFEST_BYTES,
        )
        wbytes = (
            fetcher.fetch(
                WHITELIST_FILE,
                _signed_file(name, fetcher, WHITELIST_FILE),
                what="whitelist",
                limit=MAX_WHITELIST_BYTES,
            )
            if verify
            else b""
        )
    except (Unreachable, NotFound, _NotSigned) as e:
        kept = kept_signed(cache) if cache else {}
        cached = (kept.get(MANIFEST_FILE), kept.get(WHITELIST_FILE))
        if cached[0] is not None and (cached[1] is not None or not verify):
            mbytes, wbytes = cached[0], cached[1] or b""
            offline = True
        elif snapshot.root_hash is not None and isinstance(e, Unreachable):
            mbytes = wbytes = b""
            offline = True
        else:
            raise
    if mbytes:
        if verify:
            m, w = _verify_chain(
                fqrn=name,
                manifest_bytes=mbytes,
                whitelist_bytes=wbytes,
                store=store,
                keys=keys,
                blacklist=blacklist,
            )
        else:
            signed = manifest_mod.split_signed(mbytes, f"{name}: {MANIFEST_FILE}")
            m = manifest_mod.parse(signed.body, f"{name}: {MANIFEST_FILE}")
            if m.fqrn and m.fqrn != name:
                raise IntegrityError(f"{name}: {MANIFEST_FILE}: manifest is for repository {m.fqrn!r}")
        if snapshot.is_trunk:  # refused before the cache keeps it as its last verified manifest
            blacklist.check_revision(name, m.revision)
        if cache is not None and not offline and verify:
            # (an unverified manifest is never the cache's signed set: it was the floor of every
            # later verified open, so one ``--no-verify`` open took the rollback protection)
            # a restart on the revision this cache verified last (the common open: every boot of a
            # seeded image) has no floor to check: the same bytes were just verified, and their
            # second check was a fifth of such an open's CPU
            kept = kept_signed(cache)
            same = kept.get(MANIFEST_FILE) == mbytes
            prev = _verified_floor(name, kept, store, keys, blacklist) if verify and not same else None
            # the publication time decides, not the revision: a replay (or a stale mirror) carries
            # an older T, and a newer T needs the signing key; a repository re-created under its
            # name (new revisions from 2, later T) is followed, as before the floor was verified —
            # a revision rule refused it (the test suite's re-published demo repository showed it)
            if prev is not None and prev.timestamp > m.timestamp:
                raise IntegrityError(
                    f"{name}: {MANIFEST_FILE}: the server offers revision {m.revision} published at "
                    f"{_utc(m.timestamp)}, behind revision {prev.revision} published at "
                    f"{_utc(prev.timestamp)} that this cache already verified",
                    hint=f"a stale mirror or a replay; if the server's clock went back, remove {cache.root}",
                )
            files = dict(kept, **{MANIFEST_FILE: mbytes})  # unverified (no whitelist): the old ones
            if wbytes:
                files[WHITELIST_FILE] = wbytes
            if m.certificate_hash and verify:  # the certificate that verifies it (the floor's)
                files[CERTIFICATE_META] = store.raw(
                    m.certificate_hash, SUFFIX_CERTIFICATE, what="certificate", limit=MAX_CERTIFICATE_BYTES
                )  # from the object cache: the chain just kept it there, verified
            keep_signed(cache, files)

    history: History | None = None
    if m is not None and m.history_hash:
        try:
            hpath = store.database_file(
                m.history_hash, SUFFIX_HISTORY, size=None, what="history database", cap=MAX_HISTORY_BYTES
            )
            history = History(hpath, where=name)
        except (Unreachable, NotFound):
            if not snapshot.is_trunk and snapshot.root_hash is None:
                raise
    try:
        root_hash, root_size, tag = _select(name, m, history, snapshot)
        repo = Repository(
            fqrn=name,
            fetcher=fetcher,
            store=store,
            manifest=m,
            whitelist=w,
            root_hash=root_hash,
            root_size=root_size,
            tag=tag,
            offline=offline,
            history=history,
        )
        try:  # what is mounted: a tag's or a pinned root catalog's own revision (the real client's)
            blacklist.check_revision(name, repo.revision)
        except BaseException:
            repo.close()
            raise
        if not offline:
            repo.signed_files = {MANIFEST_FILE: mbytes, WHITELIST_FILE: wbytes}
        return repo
    except BaseException:
        if history is not None:
            history.close()
        raise


def _select(
    name: str, m: Manifest | None, history: History | None, snapshot: SnapshotSpec
) -> tuple[str, int | None, str | None]:
    if snapshot.root_hash is not None:
        try:
            root = str(parse_hash(snapshot.root_hash))
        except ValueError as e:
            raise CvmfsError(
                f"{name}: root hash {snapshot.root_hash!r} is not a content hash",
                hint="40 hex digits, optionally with -rmd160 / -shake128",
            ) from e
        if m is not None and m.root_hash == root:
            return root, m.root_size, None
        if history is not None:
            for known_tag in history.tags():
                if known_tag.root_hash == root:
                    return root, known_tag.size or None, known_tag.name
        return root, None, None
    if snapshot.tag is not None or snapshot.date is not None:
        if m is None or history is None:
            raise CvmfsError(
                f"{name}: the repository has no history database, so it has no tags",
                hint="mount the trunk or pin a --root-hash",
            )
        t: Tag | None
        if snapshot.tag is not None:
            t = history.by_name(snapshot.tag)
            if t is None:
                known = ", ".join(sorted(x.name for x in history.tags())[:8])
                raise CvmfsError(
                    f"{name}: no tag named {snapshot.tag!r} (history {m.history_hash}H)",
                    hint=f"known tags: {known}" if known else "the repository has no tags",
                )
        else:
            assert snapshot.date is not None
            ts = parse_date(snapshot.date)
            t = history.by_date(ts)
            if t is None:
                raise CvmfsError(
                    f"{name}: no tagged revision at or before {snapshot.date}",
                    hint="list the tags with 'cernvm-build cvmfs tag list SOURCE'",
                )
        assert t is not None
        try:
            return str(parse_hash(t.root_hash)), t.size or None, t.name
        except ValueError as e:
            raise CvmfsError(
                f"{name}: tag {t.name!r} in history {m.history_hash}H: {t.root_hash!r} is not a root hash",
                hint="the history database is damaged",
            ) from e
    if m is None:
        raise CvmfsError(f"{name}: no manifest available")
    return m.root_hash, m.root_size, None
