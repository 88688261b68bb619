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

Everything else (LIST, HEAD, multipart, deletions) stays with botocore.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import random
import ssl
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.exceptions

#: statuses and error codes worth another try (what botocore's "standard" retry mode retries)
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_RETRY_CODES = frozenset({"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable", "Throttling"})
ATTEMPTS = 5

#: ``observer(method, path, headers)`` for each request sent (request counts, tests)
Observer = Callable[[str, str, dict[str, str]], None]


@dataclass(frozen=True)
class Keys:
    access: str
    secret: str
    token: str | None = None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign(
    method: str, host: str, path: str, headers: dict[str, str], payload_sha256: str, keys: Keys,
    region: str, now: float | None = None,
) -> dict[str, str]:  # fmt: skip
    """``headers`` plus the SigV4 ones (x-amz-date, x-amz-content-sha256, the token, Authorization) for
    a request without a query string. ``path`` is already URI-encoded (S3 encodes it once)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    out = {k.lower(): v.strip() for k, v in headers.items()}
    out["host"] = host
    out["x-amz-date"] = stamp
    out["x-amz-content-sha256"] = payload_sha256
    if keys.token:
        out["x-amz-security-token"] = keys.token
    names = sorted(out)
    signed = ";".join(names)
    canonical = "\n".join([method, path, "", *(f"{n}:{out[n]}" for n in names), "", signed, payload_sha256])
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


class DirectPut:
    """PutObject for one endpoint (path-style addressing), thread-safe, with a pool of connections."""

    def __init__(
        self, endpoint_url: str, region: str, credentials: Callable[[], Keys], *, connections: int = 16,
        timeout: float = 120.0, cafile: str | None = None,
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
        self.timeout = timeout
        self.connections = connections
        self.context = ssl.create_default_context(cafile=cafile) if self.https else None
        self.observers: list[Observer] = []
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @staticmethod
    def usable(endpoint_url: str) -> bool:
        """False where a proxy is configured for the endpoint (botocore honours those; we do not)."""
        host = urlsplit(endpoint_url).hostname or ""
        scheme = urlsplit(endpoint_url).scheme
        return scheme not in urllib.request.getproxies() or bool(urllib.request.proxy_bypass(host))

    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        if self.https:
            return http.client.HTTPSConnection(self.hostname, self.port, timeout=self.timeout,
                                               context=self.context)  # fmt: skip
        return http.client.HTTPConnection(self.hostname, self.port, timeout=self.timeout)

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

    def put(self, bucket: str, key: str, body: bytes, sha256: str, headers: dict[str, str]) -> str:
        """Write ``body`` (whose SHA-256 is ``sha256``) to ``bucket/key`` with ``headers`` (Content-Type,
        x-amz-meta-*, x-amz-acl, If-Match, If-None-Match); returns the ETag. Raises ClientError for an
        S3 error answer and EndpointConnectionError when the server cannot be reached, after retries."""
        path = f"{self.base}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
            keys = self.credentials()
            sent = sign("PUT", self.netloc, path, {**headers, "content-length": str(len(body))}, sha256,
                        keys, self.region)  # fmt: skip
            for observe in self.observers:
                observe("PUT", path, sent)
            conn = self._connection()
            try:
                conn.request("PUT", path, body=body, headers=sent)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()  # a kept-alive connection the server closed, a reset, a timeout
                if attempt == ATTEMPTS - 1:
                    raise botocore.exceptions.EndpointConnectionError(endpoint_url=self.endpoint_url,
                                                                      error=e) from e  # fmt: skip
                continue
            if resp.will_close:
                conn.close()
            else:
                self._release(conn)
            if 200 <= resp.status < 300:
                return str(resp.getheader("ETag", ""))
            error = _client_error(resp.status, data, resp.getheaders(), "PutObject")
            code = error.response.get("Error", {}).get("Code", "")
            if (resp.status in _RETRY_STATUS or code in _RETRY_CODES) and attempt < ATTEMPTS - 1:
                continue
            raise error
        raise AssertionError("unreachable")
