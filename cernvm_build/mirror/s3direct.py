"""PutObject over kept-alive ``http.client`` connections, signed by our own AWS Signature Version 4.

Why not botocore for the uploads: per request it costs a few milliseconds of CPU in its event and
serializer machinery (a sync of many small packages is mostly requests), it sends ``Expect:
100-continue`` (one more round trip before the body), and over plain HTTP it hashes every body again
for its payload hash. Ours signs the SHA-256 the source was verified with as ``X-Amz-Content-SHA256``:
the server checks the body against it (Ceph RGW answers ``XAmzContentSHA256Mismatch``), so the check
is end to end and no byte is hashed twice. SigV4 is short and public
(https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html); only botocore's public
pieces are used (the session's credentials, its exception classes, which the callers already map to
one-line errors).

Everything else (LIST, multipart set-up, deletions) stays with botocore.

Each request has a whole-request deadline besides the per-operation socket timeout: a server that
trickles a byte now and then never trips the latter, and would hold the request (and the sync) for
ever. The deadline grows with the body (``DEADLINE_FLOOR`` + size at ``MIN_RATE``; slow enough for
a thin uplink shared by all parallel transfers); one watchdog thread shuts the socket down when it
passes, and the request fails with one line naming the endpoint, bucket and key (not retried: a
server that slow will not finish the next try either).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import random
import socket
import ssl
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import botocore.exceptions

from ..errors import MirrorError

#: statuses and error codes worth another try (what botocore's "standard" retry mode retries)
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_RETRY_CODES = frozenset({"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable", "Throttling"})
#: tries of one S3 request, the first included, botocore's (standard mode) and ours: a bounded
#: budget, so a server that accepts and never answers fails a request in ATTEMPTS × READ_TIMEOUT;
#: not fewer, because the same budget answers throttling (503 SlowDown), a busy server's normal
#: back-pressure during a bulk sync
ATTEMPTS = 5
#: an S3 request's connect timeout, and the longest it waits for the server's next bytes (one socket
#: operation), botocore's and ours. With 5 retries × 120 s a stalled endpoint held `mirror sync` for
#: 725 s (pr33a); a server that is slow but answers within it still works. The read timeout is not
#: shorter because a busy Ceph RGW may think tens of seconds before it answers a big multipart
#: upload's completion, and a retried completion can only fail (the upload is gone).
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: a body read from a file is sent in blocks of this size
BLOCK = 1 << 20
#: the most of a response body read (S3 answers are a few hundred bytes of XML): a server sending an
#: endless error page costs this much memory, and its connection is closed instead of kept
MAX_BODY = 64 << 10

#: a request's whole-request deadline: this much time, plus its body at MIN_RATE bytes per second
DEADLINE_FLOOR = 120.0
MIN_RATE = 64 << 10


def deadline(start: float, floor: float, done: int) -> float:
    """When a transfer that began at ``start`` (monotonic) is late, having moved ``done`` bytes: the
    floor, then MIN_RATE on average. An upload's body is known, so its deadline is fixed; a download
    moves it forward as bytes arrive (``_Watchdog.extend``), so one of unknown size is bounded by
    the rate, not by its cap (128 MiB at MIN_RATE was 36 minutes of a trickling server)."""
    return start + floor + done / MIN_RATE


#: ``observer(method, path, headers)`` for each request sent (request counts, tests)
Observer = Callable[[str, str, dict[str, str]], None]


@dataclass(frozen=True)
class Keys:
    access: str
    secret: str
    token: str | None = None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def query_string(query: dict[str, str]) -> str:
    """SigV4's canonical query string (also what is sent): sorted, each name and value URI-encoded."""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))


def sign(
    method: str, host: str, path: str, headers: dict[str, str], payload_sha256: str, keys: Keys,
    region: str, now: float | None = None, query: str = "",
) -> dict[str, str]:  # fmt: skip
    """``headers`` plus the SigV4 ones (x-amz-date, x-amz-content-sha256, the token, Authorization).
    ``path`` is already URI-encoded (S3 encodes it once), ``query`` is ``query_string``'s."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    out = {k.lower(): v.strip() for k, v in headers.items()}
    out["host"] = host
    out["x-amz-date"] = stamp
    out["x-amz-content-sha256"] = payload_sha256
    if keys.token:
        out["x-amz-security-token"] = keys.token
    names = sorted(out)
    signed = ";".join(names)
    canonical = "\n".join(
        [method, path, query, *(f"{n}:{out[n]}" for n in names), "", signed, payload_sha256]
    )
    scope = f"{stamp[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{keys.secret}".encode(), stamp[:8]), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={keys.access}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return out  # with Host: http.client then sends exactly the signed one


def _client_error(status: int, body: bytes, headers: Any, op: str) -> botocore.exceptions.ClientError:
    code, message = str(status), http.client.responses.get(status, "")
    try:
        root = ET.fromstring(body) if body.lstrip().startswith(b"<") else None
    except ET.ParseError:
        root = None
    if root is not None:
        code = root.findtext("Code") or code
        message = root.findtext("Message") or message
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": dict(headers or {})},
    }
    return botocore.exceptions.ClientError(response, op)


class _Watchdog:
    """One thread that stops each request still running at its deadline (the requests in flight
    are at most the connection pools' size, so a scan per wake-up is cheap). ``stop()`` shuts the
    request's socket down, so its blocked send/recv returns at once; it answers False when there is
    no socket yet (connect has its own timeout), and is then called again half a second later."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], bool]]] = {}
        self._fired: set[int] = set()
        self._next = 0
        self._wake = float("inf")  # when the thread wakes up next, at the latest
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, stop: Callable[[], bool]) -> int:
        with self._cond:
            self._next += 1
            self._armed[self._next] = (deadline, stop)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="s3direct-deadline", daemon=True)
                self._thread.start()
            elif deadline < self._wake:
                self._cond.notify()  # otherwise no wake-up per request: the thread's own is sooner
            return self._next

    def extend(self, token: int, deadline: float) -> None:
        """Move an armed deadline later (no wake-up: the thread's own comes sooner, and re-reads it)."""
        with self._cond:
            armed = self._armed.get(token)
            if armed is not None and deadline > armed[0]:
                self._armed[token] = (deadline, armed[1])

    def fired(self, token: int) -> bool:
        """Whether an armed deadline has passed (its request's socket was shut down)."""
        with self._cond:
            return token in self._fired

    def disarm(self, token: int) -> bool:
        """True if the deadline passed (the request's socket was shut down)."""
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, stop) in list(self._armed.items()):
                    if deadline > now:
                        continue
                    try:
                        stopped = stop()
                    except Exception:  # any: one request's failure must not end the shared thread
                        stopped = True  # already closed or released: nothing left to stop
                    if not stopped:
                        self._armed[token] = (now + 0.5, stop)
                        continue
                    del self._armed[token]
                    self._fired.add(token)
                self._wake = min((d for d, _ in self._armed.values()), default=float("inf"))
                self._cond.wait(None if self._wake == float("inf") else self._wake - now)


def _shutdown(conn: http.client.HTTPConnection) -> bool:
    if conn.sock is None:
        return False
    conn.sock.shutdown(socket.SHUT_RDWR)
    return True


#: shared by every request with a deadline (S3 uploads here, HTTP source downloads in ``source``)
watchdog = _Watchdog()


class DirectPut:
    """PutObject for one endpoint (path-style addressing), thread-safe, with a pool of connections."""

    def __init__(
        self, endpoint_url: str, region: str, credentials: Callable[[], Keys], *, connections: int = 16,
        timeout: float | None = None, cafile: str | None = None, deadline_floor: float = DEADLINE_FLOOR,
    ):  # fmt: skip
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint_url}")
        self.endpoint_url = endpoint_url
        self.https = parts.scheme == "https"
        self.hostname = parts.hostname
        self.port = parts.port
        self.netloc = parts.netloc
        self.base = parts.path.rstrip("/")
        self.region = region
        self.credentials = credentials
        self.timeout = READ_TIMEOUT if timeout is None else timeout  # per socket operation, connect too
        self.deadline_floor = deadline_floor
        self.connections = connections
        self.context = ssl.create_default_context(cafile=cafile) if self.https else None
        self.observers: list[Observer] = []
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @staticmethod
    def usable(endpoint_url: str) -> bool:
        """False where a proxy is configured for the endpoint (botocore honours those; we do not)."""
        parts = urlsplit(endpoint_url)
        return parts.scheme not in urllib.request.getproxies() or bool(
            urllib.request.proxy_bypass(parts.hostname or "")
        )

    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        if self.https:
            return http.client.HTTPSConnection(self.hostname, self.port, timeout=self.timeout,
                                               context=self.context, blocksize=BLOCK)  # fmt: skip
        return http.client.HTTPConnection(self.hostname, self.port, timeout=self.timeout, blocksize=BLOCK)

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.connections:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def put(
        self, bucket: str, key: str, body: bytes | BinaryIO, sha256: str, headers: dict[str, str],
        length: int | None = None,
    ) -> str:  # fmt: skip
        """Write ``body`` (whose SHA-256 is ``sha256``) to ``bucket/key`` with ``headers`` (Content-Type,
        x-amz-meta-*, x-amz-acl, If-Match, If-None-Match); returns the ETag. ``body`` may be a file
        open at its start, ``length`` bytes long (sent in blocks, sought back to 0 for a retry). Raises
        ClientError for an S3 error answer and EndpointConnectionError when the server cannot be
        reached, after retries."""
        return self._send("PUT", bucket, key, {}, body, sha256, headers, "PutObject", length)[0]

    def put_part(self, bucket: str, key: str, upload_id: str, number: int, body: bytes, sha256: str) -> str:
        """UploadPart: one part of a multipart upload, signed with its SHA-256; returns its ETag."""
        query = {"partNumber": str(number), "uploadId": upload_id}
        return self._send("PUT", bucket, key, query, body, sha256, {}, "UploadPart")[0]

    def head(self, bucket: str, key: str) -> tuple[str, str | None] | None:
        """HeadObject: (ETag, our stored SHA-256 or None), or None when there is no such object."""
        try:
            etag, headers = self._send("HEAD", bucket, key, {}, b"", EMPTY_SHA256, {}, "HeadObject")
        except botocore.exceptions.ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        return etag, headers.get("x-amz-meta-sha256")

    def _send(self, method: str, bucket: str, key: str, query: dict[str, str], body: bytes | BinaryIO,
              sha256: str, headers: dict[str, str], op: str, length: int | None = None,
              ) -> tuple[str, dict[str, str]]:  # fmt: skip
        """(ETag, response headers by lower-case name) of a successful request."""
        size = len(body) if isinstance(body, bytes) else length
        if size is None:
            raise ValueError("a file body needs its length")
        path = f"{self.base}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"
        qs = query_string(query)
        target = f"{path}?{qs}" if qs else path
        if method == "PUT":
            headers = {**headers, "content-length": str(size)}
        for name, value in headers.items():
            # an ETag a server listed (If-Match) or a flag's value: CR/LF would add headers of its own
            if not (value.isascii() and value.isprintable()):  # " " to "~", per request: no loop in Python
                raise MirrorError(
                    f"{bucket}/{key}: the {name} value {value!r:.80} cannot be sent as a request header",
                    hint="the S3 server listed a malformed ETag, or a flag holds control characters",
                )
        allowed = deadline(0.0, self.deadline_floor, size)
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
            keys = self.credentials()
            if not isinstance(body, bytes):
                body.seek(0)
            sent = sign(method, self.netloc, path, headers, sha256, keys, self.region, query=qs)
            for observe in self.observers:
                observe(method, path, sent)
            conn = self._connection()
            token = watchdog.arm(time.monotonic() + allowed, functools.partial(_shutdown, conn))
            failure: OSError | http.client.HTTPException | None = None
            try:
                conn.request(method, target, body=body if method == "PUT" else None, headers=sent)
                resp = conn.getresponse()
                data = resp.read(MAX_BODY)
                complete = resp.isclosed()  # read to its end (http.client closes it there)
            except (OSError, http.client.HTTPException) as e:
                failure = e
            finally:
                late = watchdog.disarm(token)  # whatever the outcome: nothing stays armed
            if late:
                # the socket was shut down: an error, or an answer that only looks complete
                conn.close()
                raise self._late(op, bucket, key, size, allowed) from failure
            if failure is not None:
                conn.close()  # a kept-alive connection the server closed, a reset, a timeout
                if isinstance(failure, ssl.SSLCertVerificationError):  # no retry changes the certificate
                    raise botocore.exceptions.SSLError(
                        endpoint_url=self.endpoint_url, error=failure
                    ) from failure
                if attempt == ATTEMPTS - 1:
                    raise botocore.exceptions.EndpointConnectionError(endpoint_url=self.endpoint_url,
                                                                      error=failure) from failure  # fmt: skip
                continue
            if resp.will_close or not complete:
                conn.close()
            else:
                self._release(conn)
            if 200 <= resp.status < 300:
                got = {k.lower(): v for k, v in resp.getheaders()}
                return got.get("etag", ""), got
            error = _client_error(resp.status, data, resp.getheaders(), op)
            code = error.response.get("Error", {}).get("Code", "")
            if (resp.status in _RETRY_STATUS or code in _RETRY_CODES) and attempt < ATTEMPTS - 1:
                continue
            raise error
        raise AssertionError("unreachable")

    def _late(self, op: str, bucket: str, key: str, size: int, allowed: float) -> MirrorError:
        return MirrorError(
            f"{self.endpoint_url}: {op} of {bucket}/{key} ({size} bytes) did not finish within"
            f" {allowed:.0f} s: the server is stalled or trickling",
            hint="check the S3 server's health and load, then re-run (a re-run finishes the sync;"
            " the published indexes were not switched)",
        )
