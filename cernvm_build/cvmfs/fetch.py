"""Getting repository files from Stratum servers (HTTP, with proxies, retries and fail-over) or from a
local directory in the Stratum-0/1 layout.

A fetch hands a stream of blocks to a *consumer* (which hashes, inflates, writes) instead of returning
bytes, so large objects never sit in memory. If the transfer breaks half-way, or the consumer finds the
bytes do not match their hash, the fetch starts over with the next server and a fresh stream; the
consumer must therefore start from scratch on every call.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .. import httpredirect, lazylog
from ..errors import CvmfsError, IntegrityError
from ..fsutil import open_regular
from ..numtext import decimal
from .http1 import Connection, ProtocolError, Response
from .limits import human
from .proxies import ProxyChain

log = lazylog.get(__name__)

BLOCK = 1 << 20
USER_AGENT = "cernvm-build-cvmfs/1"
_AGENT = f"User-Agent: {USER_AGENT}\r\n".encode()
#: idle kept-alive connections per server (proxy), shared by all threads
MAX_IDLE = 16
#: the most of an error or redirect page read to keep its connection; a bigger one closes it
MAX_DRAIN = 64 << 10
#: the slowest transfer kept going (the real client's CVMFS_LOW_SPEED_LIMIT, curl's low-speed abort):
#: fewer bytes per second over a whole ``timeout`` window and the transfer is given up, so a server
#: trickling a byte per read timeout holds an object for about one timeout, not for days; a
#: transfer at least this fast ends within its object's size cap divided by this rate
LOW_SPEED = 1024
#: the longest a fetch waits when a server answers 503 or 429 with ``Retry-After`` (seconds; never
#: more than the fetcher's ``deadline`` either). A server asking for longer is passed over at once
#: for the next proxy or server: a hostile ``Retry-After: 99999999`` must not hold a fetch
MAX_RETRY_AFTER = 10.0
#: redirects followed for one file; the next one is the fetch's failure there
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)

_sleep = time.sleep  # the back-off's (a test records it)


class NotFound(CvmfsError):
    """The file does not exist on any source (HTTP 404 everywhere, or no such local file)."""


class Unreachable(CvmfsError):
    """No source could be reached (connection refused, timeouts, server errors)."""


class TooLarge(IntegrityError):
    """The file is larger than the most its kind can be: reading stopped there."""


def too_large(repo: str, what: str, limit: int) -> TooLarge:
    return TooLarge(
        f"{repo}: {what} is larger than {human(limit)}, the most it can be; reading stopped there",
        hint="a genuine one is far smaller: the server or a proxy is damaged or hostile",
    )


class Missed(CvmfsError):
    """An item a pipelined ``fetch_many(retry=False)`` did not deliver (not fetched again)."""


class _TransportError(Exception):
    """A transfer broke while the consumer was reading; the fetch retries elsewhere."""


TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")
    Consumer = Callable[[Iterator[bytes]], T]
    #: one object of ``fetch_many``: (relpath, consumer, what, limit)
    Item = tuple[str, Consumer[T], str, int | None]


class Fetcher:
    """Base: ``fetch(relpath, consume)`` returns what the consumer made of the file's bytes."""

    description = ""

    def fetch(self, relpath: str, consume: Consumer[T], *, what: str, limit: int | None = None) -> T:
        """What ``consume`` made of the file's blocks; TooLarge once more than ``limit`` bytes came."""
        raise NotImplementedError

    def fetch_many(
        self, items: Sequence[Item[T]], *, retry: bool = True
    ) -> Iterator[tuple[int, T | CvmfsError]]:
        """Each item's (relpath, consumer, what, limit) result, or its error, in order, as
        (index, result): one item's failure is that item's alone. ``retry`` False (a boot list's
        batches): what a pipeline does not deliver is that item's error at once, not fetched again
        one by one (``HttpFetcher``)."""
        for i, item in enumerate(items):
            yield i, self._fetch_alone(item)

    def _fetch_alone(self, item: Item[T]) -> T | CvmfsError:
        relpath, consume, what, limit = item
        try:
            return self.fetch(relpath, consume, what=what, limit=limit)
        except CvmfsError as e:
            return e

    def get(self, relpath: str, *, what: str, limit: int | None = None) -> bytes:
        return self.fetch(relpath, lambda blocks: b"".join(blocks), what=what, limit=limit)


class LocalFetcher(Fetcher):
    def __init__(self, root: Path, *, repo: str):
        self.root = root
        self.repo = repo
        self.description = str(root)

    def fetch(self, relpath: str, consume: Consumer[T], *, what: str, limit: int | None = None) -> T:
        path = self.root / relpath
        try:
            # a FIFO where a file should be waited for a writer for ever (pr18d finding 3)
            f = open_regular(path)
        except FileNotFoundError as e:
            raise NotFound(
                f"{self.repo}: {what} not found at {path}",
                hint="the repository directory is incomplete or the hash is wrong",
            ) from e
        except OSError as e:
            raise CvmfsError(
                f"{self.repo}: {what} cannot be read at {path}: {e.strerror}",
                hint="a Stratum directory holds regular files (no FIFO, device or folder in their place)",
            ) from e
        with f:

            def blocks() -> Iterator[bytes]:
                got = 0
                while block := f.read(BLOCK):
                    got += len(block)
                    if limit is not None and got > limit:  # at most one BLOCK read past the cap
                        raise too_large(self.repo, what, limit)
                    yield block

            return consume(blocks())


class _HttpStatus(Exception):
    def __init__(self, url: str, code: int, reason: str, retry_after: float | None = None):
        super().__init__(f"{url}: HTTP {code} {reason}")
        self.code = code
        self.retry_after = retry_after  # seconds the server asked to wait (503, 429), if it said


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` value in seconds from ``now`` (RFC 9110: delay-seconds or an HTTP-date;
    a date in the past is 0), or None when absent or not one of those (then the usual back-off)."""
    if value is None:
        return None
    text = value.strip()
    seconds = decimal(text, 32)
    if seconds is not None:
        return float(seconds)  # at most 32 digits: a float, however large
    # deliberate lazy import (the rare path: a server asking to wait until a date): email.utils pulls in
    # socket's, calendar's and locale's module code, ~10 % of the initrd mount's import CPU
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": not an HTTP-date (those are GMT)
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Connections:
    """Idle kept-alive connections by (scheme, server): one fetcher's own, or shared by the fetchers of
    many repositories on the same servers (the monitor probes a Stratum-1's repositories through one)."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, str], list[Connection]] = {}
        self.lock = threading.Lock()


class HttpFetcher(Fetcher):
    """Servers are tried in order, starting with the last one that worked; each through the proxy
    chain (``proxies.ProxyChain``: groups in order, load shared within a group, sticky), each proxy
    ``retries`` extra times with a short back-off on transient failures.

    Connections are kept alive (what a Stratum client does with curl): for many small objects,
    connection set-up would otherwise cost more than the transfer. Idle ones are shared by all
    threads (at most ``MAX_IDLE`` per server), not kept per thread: libfuse starts and ends its worker
    threads as load comes and goes, and per-thread connections were set up again for each new one.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        repo: str,
        proxy: str | None = None,
        timeout: float = 10,
        retries: int = 2,
        backoff: float = 0.1,
        connections: Connections | None = None,
        deadline: float | None = None,
    ):
        """``deadline``: the most seconds one file's body may take, however slowly it trickles in
        (``timeout`` bounds one read; a server sending a byte per timeout would hold a probe for
        days). None for the reader's own fetches: a big object on a slow link is genuine there."""
        if not urls:
            raise CvmfsError(f"{repo}: no server URL given")
        self.urls = [u.rstrip("/") for u in urls]
        #: each server URL split once (scheme, netloc, path): an object's URL is its path plus the
        #: object's, with no ``urlsplit`` per object (~8 µs each on a cold read's thousands of GETs);
        #: None where the URL has a query or fragment (then every URL is split as it comes)
        self._bases = [_split_base(u) for u in self.urls]
        self.repo = repo
        self.timeout = timeout
        self.deadline = deadline
        self.retries = max(0, retries)
        self.backoff = backoff
        self.proxies = ProxyChain(proxy)
        self._current = 0
        pool = connections or Connections()
        self._idle = pool.idle
        self._idle_lock = pool.lock
        self.description = ", ".join(self.urls)

    def fetch(self, relpath: str, consume: Consumer[T], *, what: str, limit: int | None = None) -> T:
        n = len(self.urls)
        last_error = ""
        integrity: IntegrityError | None = None
        not_found = 0
        for k in range(n):
            index = (self._current + k) % n
            url = f"{self.urls[index]}/{relpath}"
            base = self._bases[index]
            split = None
            if base is not None and "?" not in relpath and "#" not in relpath:
                split = (base[0], base[1], f"{base[2]}/{relpath}")
            for proxy in self.proxies.order():
                asked = 0.0  # what the last answer's Retry-After asked for
                bad_data = False
                for attempt in range(self.retries + 1):
                    if attempt:
                        _sleep(max(asked, min(self.backoff * 2 ** (attempt - 1), 2.0)))
                    asked = 0.0
                    try:
                        result = self._get(url, proxy, consume, what, limit, split=split)
                    except _HttpStatus as e:
                        last_error = str(e)
                        if e.code == 404:
                            not_found += 1
                            break
                        if e.code < 500 and e.code != 429:
                            break
                        if e.retry_after is not None and e.code in (429, 503):
                            cap = min(MAX_RETRY_AFTER, self.deadline or MAX_RETRY_AFTER)
                            if e.retry_after > cap:  # not worth the wait: the next proxy or server
                                last_error += (
                                    f" (Retry-After {e.retry_after:.0f} s, more than the {cap:g} s waited)"
                                )
                                break
                            asked = e.retry_after
                        continue
                    except (_TransportError, OSError, ProtocolError, ValueError) as e:
                        reason = e.__cause__ or e
                        last_error = f"{url}{f' via {proxy}' if proxy else ''}: {reason}"
                        log.debug("fetch %s (proxy %s) failed: %s", url, proxy or "DIRECT", reason)
                        continue
                    except IntegrityError as e:
                        integrity = e
                        last_error = f"{url}: {e.message}"
                        bad_data = True
                        break
                    self._current = index
                    self.proxies.worked(proxy)
                    return result
                else:
                    continue
                if bad_data:
                    # the next proxy: bad bytes may be one proxy's (a squid's cached error page), as
                    # the real client switches proxy on bad data; it was the next server only, so
                    # `--proxy 'squid;DIRECT'` failed with DIRECT unasked (pr20a finding 2)
                    continue
                break
        if integrity is not None:
            raise integrity
        if not_found == n:
            raise NotFound(
                f"{self.repo}: {what} not found on any server ({self.description})",
                hint="check the repository name in the URL, or the hash/tag you asked for",
            )
        raise Unreachable(
            f"{self.repo}: {what}: no server could deliver it (last error: {last_error})",
            hint="check the server URLs and --proxy, or use the local cache for what it holds",
        )

    def _connection(self, key: tuple[str, str]) -> Connection:
        """An idle kept-alive connection to ``key`` (one that got bytes or its end while idle is
        closed instead: ``Connection.spoiled``), else a new one."""
        while True:
            with self._idle_lock:
                idle = self._idle.get(key)
                if not idle:
                    return Connection(key[0], key[1], self.timeout)
                conn = idle.pop()
            if not conn.spoiled():
                return conn
            conn.close()

    def _release(self, key: tuple[str, str], conn: Connection) -> None:
        with self._idle_lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def _get(
        self,
        url: str,
        proxy: str | None,
        consume: Consumer[T],
        what: str,
        limit: int | None,
        redirects: int = MAX_REDIRECTS,
        *,
        split: tuple[str, str, str] | None = None,
    ) -> T:
        """``split``: ``url`` as (scheme, netloc, path and query) when the caller knows it."""
        if split is None:
            target = urllib.parse.urlsplit(url)
            query = f"?{target.query}" if target.query else ""
            split = (target.scheme, target.netloc, (target.path or "/") + query)
        scheme, netloc, target_path = split
        if proxy:
            via = urllib.parse.urlsplit(proxy)
            key = (via.scheme or "http", via.netloc)
        else:
            key = (scheme or "http", netloc)
        path = url if proxy else target_path
        conn: Connection | None = self._connection(key)
        assert conn is not None
        reused = conn.sock is not None
        try:
            resp = conn.get(path, netloc, _AGENT)
        except (OSError, ProtocolError):
            conn.close()
            if not reused:
                raise
            # The server closed the idle kept-alive connection: one fresh try, not a failed attempt.
            conn = Connection(key[0], key[1], self.timeout)
            try:
                resp = conn.get(path, netloc, _AGENT)
            except BaseException:
                conn.close()
                raise
        ok = False
        try:
            if resp.status in _REDIRECTS and redirects > 0:
                location = resp.headers.get("location")
                ok = resp.drain(MAX_DRAIN)
                if not location:
                    raise _HttpStatus(url, resp.status, "redirect without Location")
                try:
                    following = urllib.parse.urljoin(url, location)
                    scheme = urllib.parse.urlsplit(following).scheme
                except ValueError:  # a bad IPv6 literal: the error named the URL asked for
                    raise _HttpStatus(url, resp.status, f"redirect to a bad URL {location[:200]!r}") from None
                if scheme not in ("http", "https"):
                    raise _HttpStatus(url, resp.status, f"redirect to a non-HTTP URL {following[:200]!r}")
                why = httpredirect.refusal(url, following)
                if why:  # the downloads' one rule: not into loopback or link-local from outside
                    raise _HttpStatus(url, resp.status, f"redirect to {following[:200]!r} refused: {why}")
                if ok:  # given back before following: a redirect to the same server reuses it
                    self._release(key, conn)
                    ok = False
                    conn = None
                try:
                    return self._get(following, proxy, consume, what, limit, redirects - 1)
                except (_TransportError, OSError, ProtocolError, ValueError) as e:
                    # the error named the URL asked for, not the one that failed (pr18d finding 6)
                    reason = e.__cause__ or e
                    raise _TransportError(f"redirected to {following[:200]!r}: {reason}") from None
            if resp.status != 200:
                ok = resp.drain(MAX_DRAIN)
                said = resp.reason[:200]
                if resp.status in _REDIRECTS:  # one past those followed: "HTTP 302 Found" said nothing
                    said += f", a redirect past the {MAX_REDIRECTS} followed (a loop?)"
                raise _HttpStatus(url, resp.status, said, retry_after(resp.headers.get("retry-after")))
            expected = resp.length  # the declared Content-Length (None: chunked or unsaid)
            if limit is not None and expected is not None and expected > limit:
                raise too_large(self.repo, what, limit)  # refused without reading the body

            result = consume(self._body(resp, limit, what))
            # whatever the consumer left, so the connection can be reused
            ok = resp.drain(MAX_DRAIN)
            return result
        finally:
            if conn is not None:
                if ok:
                    self._release(key, conn)
                else:
                    conn.close()

    def _body(self, resp: Response, limit: int | None, what: str) -> Iterator[bytes]:
        """The body's blocks as they arrive, within ``limit`` bytes, the deadline and the low speed
        limit; _TransportError if it is cut short."""
        expected = resp.length
        until = None if self.deadline is None else time.monotonic() + self.deadline
        got = 0
        window, window_got = time.monotonic(), 0
        while True:
            try:
                # read1: what has arrived (waiting for a whole block could take however long)
                block = resp.read1(BLOCK)
            except (OSError, ProtocolError) as e:
                raise _TransportError(f"transfer broke: {e}") from e
            now = time.monotonic()
            if until is not None and now > until:
                raise _TransportError(f"transfer took more than {self.deadline:g} s ({got} bytes by then)")
            if not block:
                break
            got += len(block)
            if limit is not None and got > limit:  # before the block that crosses it is handed on
                raise too_large(self.repo, what, limit)
            window_got += len(block)
            if now - window >= self.timeout:
                if window_got < LOW_SPEED * (now - window):
                    raise _TransportError(
                        f"transfer slower than {LOW_SPEED} bytes/s for {now - window:.0f} s "
                        f"({got} bytes by then)"
                    )
                window, window_got = now, 0
            yield block
            if got == expected:  # all of a length-bound body: no read more for its end
                return
        if expected is not None and got != expected:
            raise _TransportError(f"transfer ended after {got} of {expected} bytes")

    def fetch_many(
        self, items: Sequence[Item[T]], *, retry: bool = True
    ) -> Iterator[tuple[int, T | CvmfsError]]:
        """Pipelined: all the requests at once on one connection to the server that last worked,
        the answers read in turn (one round trip and one wake-up for a directory's small files, not
        one each). What the pipeline does not deliver whole and good (an error status, a redirect,
        a broken transfer, a consumer's error such as a hash mismatch) is fetched again alone with
        ``fetch`` (its retries and fail-over); only that item fails if that fails too. With
        ``retry`` False it is that item's error at once (``Missed``), and when the pipeline breaks
        every item not answered yet is: a caller holding claims on them gives them back now, not
        after the others' retries (a boot list: its readers must not wait behind its failures), a
        single item is sent the same way, and a consumer's OSError (its disk full) is raised, not
        taken for a transport error and retried."""
        if not items:  # nothing to send: no connection opened (a boot-list batch all claimed elsewhere)
            return
        if (retry and len(items) < 2) or self._bases[self._current] is None:
            yield from super().fetch_many(items, retry=retry)
            return
        index = self._current
        scheme, netloc, base = self._bases[index]  # type: ignore[misc]
        proxy = self.proxies.order()[0]
        if proxy:
            via = urllib.parse.urlsplit(proxy)
            key = (via.scheme or "http", via.netloc)
            paths = [f"{self.urls[index]}/{it[0]}" for it in items]
        else:
            key = (scheme or "http", netloc)
            paths = [f"{base}/{it[0]}" for it in items]
        conn: Connection | None = self._connection(key)
        done = 0  # items answered by the pipeline so far
        own: OSError | None = None
        try:
            assert conn is not None
            conn.send(paths, netloc, _AGENT)
            while done < len(items):
                item = items[done]
                _, consume, what, limit = item
                resp = Response(conn)
                failed: bool | CvmfsError = resp.status != 200 or (
                    limit is not None and (resp.length or 0) > limit
                )
                result = None
                if not failed:
                    try:
                        result = consume(self._body(resp, limit, what))
                    except _TransportError:
                        break  # this one and the rest: one by one
                    except CvmfsError as e:  # e.g. a hash mismatch: this one again, alone
                        failed = e
                    except OSError as e:  # the consumer's own (its disk: the body's are wrapped)
                        if retry:
                            raise
                        own = e  # no server can help: the caller's to see, not retried
                        break
                in_step = resp.drain(MAX_DRAIN) or resp.complete  # the next answer is next
                if failed and not retry:
                    yield done, failed if isinstance(failed, CvmfsError) else self._missed(what, netloc, resp)
                else:
                    yield done, self._fetch_alone(item) if failed else result  # type: ignore[misc]
                done += 1
                if not in_step:
                    break
            else:
                if conn.reusable_idle():
                    self._release(key, conn)
                    conn = None
        except (OSError, ProtocolError, ValueError) as e:
            log.debug("pipelined fetch from %s failed after %d of %d: %s", netloc, done, len(items), e)
        finally:
            if conn is not None:
                conn.close()
        if own is not None:
            raise own
        for i in range(done, len(items)):  # what the pipeline left: one by one
            if retry:
                yield i, self._fetch_alone(items[i])
            else:
                yield i, Missed(f"{self.repo}: {items[i][2]}: the pipelined fetch from {netloc} broke off")

    def _missed(self, what: str, netloc: str, resp: Response) -> CvmfsError:
        if resp.status == 404:
            return NotFound(f"{self.repo}: {what} not found on {netloc}")
        if resp.status != 200:
            return Missed(f"{self.repo}: {what}: {netloc} answered {resp.status} {resp.reason[:100]}")
        return Missed(f"{self.repo}: {what}: over its size limit on {netloc}")


def _split_base(url: str) -> tuple[str, str, str] | None:
    """A server URL as (scheme, netloc, path), the start of each object's URL; None if it has a
    query or fragment (objects' URLs are then split one by one)."""
    u = urllib.parse.urlsplit(url)
    if u.query or u.fragment or url.endswith(("?", "#")):
        return None
    return u.scheme, u.netloc, u.path


def make_fetcher(
    source: str | Path | Sequence[str],
    *,
    repo: str,
    proxy: str | None = None,
    timeout: float = 10,
    retries: int = 2,
) -> Fetcher:
    """A fetcher for a URL, a list of URLs (fail-over), or a local Stratum directory."""
    if isinstance(source, Path):
        return LocalFetcher(source, repo=repo)
    if isinstance(source, str):
        if source.startswith(("http://", "https://")):
            return HttpFetcher([source], repo=repo, proxy=proxy, timeout=timeout, retries=retries)
        if source.startswith("file://"):
            return LocalFetcher(Path(source[7:]), repo=repo)
        return LocalFetcher(Path(source), repo=repo)
    urls = list(source)
    if len(urls) == 1 and not urls[0].startswith(("http://", "https://")):
        return make_fetcher(urls[0], repo=repo, proxy=proxy, timeout=timeout, retries=retries)
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if bad:
        raise CvmfsError(f"{repo}: a list of sources must be HTTP URLs, got {bad[0]!r}")
    return HttpFetcher(urls, repo=repo, proxy=proxy, timeout=timeout, retries=retries)
