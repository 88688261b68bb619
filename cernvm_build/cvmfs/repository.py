"""The Repository: a verified, pinned view of one CernVM-FS repository revision.

``open_repository`` fetches the manifest and whitelist, verifies the whole chain (whitelist signed by a
master key, not expired, for this repository, listing the certificate's fingerprint; manifest signed by
that certificate), picks the snapshot (trunk, a tag, a date or a root hash) and then reads catalogs and
file contents on demand through the object store (every object hash-checked, every size checked).

Hostile input (issue 12) is bounded before it is trusted: the manifest, whitelist and certificate are
size-capped while they stream, the certificate is neither inflated past its cap nor cached before the
signature chain verifies; and after: catalogs stop inflating at their declared size, nested catalog
references must lie strictly below their catalog and nest at most ``limits.MAX_NESTING`` deep, and
every row is checked as it streams (``catalog.py``). Walking is iterative and streams each
directory, so neither depth nor width costs memory in proportion.
"""

from __future__ import annotations

import bisect
import datetime as dt
import io
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import CvmfsError, IntegrityError
from . import manifest as manifest_mod
from . import rsa
from . import whitelist as whitelist_mod
from .cache import ObjectCache
from .catalog import Catalog, Chunk, DirEntry, NestedRef, Problem
from .fetch import Fetcher, NotFound, Unreachable, make_fetcher
from .history import History, Tag, parse_date
from .limits import (
    MAX_CATALOG_BYTES,
    MAX_CERTIFICATE_BYTES,
    MAX_HISTORY_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_NESTING,
    MAX_WHITELIST_BYTES,
    human,
)
from .manifest import Manifest
from .objects import (
    SUFFIX_CATALOG,
    SUFFIX_CERTIFICATE,
    SUFFIX_FILE,
    SUFFIX_HISTORY,
    SUFFIX_PARTIAL,
    InflateLimit,
    decompress,
    parse_hash,
)
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


@dataclass(frozen=True)
class SnapshotSpec:
    """Which revision to read: at most one of a tag name, a date (``YYYY-MM-DDTHH:MM:SSZ``: the newest
    tag at or before it) or a root catalog hash. All None: the trunk (the manifest's root catalog)."""

    tag: str | None = None
    date: str | None = None
    root_hash: str | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.tag, self.date, self.root_hash)) > 1:
            raise CvmfsError("choose one snapshot: a tag, a date or a root hash", hint="drop the others")

    @property
    def is_trunk(self) -> bool:
        return self.tag is None and self.date is None and self.root_hash is None


#: problems a VerifyReport keeps (all are counted, and each is passed to ``on_problem`` as found)
MAX_REPORTED = 10_000
#: object names ``verify`` remembers to check each only once (then it starts afresh: bounded memory)
MAX_SEEN = 200_000


@dataclass
class VerifyReport:
    catalogs: int = 0
    entries: int = 0
    files: int = 0
    objects: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)  # the first MAX_REPORTED problems
    problems: int = 0  # all of them

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, message: str) -> None:
        self.problems += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(message)


def _norm(path: str) -> str:
    """Repository path form: "/" for the root, "/a/b" otherwise (no trailing slash, no dots)."""
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise CvmfsError(f"path {path!r} may not contain '..'")
    return "/" + "/".join(parts)


def _fqrn_from_source(source: str | Path | Sequence[str]) -> str | None:
    first: str | Path
    if isinstance(source, str | Path):
        first = source
    else:
        items = list(source)
        if not items:
            return None
        first = items[0]
    text = str(first).rstrip("/")
    if text.startswith(("http://", "https://")):
        parts = text.split("/")
        if len(parts) >= 2 and parts[-2] == "cvmfs":
            return parts[-1]
        return None
    # A fixture-style layout ``<fqrn>/repo`` or a plain ``.../<fqrn>`` directory.
    p = Path(text)
    return p.parent.name if p.name == "repo" else p.name


def local_fqrn(source: str | Path | Sequence[str]) -> str | None:
    """The name a local Stratum directory's manifest gives (``N``), read before any verification:
    it only names the repository; the chain checked afterwards must agree with it."""
    if not isinstance(source, str | Path) or str(source).startswith(("http://", "https://")):
        return None
    base = Path(str(source).removeprefix("file://"))
    for cand in (base, base / "repo"):
        try:
            with open(cand / MANIFEST_FILE, "rb") as f:
                body = f.read(MAX_MANIFEST_BYTES)
        except OSError:
            continue
        return manifest_mod.parse_keyvals(body).get("N") or None
    return None


def _load_keys(keys: Sequence[Path | bytes]) -> list[tuple[str, rsa.PublicKey]]:
    out = []
    for k in keys:
        if isinstance(k, bytes):
            out.append(("<key bytes>", rsa.load_public_key(k)))
            continue
        try:
            data = Path(k).read_bytes()
        except OSError as e:
            raise CvmfsError(f"{k}: public key cannot be read: {e.strerror}", hint="check --key PATH") from e
        out.append((str(k), rsa.load_public_key(data, where=str(k))))
    return out


class Repository:
    """Read-only access to one revision. Thread-safe; call ``close()`` (or use ``with``)."""

    def __init__(
        self,
        *,
        fqrn: str,
        fetcher: Fetcher,
        store: ObjectStore,
        manifest: Manifest | None,
        whitelist: Whitelist | None,
        root_hash: str,
        root_size: int | None,
        tag: str | None,
        offline: bool,
        history: History | None,
    ):
        self.fqrn = fqrn
        self.fetcher = fetcher
        self.store = store
        self.manifest = manifest
        self.whitelist = whitelist
        self.root_hash = root_hash
        self.root_size = root_size
        self.tag = tag
        self.offline = offline
        self._history = history
        #: the signed files exactly as they verified (``.cvmfspublished``, ``.cvmfswhitelist``): a
        #: replica publishes these bytes, not ones fetched again later (the source may move on)
        self.signed_files: dict[str, bytes] = {}
        self._lock = threading.RLock()
        self._catalogs: dict[str, Catalog] = {}
        self._nested: dict[str, dict[str, NestedRef]] = {}
        self._root = self._load_catalog(root_hash, root_size, "", "root catalog", 0)

    # -- context -----------------------------------------------------------------------------------
    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for c in self._catalogs.values():
                c.close()
            self._catalogs.clear()
            if self._history is not None:
                self._history.close()
                self._history = None
            self.store.close()

    # -- identity ----------------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        """The revision of the mounted root catalog (not necessarily the manifest's)."""
        return self._root.revision or (self.manifest.revision if self.manifest else 0)

    @property
    def timestamp(self) -> int:
        return int(self._root.properties.get("last_modified", 0) or 0)

    def statistics(self) -> dict[str, int]:
        """The root catalog's counters (``self_*`` and ``subtree_*``: files, bytes, ... of the revision)."""
        return self._root.statistics()

    def tags(self) -> list[Tag]:
        if self._history is None:
            if self.manifest is None or not self.manifest.history_hash:
                return []
            raise CvmfsError(f"{self.fqrn}: history database is not available offline")
        return self._history.tags()

    # -- catalogs ----------------------------------------------------------------------------------
    def _load_catalog(self, name: str, size: int | None, prefix: str, what: str, depth: int) -> Catalog:
        if depth > MAX_NESTING:
            raise CvmfsError(
                f"{self.fqrn}: {what} {name}C is nested {depth} deep, more than the {MAX_NESTING} "
                "any real repository needs",
                hint="a chain of nested catalogs this deep is damaged or hostile; it is not read",
            )
        # A size of 0 means "not recorded" (old schemas): then only the cap bounds the inflation.
        path = self.store.plain_file(
            name, SUFFIX_CATALOG, size=size or None, what=what, cap=MAX_CATALOG_BYTES
        )
        cat = Catalog(path, name=name, where=self.fqrn, depth=depth)
        if cat.root_prefix != prefix.rstrip("/"):
            cat.close()
            raise IntegrityError(
                f"{self.fqrn}: {what} {name}C: its root prefix is {cat.root_prefix or '/'!r}, "
                f"expected {prefix or '/'!r}",
                hint="the catalog hierarchy is inconsistent; the repository is damaged",
            )
        self._catalogs[prefix] = cat
        return cat

    def _nested_of(self, cat: Catalog) -> dict[str, NestedRef]:
        refs = self._nested.get(cat.root_prefix)
        if refs is None:
            refs = {r.path: r for r in cat.nested()}
            self._nested[cat.root_prefix] = refs
        return refs

    def _child(self, cat: Catalog, ref: NestedRef) -> Catalog:
        child = self._catalogs.get(ref.path)
        if child is None:
            child = self._load_catalog(
                ref.hash, ref.size, ref.path, f"nested catalog {ref.path}", cat.depth + 1
            )
        return child

    def _catalog_for(self, path: str) -> Catalog:
        """The (nested) catalog that holds ``path``, loading catalogs on the way.

        Each step goes to a catalog whose root is strictly below the current one (``Catalog.nested``
        refuses anything else), so the loop ends within ``MAX_NESTING`` steps.
        """
        key = "" if path == "/" else path
        with self._lock:
            cat = self._root
            while True:
                refs = self._nested_of(cat)
                if not refs:
                    return cat
                ref = None
                # The reference is a prefix of the path: look its ancestors up, deepest first.
                end = len(key)
                while end > len(cat.root_prefix):
                    ref = refs.get(key[:end])
                    if ref is not None:
                        break
                    end = key.rfind("/", 0, end)
                if ref is None:
                    return cat
                cat = self._child(cat, ref)

    def catalogs(self, on_problem: Problem | None = None) -> Iterator[Catalog]:
        """Every catalog of this revision, parents before children (loads them all). With
        ``on_problem`` a catalog that cannot be loaded is reported there and its subtree skipped."""
        stack = [self._root]
        while stack:
            cat = stack.pop()
            yield cat
            try:
                refs = sorted(self._nested_of(cat).values(), key=lambda r: r.path, reverse=True)
            except CvmfsError as e:
                if on_problem is None:
                    raise
                on_problem(e)
                continue
            for ref in refs:
                try:
                    with self._lock:
                        child = self._child(cat, ref)
                except CvmfsError as e:
                    if on_problem is None:
                        raise
                    on_problem(e)
                    continue
                stack.append(child)

    # -- the tree ----------------------------------------------------------------------------------
    def lookup(self, path: str) -> DirEntry | None:
        p = _norm(path)
        return self._catalog_for(p).lookup(p)

    def stat(self, path: str) -> DirEntry:
        entry = self.lookup(path)
        if entry is None:
            raise CvmfsError(f"{self.fqrn}: {_norm(path)}: no such file or directory (ENOENT)")
        return entry

    def iterdir(self, path: str = "/") -> Iterator[DirEntry]:
        """The entries of a directory, in name order, streamed (a million of them cost no more
        memory than ten)."""
        entry = self.stat(path)
        if not entry.is_dir:
            raise CvmfsError(f"{self.fqrn}: {entry.path}: not a directory (ENOTDIR)")
        return self._children(entry.path)

    def listdir(self, path: str = "/") -> list[DirEntry]:
        """``iterdir`` as a list, for directories known to be small."""
        return list(self.iterdir(path))

    def _children(self, path: str, on_problem: Problem | None = None) -> Iterator[DirEntry]:
        return self._catalog_for(path).children(path, on_problem)

    def readlink(self, path: str) -> str:
        entry = self.stat(path)
        if not entry.is_symlink:
            raise CvmfsError(f"{self.fqrn}: {entry.path}: not a symbolic link (EINVAL)")
        return entry.symlink

    def walk(self, path: str = "/", on_problem: Problem | None = None) -> Iterator[DirEntry]:
        """Depth-first, sorted by name, parents before children, crossing nested catalogs.

        Iterative (no recursion limit) and streaming: memory grows with the depth, not the width.
        With ``on_problem`` a bad entry or a subtree that cannot be read is reported there and
        skipped; otherwise the first one raises.
        """
        top = self.stat(path)
        yield top
        if not top.is_dir:
            return
        stack: list[Iterator[DirEntry]] = [self._children(top.path, on_problem)]
        while stack:
            try:
                entry = next(stack[-1], None)
            except CvmfsError as e:
                if on_problem is None:
                    raise
                on_problem(e)
                entry = None
            if entry is None:
                stack.pop()
                continue
            yield entry
            if entry.is_dir:
                try:
                    stack.append(self._children(entry.path, on_problem))
                except CvmfsError as e:
                    if on_problem is None:
                        raise
                    on_problem(e)

    # -- contents ----------------------------------------------------------------------------------
    def _file(self, path_or_entry: str | DirEntry) -> DirEntry:
        entry = path_or_entry if isinstance(path_or_entry, DirEntry) else self.stat(path_or_entry)
        if entry.is_dir:
            raise CvmfsError(f"{self.fqrn}: {entry.path}: is a directory (EISDIR)")
        if not entry.is_file:
            raise CvmfsError(f"{self.fqrn}: {entry.path}: not a regular file")
        if entry.is_external:
            raise CvmfsError(
                f"{self.fqrn}: {entry.path}: external file (stored outside the repository) is not supported"
            )
        return entry

    def read(self, path: str | DirEntry, offset: int = 0, size: int = -1) -> bytes:
        """Up to ``size`` bytes at ``offset`` (``size < 0``: to the end), fetching only what is needed."""
        entry = self._file(path)
        if size < 0:
            size = entry.size
        end = min(entry.size, offset + size)
        if offset >= end:
            return b""
        if not entry.is_chunked:
            if entry.content_hash is None:
                raise IntegrityError(f"{self.fqrn}: {entry.path}: regular file without a content hash")
            return self.store.read(
                entry.content_hash,
                SUFFIX_FILE,
                size=entry.size,
                offset=offset,
                length=end - offset,
                compressed=entry.compressed,
                what=f"file {entry.path}",
            )
        chunks = entry.chunks
        starts = [c.offset for c in chunks]
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        parts = []
        pos = offset
        while pos < end and i < len(chunks):
            c = chunks[i]
            if c.offset + c.size <= pos:
                i += 1
                continue
            if c.offset > pos:
                raise IntegrityError(f"{self.fqrn}: {entry.path}: chunk list has a gap at offset {pos}")
            lo = pos - c.offset
            n = min(c.size - lo, end - pos)
            piece = self.store.read(
                c.hash,
                SUFFIX_PARTIAL,
                size=c.size,
                offset=lo,
                length=n,
                compressed=entry.compressed,
                what=f"chunk at {c.offset} of {entry.path}",
            )
            parts.append(piece)
            pos += len(piece)
            i += 1
        if pos < end:
            raise IntegrityError(f"{self.fqrn}: {entry.path}: chunks end at {pos}, file size is {entry.size}")
        return b"".join(parts)

    def open(self, path: str | DirEntry) -> BinaryIO:
        """A seekable binary file that fetches chunk by chunk as it is read."""
        entry = self._file(path)
        return io.BufferedReader(_RawFile(self, entry), buffer_size=1 << 20)  # type: ignore[return-value]

    def read_bytes(self, path: str | DirEntry) -> bytes:
        return self.read(path, 0, -1)

    # -- verification ------------------------------------------------------------------------------
    def verify(
        self,
        progress: Callable[[DirEntry], None] | None = None,
        on_problem: Callable[[str], None] | None = None,
    ) -> VerifyReport:
        """Check every catalog, every entry and every object of this revision: names, fields,
        chunk layout, hash and inflated size. Goes on after a problem, so that all of them are
        reported (each to ``on_problem`` as it is found, and in the report)."""
        report = VerifyReport()
        said: set[str] = set()

        def problem(e: CvmfsError | str) -> None:
            text = str(e)
            if text in said:  # a broken nested catalog is met by both passes
                return
            if len(said) < MAX_REPORTED:
                said.add(text)
            report.add(text)
            if on_problem is not None:
                on_problem(text)

        for _cat in self.catalogs(problem):
            report.catalogs += 1
        seen: set[str] = set()
        for entry in self.walk("/", problem):
            report.entries += 1
            if progress is not None:
                progress(entry)
            if not entry.is_file or entry.is_external:
                continue
            report.files += 1
            objs: list[tuple[str, str, int]] = []
            if entry.is_chunked:  # the layout itself was checked when the entry was read
                objs.extend((c.hash, SUFFIX_PARTIAL, c.size) for c in entry.chunks)
            elif entry.content_hash is not None:
                objs.append((entry.content_hash, SUFFIX_FILE, entry.size))
            elif entry.size:
                problem(f"{self.fqrn}: {entry.path}: regular file without a content hash")
            for name, suffix, size in objs:
                if name + suffix in seen:
                    continue
                if len(seen) >= MAX_SEEN:
                    seen.clear()
                seen.add(name + suffix)
                try:
                    report.bytes += self.store.check(
                        name, suffix, size=size, compressed=entry.compressed, what=f"object of {entry.path}"
                    )
                    report.objects += 1
                except CvmfsError as e:
                    problem(e)
        return report


class _RawFile(io.RawIOBase):
    def __init__(self, repo: Repository, entry: DirEntry):
        super().__init__()
        self._repo = repo
        self._entry = entry
        self._pos = 0
        self.name = entry.path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._entry.size}[whence]
        new = base + offset
        if new < 0:
            raise ValueError("negative seek position")
        self._pos = new
        return new

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._repo.read(self._entry, self._pos, len(buffer))
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n


# -- opening -------------------------------------------------------------------------------------


def _verify_chain(
    *,
    fqrn: str,
    manifest_bytes: bytes,
    whitelist_bytes: bytes,
    store: ObjectStore,
    keys: list[tuple[str, rsa.PublicKey]],
    now: dt.datetime | None = None,
) -> tuple[Manifest, Whitelist]:
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
    if w.expired(now):
        raise IntegrityError(
            f"{wwhere}: whitelist expired on {w.expires:%Y-%m-%d %H:%M:%S} UTC",
            hint="the repository owner must re-sign the whitelist ('cernvm-build cvmfs resign')",
        )
    # The certificate is named by the manifest, whose signature it is to check: it is bounded
    # (stored and inflated), and neither taken from nor put into the cache before the chain holds.
    cwhere = f"{fqrn}: certificate {m.certificate_hash}X"
    cert_obj = store.raw(
        m.certificate_hash, SUFFIX_CERTIFICATE, what="certificate", limit=MAX_CERTIFICATE_BYTES, cached=False
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
) -> Repository:
    """Open a repository from a Stratum URL (or several, for fail-over) or a local Stratum directory.

    ``verify=False`` skips the signature chain (manifest, whitelist, keys) only; object hashes and
    sizes are always checked. With ``cache_dir`` objects are cached in ``<cache_dir>/<fqrn>/`` and
    the last verified manifest is used when no server answers.
    """
    snapshot = snapshot or SnapshotSpec()
    if isinstance(source, str | Path) and not str(source).startswith(("http://", "https://", "file://")):
        base = Path(source)
        if not (base / MANIFEST_FILE).exists() and (base / "repo" / MANIFEST_FILE).exists():
            base = base / "repo"  # the fixture layout: <fqrn>/{repo,keys}
        source = base
    name = fqrn or local_fqrn(source) or _fqrn_from_source(source)
    if not name:
        raise CvmfsError(
            f"cannot tell the repository name from {source!r}", hint="pass --fqrn NAME (e.g. sft.cern.ch)"
        )
    fetcher = make_fetcher(source, repo=name, proxy=proxy, timeout=timeout, retries=retries)
    cache = ObjectCache(cache_dir / name, repo=name) if cache_dir is not None else None
    store = ObjectStore(fetcher, cache, repo=name)
    keys = _load_keys(public_keys) if verify else []
    if verify and not keys:
        raise CvmfsError(
            f"{name}: no public key given to verify the repository",
            hint="pass the master public key with --key PATH (e.g. keys/<fqrn>.pub)",
        )
    try:
        return _open(name, fetcher, store, cache, keys, snapshot, verify)
    except BaseException:
        store.close()
        raise


def open_on_store(
    name: str, fetcher: Fetcher, store: ObjectStore, public_keys: Sequence[Path | bytes]
) -> Repository:
    """The verified trunk through a caller's fetcher and store (the replicator's: its objects land in
    the replica). The signed files are not saved anywhere; ``Repository.signed_files`` holds them."""
    keys = _load_keys(public_keys)
    if not keys:
        raise CvmfsError(
            f"{name}: no public key given to verify the repository",
            hint="pass the master public key with --key PATH (e.g. keys/<fqrn>.pub)",
        )
    return _open(name, fetcher, store, None, keys, SnapshotSpec(), True)


def _open(
    name: str,
    fetcher: Fetcher,
    store: ObjectStore,
    cache: ObjectCache | None,
    keys: list[tuple[str, rsa.PublicKey]],
    snapshot: SnapshotSpec,
    verify: bool,
) -> Repository:
    offline = False
    m: Manifest | None = None
    w: Whitelist | None = None
    try:
        mbytes = fetcher.get(MANIFEST_FILE, what="manifest", limit=MAX_MANIFEST_BYTES)
        wbytes = fetcher.get(WHITELIST_FILE, what="whitelist", limit=MAX_WHITELIST_BYTES) if verify else b""
    except (Unreachable, NotFound) as e:
        cached = (cache.load_meta(MANIFEST_FILE), cache.load_meta(WHITELIST_FILE)) if cache else (None, None)
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
                fqrn=name, manifest_bytes=mbytes, whitelist_bytes=wbytes, store=store, keys=keys
            )
        else:
            signed = manifest_mod.split_signed(mbytes, f"{name}: {MANIFEST_FILE}")
            m = manifest_mod.parse(signed.body, f"{name}: {MANIFEST_FILE}")
            if m.fqrn and m.fqrn != name:
                raise IntegrityError(f"{name}: {MANIFEST_FILE}: manifest is for repository {m.fqrn!r}")
        if cache is not None and not offline:
            old = cache.load_meta(MANIFEST_FILE)
            if old is not None and verify:
                try:
                    prev = manifest_mod.parse(manifest_mod.split_signed(old, "cached").body)
                except CvmfsError:
                    prev = None
                if prev is not None and prev.timestamp > m.timestamp:
                    raise IntegrityError(
                        f"{name}: {MANIFEST_FILE}: the server offers revision {m.revision} published at "
                        f"{m.timestamp}, older than the revision {prev.revision} this cache already verified",
                        hint=f"a stale mirror or a replay; if the repository was re-created, "
                        f"remove {cache.root}",
                    )
            cache.save_meta(MANIFEST_FILE, mbytes)
            if wbytes:
                cache.save_meta(WHITELIST_FILE, wbytes)

    history: History | None = None
    if m is not None and m.history_hash:
        try:
            hpath = store.plain_file(
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
