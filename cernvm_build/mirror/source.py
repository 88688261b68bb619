"""Where a repository is read from: a local tree, an http(s) URL, or a published ``s3://`` prefix.

All three answer the same questions (read a small file, hash a big one, list what is there) so the
yum and apt verifiers check a source before mirroring and a published mirror afterwards the same way.
An HTTP source is downloaded into a staging folder while it is verified; a re-run keeps every staged
file whose hash still matches, so an interrupted download resumes instead of starting over.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote, urljoin

import botocore.exceptions
import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions
from requests.utils import requote_uri

from .. import httpredirect
from ..errors import MirrorError
from ..fsutil import TooLarge, atomic_file, read_capped, remove_tree
from .hashcache import HashCache, hash_stream
from .s3client import S3Client, S3Url, http_status, s3_error
from .s3direct import DEADLINE_FLOOR, MIN_RATE, deadline, watchdog
from .s3plan import MANIFEST, check_key_name, list_remote, walk_files

CHUNK = 1 << 20
#: the most of an index file (repomd.xml, primary.xml.gz, Release, Packages.xz …) read into memory:
#: real ones are tens of MiB; a hostile or broken server's endless one stops here
MAX_INDEX = 128 << 20


class Source(Protocol):
    #: how messages name this source (a path, URL or s3:// URL)
    name: str

    def read(self, rel: str) -> bytes | None:
        """The whole file, or None if it does not exist."""
        ...

    def digest(
        self, rel: str, algo: str, expect: str | None = None, size: int | None = None
    ) -> tuple[str, int] | None:
        """``(hex digest, size)`` of a file, or None if it does not exist. ``expect`` and ``size`` are
        what the index says: a download keeps a staged copy with that hash, and stops one byte past
        that size (the size it then reports is wrong, which is the finding)."""
        ...

    def list(self) -> list[str] | None:
        """Every file, or None if this kind of source cannot be listed (HTTP)."""
        ...

    def remembered(self, rel: str, algo: str) -> tuple[str, int] | None:
        """A digest known without reading the file (hash cache), else None."""
        ...

    def local_path(self, rel: str) -> Path | None:
        """The file on this machine (after ``digest`` for a downloaded one), or None (S3)."""
        ...


def _read_chunks(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            yield block


def _too_big(name: str) -> MirrorError:
    return MirrorError(
        f"{name}: an index file larger than {MAX_INDEX >> 20} MiB",
        hint="the source is broken or hostile (real indexes are far smaller)",
    )


def _capped(chunks: Iterable[bytes], name: str) -> bytes:
    """The chunks joined, or MirrorError past MAX_INDEX (before holding more than that)."""
    out = bytearray()
    for block in chunks:
        out += block
        if len(out) > MAX_INDEX:
            raise _too_big(name)
    return bytes(out)


#: what a client would read differently from the key the mirror checks and publishes: a query
#: (``?``) or fragment (``#``) cut from the URL, a ``%``-escape decoded by the server, a control character
_UNSAFE_CHARS = re.compile(r"[?#\\\x00-\x1f\x7f]|%[0-9A-Fa-f]{2}")


def _shown(rel: str) -> str:
    return rel.encode("unicode_escape").decode("ascii")


class StagedNames:
    """The names a run stages in one folder, and the folders above them (staging runs in threads):
    a source naming both a file and a path below it (``a.rpm`` and ``a.rpm/b.rpm``) is malformed,
    one line naming both, before either is staged ("Is a directory" from the second one's write)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._named: set[str] = set()
        self._folders: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, rel: str) -> list[str]:
        """Claim ``rel``; the folders above it, outermost first."""
        parts = rel.split("/")
        folders = ["/".join(parts[:i]) for i in range(1, len(parts))]
        with self._lock:
            file_above = next((f for f in folders if f in self._named), None)
            if file_above is not None:
                raise self._clash(file_above, rel)
            if rel in self._folders:
                below = next(n for n in self._named if n.startswith(f"{rel}/"))
                raise self._clash(rel, below)
            self._named.add(rel)
            self._folders.update(folders)
        return folders

    def _clash(self, name: str, below: str) -> MirrorError:
        return MirrorError(
            f"{self.source}: the source names both the file '{_shown(name)}' and '{_shown(below)}' below it",
            hint="a repository holds files, not a file and a folder of one name: the source is malformed",
        )


def safe_rel(rel: str) -> str:
    """Refuse paths from repository metadata that would leave the repository (``../``, absolute) or
    name another object for a client than the key that is checked (``./x``, ``a//b``, ``?#%2e``)."""
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("..", ".", "") for p in parts) or _UNSAFE_CHARS.search(rel):
        shown = rel.encode("unicode_escape").decode("ascii")
        raise MirrorError(f"unsafe path '{shown}' in repository metadata", hint="the source is malformed")
    return rel


class LocalSource:
    def __init__(self, root: Path, cache: HashCache | None = None):
        self.cache = cache
        if not root.is_dir():
            raise MirrorError(f"{root}: no such directory", hint="give the repository's top folder or a URL")
        self.root = root
        self.name = str(root)
        self._listed: list[str] | None = None

    def read(self, rel: str) -> bytes | None:
        p = self.root / safe_rel(rel)
        if not p.is_file():
            return None
        try:
            return read_capped(p, MAX_INDEX)  # one read, not chunks joined and copied
        except TooLarge:
            raise _too_big(str(p)) from None

    def digest(
        self, rel: str, algo: str, expect: str | None = None, size: int | None = None
    ) -> tuple[str, int] | None:
        p = self.root / safe_rel(rel)
        if not p.is_file():
            return None
        if self.cache is not None:
            digest, size, _ = self.cache.digest(p, algo)
            return digest, size
        return hash_stream(_read_chunks(p), algo)

    def remembered(self, rel: str, algo: str) -> tuple[str, int] | None:
        if self.cache is None:
            return None
        hit = self.cache.remembered(self.root / safe_rel(rel), algo)
        return (hit[0], hit[1]) if hit else None

    def local_path(self, rel: str) -> Path | None:
        p = self.root / safe_rel(rel)
        return p if p.is_file() else None

    @contextlib.contextmanager
    def prehashing(self, workers: int) -> Iterator[None]:
        """Hash every file of the tree into the cache in the background while inside (the biggest
        first), so that the verification's hashing overlaps its gpg runs and index parsing; the sync
        hashes the whole tree anyway. The cache hashes each file once (a reader waits for a file being
        hashed). Nothing is decided here: errors are left for the verification to meet and report."""
        if self.cache is None:
            yield
            return
        cache = self.cache
        paths = sorted(((p.stat().st_size, p) for p in map(self.root.joinpath, self.list() or [])
                        if p.is_file()), reverse=True)  # fmt: skip

        def one(path: Path) -> None:
            try:
                cache.digest(path)
            except (OSError, MirrorError):
                pass

        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cernvm-prehash")
        try:
            for _, p in paths:
                pool.submit(one, p)
            yield
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def list(self) -> list[str] | None:
        # the sync's own walk (scan_local): loops pruned, names that cannot be keys refused; walked
        # once per source (the prehashing and the verification both ask, one after the other)
        if self._listed is None:
            out = []
            for rel, _ in walk_files(self.root):
                check_key_name(self.root, rel)
                out.append(rel)
            self._listed = sorted(out)
        return self._listed


def _stop(resp: requests.Response) -> bool:
    """Shut the socket's reading side down, so a blocked read returns."""
    shutdown = getattr(resp.raw, "shutdown", None)
    if shutdown is not None:  # urllib3 2.3 and later
        shutdown()
        return True
    # older urllib3 (Debian 12 has 1.26): the same socket, found as 2.3 finds it -- the connection's,
    # or, once http.client handed a closing connection's socket to the response, the response's
    sock = getattr(getattr(resp.raw, "_connection", None), "sock", None)
    if sock is None:
        fp = getattr(getattr(resp.raw, "_fp", None), "fp", None)  # http.client's makefile reader
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if sock is not None:  # none: read to its end or released, nothing left to stop
        sock.shutdown(socket.SHUT_RD)
    return True


#: per thread, the list a request being sent appends its connection to (``Deadlined.get``)
_sending = threading.local()


def _record(conn: Any) -> None:
    conns = getattr(_sending, "conns", None)
    if conns is not None:
        conns.append(conn)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _record(self)  # before it connects: the watchdog waits for its socket
        super().request(*args, **kwargs)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _record(self)
        super().request(*args, **kwargs)


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections say which one a request uses, before it has a response:
    the deadline can then shut a request down while it waits for the status line and headers."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


class _Session(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # requests reads a redirect's body whole to follow it, even with allow_redirects=False (for
        # ``Response.next``): with no target it never does; ``Deadlined.get`` follows them itself
        return None


def deadline_session() -> requests.Session:
    """A ``requests.Session`` whose GETs ``Deadlined.get`` can stop before the headers arrive, and
    whose redirects only ``Deadlined.get`` follows."""
    session = _Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, _Adapter())
    return session


def failure(e: BaseException) -> str:
    """What went wrong at the bottom of a requests/urllib3 error, short: the error's own text is a
    chain of wrappers ("_HTTPPool(host=..., port=1): Max retries exceeded with url: ... (Caused by
    NewConnectionError("_HTTPConnection(host=...") that never reached the "Connection refused" or
    "got more than 100 headers" at its end within 200 characters."""
    seen: set[int] = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "reason", None)  # urllib3's MaxRetryError
        if not isinstance(inner, BaseException):
            inner = next((a for a in e.args if isinstance(a, BaseException)), None) or e.__cause__
        if inner is None:
            break
        e = inner
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(text[:200].split()) or type(e).__name__


class RedirectRefused(requests.exceptions.InvalidURL):
    """A redirect ``httpredirect.refusal`` refuses."""


class Deadlined:
    """One streamed GET (or HEAD) under one deadline covering connect, status line, headers and
    body: a floor, then MIN_RATE on average (``s3direct.deadline``), moved forward as body bytes
    arrive (``moved``), enforced by the one watchdog thread shutting the socket down. A server
    trickling its status line or headers a byte a second held a request for ever: the deadline
    started after the headers. Shared by the mirror's HTTP source, cernvm-launch's downloads
    (``launch.download``) and the site check's external links (``site.check``)."""

    def __init__(self, floor: float) -> None:
        self.floor = floor
        self.start = time.monotonic()
        self.got = 0
        self._token: int | None = None
        self._late = False
        self._resp: requests.Response | None = None
        self._conns: list[Any] = []

    def _shut(self) -> bool:
        if self._resp is not None:
            return _stop(self._resp)
        sock = getattr(self._conns[-1], "sock", None) if self._conns else None
        if sock is None:
            return False  # not connected yet (connect has its own timeout): asked again soon
        sock.shutdown(socket.SHUT_RDWR)
        return True

    @contextlib.contextmanager
    def get(
        self, session: requests.Session, url: str, method: str = "GET", **kwargs: Any
    ) -> Iterator[requests.Response]:
        """``session.request(method, url, stream=True, **kwargs)`` (a ``deadline_session``) under
        the deadline, redirects followed here (``_follow``), not by requests."""
        self._token = watchdog.arm(deadline(self.start, self.floor, 0), self._shut)
        try:
            _sending.conns = self._conns
            try:
                resp = self._follow(session, method, url, kwargs)
            except requests.RequestException:
                raise
            except ValueError as e:
                # a redirect's Location requests cannot parse ("http://[::1", a label "a..b", bytes
                # not UTF-8) is a bare ValueError, urllib3's LocationParseError or a
                # UnicodeDecodeError, not a RequestException: a traceback in every caller
                raise requests.exceptions.InvalidURL(
                    f"a redirect to a URL that cannot be read ({e})"
                ) from None
            finally:
                _sending.conns = None
            with resp:
                self._resp = resp
                yield resp
        finally:
            self._late = watchdog.disarm(self._token) or self._late
            self._token = None

    def _follow(
        self, session: requests.Session, method: str, url: str, kwargs: dict[str, Any]
    ) -> requests.Response:
        """The answer to ``method`` (GET or HEAD: no body to resend) of ``url`` after its
        redirects, each checked by ``httpredirect.refusal``. requests read each redirect's body
        whole into memory before following it: a 302 with an endless body took 2.7 GB in 30 s,
        past a 5 s deadline, to a MemoryError traceback (pr33a). Here a redirect's body is never
        read."""
        for _ in range(httpredirect.MAX_REDIRECTS + 1):
            resp = session.request(method, url, stream=True, allow_redirects=False, **kwargs)
            target = requests.Session.get_redirect_target(session, resp)
            if target is None:
                return resp
            resp.close()  # unread: the connection is dropped, not reused
            target = urljoin(url, requote_uri(target))
            why = httpredirect.refusal(url, target)
            if why:
                raise RedirectRefused(f"a redirect to {target} ({why})")
            url = target
        raise requests.TooManyRedirects(
            f"more than {httpredirect.MAX_REDIRECTS} redirects (the last to {url})"
        )

    def moved(self, n: int) -> None:
        """``n`` more body bytes arrived: the deadline moves forward."""
        self.got += n
        if self._token is not None:
            watchdog.extend(self._token, deadline(self.start, self.floor, self.got))

    @property
    def late(self) -> bool:
        """Whether the deadline passed (the socket was shut down: what was read may look complete)."""
        return self._late or (self._token is not None and watchdog.fired(self._token))


class HttpSource:
    """Reads over HTTP(S), keeping a verified copy of everything it read under ``staging``."""

    def __init__(
        self,
        base_url: str,
        staging: Path,
        *,
        timeout: float = 60,
        cache: HashCache | None = None,
        deadline_floor: float = DEADLINE_FLOOR,
    ):
        self.cache = cache
        self.deadline_floor = deadline_floor
        self.base = base_url.rstrip("/") + "/"
        self.name = self.base
        self.staging = staging
        self.timeout = timeout
        self.session = deadline_session()
        self.fetched: set[str] = set()
        #: the names this run downloads (``_make_way``)
        self._claims = StagedNames(self.base)

    def _url(self, rel: str) -> str:
        return self.base + quote(safe_rel(rel))

    def _download(self, rel: str, size: int | None = None) -> Path | None:
        """Download ``rel`` into the staging folder: at most ``size`` + 1 bytes when the index gives
        the size (enough to see it is wrong), else MAX_INDEX. The S3 uploads' deadline rule (a floor,
        then MIN_RATE on average: ``s3direct.deadline``), moved forward as bytes arrive, stops a
        server that trickles a byte per timeout, which no per-read timeout does, whatever the size."""
        dest = self.staging / rel
        limit = (size if size is not None else MAX_INDEX) + 1
        url = self._url(rel)
        self._make_way(rel)
        dl = Deadlined(self.deadline_floor)
        got = 0
        try:
            # identity: the bytes are hashed as they are, and no Content-Encoding inflates them
            headers = {"Accept-Encoding": "identity"}
            with dl.get(self.session, url, timeout=self.timeout, headers=headers) as resp:
                if resp.status_code == 404:
                    return None
                if resp.status_code != 200:
                    # a 206, 204 or 304 to a plain GET is not the file: it was staged as if it were
                    # (an index then failed its parse or signature, a package its hash, with lines
                    # blaming the repository, not the server)
                    raise MirrorError(
                        f"{url}: HTTP {resp.status_code} {resp.reason or ''}".rstrip()
                        + ("" if resp.status_code >= 300 else ", not the file"),
                        hint="check the URL; a re-run resumes the download",
                    )
                with atomic_file(dest) as f:
                    for block in resp.raw.stream(min(CHUNK, limit), decode_content=False):
                        f.write(block[: limit - got])
                        got = min(limit, got + len(block))
                        if got == limit:
                            break
                        dl.moved(len(block))
                    if dl.late:  # the socket was shut down: what was read may only look complete
                        raise self._late(url, got, time.monotonic() - dl.start)
                    if size is None and got > MAX_INDEX:
                        raise _too_big(url)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
            if dl.late:
                raise self._late(url, got, time.monotonic() - dl.start) from e
            raise MirrorError(
                f"{url}: cannot download: {e.__class__.__name__}: {failure(e)}",
                hint="check the URL and the network; a re-run resumes the download",
            ) from e
        self.fetched.add(rel)
        return dest

    def _make_way(self, rel: str) -> None:
        """Claim ``rel`` for this run and remove staged copies in its way: a file where one of its
        folders belongs, a folder where it belongs. They hold an earlier publication's names
        (staged copies are throwaway); one such run left a staging folder that every later run
        failed on with "Is a directory" (pr20a finding 5). A file and a path below it both named
        in this run are a malformed source's: one line, before either is staged."""
        folders = self._claims.claim(rel)
        for f in folders:  # one lstat a level (is_dir, is_symlink, lexists were three)
            p = self.staging / f
            try:
                if stat.S_ISDIR(os.lstat(p).st_mode):
                    continue
            except FileNotFoundError:
                break  # nothing is staged below a name that is not there
            p.unlink()
            break  # nor below a name that is no folder
        dest = self.staging / rel
        try:
            folder = stat.S_ISDIR(os.lstat(dest).st_mode)
        except FileNotFoundError:
            folder = False
        if folder:
            remove_tree(dest)

    def _late(self, url: str, got: int, elapsed: float) -> MirrorError:
        return MirrorError(
            f"{url}: the download fell below {MIN_RATE >> 10} KiB/s on average after the first"
            f" {self.deadline_floor:g} s ({got} bytes in {elapsed:.0f} s):"
            " the server is stalled or trickling",
            hint="check the server; a re-run resumes the download",
        )

    def read(self, rel: str) -> bytes | None:
        # Indexes are always fetched fresh: a staged copy may be from an older publication.
        p = self._download(rel)
        return p.read_bytes() if p else None

    def digest(
        self, rel: str, algo: str, expect: str | None = None, size: int | None = None
    ) -> tuple[str, int] | None:
        p = self.staging / safe_rel(rel)
        if expect is not None and p.is_file():
            got = self._hash(p, algo)
            if got[0] == expect:
                self.fetched.add(rel)
                return got
        fresh = self._download(rel, size)
        return self._hash(fresh, algo) if fresh else None

    def _hash(self, path: Path, algo: str) -> tuple[str, int]:
        if self.cache is not None:
            digest, size, _ = self.cache.digest(path, algo)
            return digest, size
        return hash_stream(_read_chunks(path), algo)

    def list(self) -> list[str] | None:
        return None

    def remembered(self, rel: str, algo: str) -> tuple[str, int] | None:
        return None  # staged copies may be stale: digest() compares them with what the index says

    def local_path(self, rel: str) -> Path | None:
        p = self.staging / safe_rel(rel)
        return p if rel in self.fetched and p.is_file() else None

    def prune(self, keep: set[str]) -> None:
        """Remove staged files that the current publication does not contain."""
        for dirpath, _, files in os.walk(self.staging):
            for f in files:
                rel = (Path(dirpath) / f).relative_to(self.staging).as_posix()
                if rel not in keep:
                    os.unlink(Path(dirpath) / f)


class S3Source:
    """A published mirror, read back through the S3 API (for ``mirror verify``).

    With ``stage``, the files whose names end in ``stage_suffixes`` are kept there as they are read and
    hashed (``local_path``), so that tools that need a file (``rpmkeys -K``) check the bytes the bucket
    served without a second download."""

    def __init__(
        self, client: S3Client, url: S3Url, stage: Path | None = None, stage_suffixes: tuple[str, ...] = ()
    ):
        self.client = client
        self.url = url
        self.name = str(url)
        self.stage = stage
        self.stage_suffixes = stage_suffixes
        self._staged = StagedNames(self.name)

    def _get(self, rel: str) -> Iterable[bytes] | None:
        try:
            resp = self.client.get_object(Bucket=self.url.bucket, Key=self.url.key(safe_rel(rel)))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            if http_status(e) == 404:
                return None
            raise s3_error(e, f"{self.url}/{rel}") from e
        body = resp["Body"]
        return iter(lambda: body.read(CHUNK), b"")

    def read(self, rel: str) -> bytes | None:
        chunks = self._get(rel)
        return _capped(chunks, f"{self.url}/{rel}") if chunks is not None else None

    def digest(
        self, rel: str, algo: str, expect: str | None = None, size: int | None = None
    ) -> tuple[str, int] | None:
        staged = self.stage is not None and rel.endswith(self.stage_suffixes)
        if staged:  # ``a.rpm`` and ``a.rpm/b.rpm`` both named: one line, not "Is a directory"
            self._staged.claim(safe_rel(rel))
        got = self._get(rel)
        if got is None:
            return None
        # as a download: one byte past the size the index gives (else MAX_INDEX) shows it is wrong; an
        # endpoint's endless body was read, hashed and (staged) written to disk to its end
        chunks = _upto(got, (size if size is not None else MAX_INDEX) + 1)
        if self.stage is None or not staged:
            return hash_stream(chunks, algo)
        with atomic_file(self.stage / rel, durable=False) as f:  # a throwaway copy
            return hash_stream(_tee(chunks, f), algo)

    def remembered(self, rel: str, algo: str) -> tuple[str, int] | None:
        return None

    def local_path(self, rel: str) -> Path | None:
        if self.stage is None:
            return None
        p = self.stage / safe_rel(rel)
        return p if p.is_file() else None

    def list(self) -> list[str] | None:
        return sorted(r for r in list_remote(self.client, self.url) if r != MANIFEST)


def _upto(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """The chunks up to ``limit`` bytes in all; the rest is not read."""
    for block in chunks:
        if len(block) >= limit:
            yield block[:limit]
            return
        limit -= len(block)
        yield block


def _tee(chunks: Iterable[bytes], out: IO[bytes]) -> Iterator[bytes]:
    for block in chunks:
        out.write(block)
        yield block


def open_source(spec: str, staging_root: Path, cache: HashCache | None = None) -> LocalSource | HttpSource:
    """A local folder or an http(s) URL; HTTP sources stage under ``staging_root/<hash of URL>``."""
    if spec.startswith(("http://", "https://")):
        tag = hashlib.sha256(spec.rstrip("/").encode()).hexdigest()[:16]
        return HttpSource(spec, staging_root / tag, cache=cache)
    if "://" in spec:
        raise MirrorError(f"'{spec}': unsupported source", hint="give a local folder or an http(s) URL")
    return LocalSource(Path(spec), cache)


def clear_staging(src: HttpSource) -> None:
    shutil.rmtree(src.staging, ignore_errors=True)
