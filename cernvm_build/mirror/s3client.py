"""An S3 client set up the way boto3 users expect, and S3 errors turned into one-line MirrorErrors.

Credentials and region come from boto3's usual chain (``--profile``/``AWS_PROFILE``, ``AWS_*`` env,
shared files, instance roles); the endpoint from ``--endpoint-url`` or ``AWS_ENDPOINT_URL(_S3)``.
Custom endpoints (MinIO, Ceph RGW, moto) get path-style addressing, because their buckets rarely have
DNS names. boto3 >= 1.36 sends CRC checksums on every request by default, which Ceph RGW and older
MinIO reject; we only send checksums when an operation requires them, unless the user chose otherwise.

PutObjects of the sync go through ``s3direct`` (our own SigV4 signer on kept-alive connections),
signed with the SHA-256 the source was verified with; ``direct_put`` finds it for a client made here.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import botocore.exceptions

from ..errors import MirrorError, UsageError
from . import s3direct
from .s3direct import DirectPut, Keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client as S3Client
else:
    S3Client = Any


#: metadata key of an object's SHA-256 (written by the sync, read back by planning)
META_SHA256 = "sha256"


@dataclass(frozen=True)
class _Extra:
    direct: DirectPut | None
    keys: Callable[[], Keys]
    ca_bundle: str | None  # the CA file the client verifies https endpoints with (None: the system's)


#: clients made by make_client → their direct PutObject path, their credentials and CA file (public API
#: only: botocore keeps none of them where a caller may read them)
_extras: weakref.WeakKeyDictionary[Any, _Extra] = weakref.WeakKeyDictionary()


def direct_put(client: S3Client) -> DirectPut | None:
    """The own-signer PutObject path of a client made by make_client (None: use the client itself)."""
    extra = _extras.get(client)
    return extra.direct if extra else None


def client_keys(client: S3Client) -> Keys | None:
    """The keys a client made by make_client signs with, whatever chain found them (None otherwise)."""
    extra = _extras.get(client)
    return extra.keys() if extra else None


def client_ca_bundle(client: S3Client) -> str | None:
    """The CA file a client made by make_client verifies its https endpoint with (``AWS_CA_BUNDLE``, the
    profile's ``ca_bundle``, or ``ca_bundle=``); None: the system's (or a client not made here)."""
    extra = _extras.get(client)
    return extra.ca_bundle if extra else None


@contextlib.contextmanager
def watching(client: S3Client, seen: Callable[[str, str], None]) -> Iterator[None]:
    """``seen(method, url path)`` for every request the client sends while inside, by botocore or by
    its direct PutObject path (request counts; tests that check the order of writes)."""

    def by_botocore(request: Any, **_: Any) -> None:
        seen(str(request.method), urlsplit(str(request.url)).path)

    def by_direct(method: str, path: str, headers: dict[str, str]) -> None:
        seen(method, path)

    hook_id = f"cernvm-watch-{uuid.uuid4().hex}"
    client.meta.events.register("before-send.s3", by_botocore, unique_id=hook_id)
    direct = direct_put(client)
    if direct is not None:
        direct.observers.append(by_direct)
    try:
        yield
    finally:
        client.meta.events.unregister("before-send.s3", unique_id=hook_id)
        if direct is not None:
            direct.observers.remove(by_direct)


@dataclass(frozen=True)
class S3Url:
    """``s3://bucket/prefix``; ``prefix`` has no leading or trailing slash (may be empty)."""

    bucket: str
    prefix: str

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def rel(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    @property
    def list_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


class S3UrlError(UsageError, MirrorError):
    """A destination that is no s3://bucket/prefix: a bad argument, exit code 2 (usage) as for the same
    URL given to `site publish` or `release publish` (it was 9, "mirror failed", here alone)."""


def parse_s3_url(url: str) -> S3Url:
    if not url.startswith("s3://"):
        raise S3UrlError(f"'{url}' is not an S3 URL", hint="write the destination as s3://bucket/prefix")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise S3UrlError(f"'{url}' names no bucket", hint="write the destination as s3://bucket/prefix")
    prefix = prefix.strip("/")
    # keys a reader over HTTP cannot name as written (it resolves '..' and '.' away, a control
    # character is no URL's): 's3://b/../x' published under the key '../x/' (rv34b)
    if prefix and (any(p in ("..", ".", "") for p in prefix.split("/")) or _CONTROL.search(prefix)):
        shown = url.encode("unicode_escape").decode("ascii")
        raise S3UrlError(
            f"'{shown}': the prefix has a '.', '..' or empty segment, or a control character",
            hint="write the prefix as the plain path its objects are read at (s3://bucket/a/b)",
        )
    return S3Url(bucket, prefix)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_endpoint(endpoint: str) -> None:
    """An http(s) URL with a host and no credentials: botocore's ValueError ('javascript:x', an unclosed
    '[') was a traceback, and a 'user:secret@' was echoed by every connection error."""
    from ..table import has_credentials, is_url, redact_url

    hint = "for example --endpoint-url https://s3.cern.ch (or AWS_ENDPOINT_URL); keys: AWS_ACCESS_KEY_ID/..."
    if has_credentials(endpoint):
        raise MirrorError(f"the S3 endpoint {redact_url(endpoint)} carries credentials", hint=hint)
    if not is_url(endpoint, ("http", "https")):
        raise MirrorError(f"the S3 endpoint '{endpoint}' is not an http(s) URL with a host", hint=hint)
    if "?" in endpoint or "#" in endpoint:  # botocore's "not a valid URI" came with a re-run hint
        raise MirrorError(f"the S3 endpoint '{endpoint}' has a query or fragment", hint=hint)


def make_client(
    *,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    max_connections: int = 16,
    credentials: tuple[str, str, str | None] | None = None,
    ca_bundle: str | None = None,
) -> S3Client:
    """A thread-safe S3 client; raises MirrorError when the profile or any credentials are missing.
    ``credentials`` (access key, secret key, session token) instead of boto3's usual chain;
    ``ca_bundle`` instead of ``AWS_CA_BUNDLE`` or the profile's (the index writer process has no
    profile: it is handed the file the mirror's client found)."""
    # Imported here: boto3 costs ~0.2 CPU-s to import, and the index writer process (which imports
    # this module) does its writes without it.
    import boto3
    import botocore.session
    from botocore.config import Config

    try:
        access, secret, token = credentials or (None, None, None)
        core = botocore.session.get_session()  # ours, so its scoped config is read through public API
        session = boto3.Session(
            botocore_session=core,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            aws_session_token=token,
            profile_name=profile,
            region_name=region,
        )
    except botocore.exceptions.ProfileNotFound as e:
        raise MirrorError(
            f"AWS profile '{profile}' is not configured",
            hint="check ~/.aws/config and ~/.aws/credentials, or drop --profile",
        ) from e
    try:
        creds = session.get_credentials()
    except botocore.exceptions.BotoCoreError as e:
        raise MirrorError(f"cannot load S3 credentials: {e}", hint=CREDENTIALS_HINT) from e
    if creds is None:
        raise MirrorError("no S3 credentials found", hint=CREDENTIALS_HINT)
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        _check_endpoint(endpoint)
    options: dict[str, Any] = {
        "max_pool_connections": max_connections,
        # the same budget as our own PUTs (s3direct): a dead endpoint fails in about half a minute
        "retries": {"total_max_attempts": s3direct.ATTEMPTS, "mode": "standard"},
        "connect_timeout": s3direct.CONNECT_TIMEOUT,
        "read_timeout": s3direct.READ_TIMEOUT,
    }
    if endpoint:
        options["s3"] = {"addressing_style": "path"}
    # Respect an explicit user choice (env or profile); otherwise the setting every server accepts.
    scoped = core.get_scoped_config()
    if "AWS_REQUEST_CHECKSUM_CALCULATION" not in os.environ and "request_checksum_calculation" not in scoped:
        options["request_checksum_calculation"] = "when_required"
    if "AWS_RESPONSE_CHECKSUM_VALIDATION" not in os.environ and "response_checksum_validation" not in scoped:
        options["response_checksum_validation"] = "when_required"
    if session.region_name is None:
        region = "us-east-1"  # custom endpoints ignore it; AWS redirects are followed by boto
    else:
        region = session.region_name
    # botocore's own order: AWS_CA_BUNDLE, then the profile's ca_bundle; the same file for our signer
    cafile = ca_bundle or os.environ.get("AWS_CA_BUNDLE") or scoped.get("ca_bundle")
    client = session.client("s3", endpoint_url=endpoint, region_name=region, config=Config(**options),
                            verify=cafile)  # fmt: skip

    def keys() -> Keys:
        # get_frozen_credentials refreshes temporary credentials (roles, SSO) when they are due
        frozen = creds.get_frozen_credentials()
        return Keys(str(frozen.access_key), str(frozen.secret_key), frozen.token)

    direct = None
    if endpoint and DirectPut.usable(endpoint):
        # Custom endpoints (RGW, MinIO, moto) only: AWS itself wants virtual-hosted addressing and
        # region redirects, which botocore handles.
        direct = DirectPut(endpoint, region, keys, connections=max_connections, cafile=cafile)
    _extras[client] = _Extra(direct, keys, cafile)
    return client


CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a profile of ~/.aws/credentials"
    " (AWS_PROFILE, or --profile where the command has it)"
)


def error_code(e: BaseException) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return str(e.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(e: BaseException) -> int:
    if isinstance(e, botocore.exceptions.ClientError):
        return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return 0


#: the most of an S3 server's error message shown
MAX_MESSAGE = 500


#: a bucket name S3 takes today (older us-east-1 buckets may hold capitals or '_': those exist, and a
#: server finds them, so the rule only explains a bucket the server did not find)
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def s3_error(e: BaseException, where: str) -> MirrorError:
    """One line for what went wrong talking to S3 at ``where`` (an s3:// URL or key)."""
    code = error_code(e)
    bucket = where[len("s3://") :].partition("/")[0] if where.startswith("s3://") else ""
    if code in ("NoSuchBucket", "InvalidBucketName") and bucket and not _BUCKET_NAME.fullmatch(bucket):
        # 's3://mr/yum' was "bucket does not exist; create it first", which S3 then refuses too
        return MirrorError(
            f"{where}: '{bucket}' is not a valid S3 bucket name",
            hint="a bucket name is 3 to 63 lower-case letters, digits, '.' and '-', "
            "beginning and ending with a letter or digit",
        )
    if code in ("NoSuchBucket",):
        return MirrorError(
            f"{where}: bucket does not exist",
            hint="create it first (aws s3 mb s3://BUCKET) or check the bucket name and --endpoint-url",
        )
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403"):
        return MirrorError(
            f"{where}: access denied ({code})",
            hint="check the credentials/profile and that they may read and write this bucket",
        )
    if isinstance(e, botocore.exceptions.NoCredentialsError):
        return MirrorError("no S3 credentials found", hint=CREDENTIALS_HINT)
    if isinstance(e, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError):
        # botocore's text names the request's URL (bucket, query); the endpoint is what to check
        parts = urlsplit(str(e.kwargs.get("endpoint_url", "")))
        endpoint = f"{parts.scheme}://{parts.netloc}"  # checked to carry no credentials
        what = "accept a connection" if isinstance(e, botocore.exceptions.ConnectTimeoutError) else "answer"
        wait = s3direct.CONNECT_TIMEOUT if what != "answer" else s3direct.READ_TIMEOUT
        return MirrorError(
            f"{where}: the S3 endpoint {endpoint} did not {what} within {wait:g} s"
            f" ({s3direct.ATTEMPTS} tries)",
            hint="check --endpoint-url (or AWS_ENDPOINT_URL), the credentials and the network",
        )
    if isinstance(e, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionError):
        return MirrorError(
            f"{where}: cannot reach the S3 endpoint ({e})",
            hint="check --endpoint-url and the network; a re-run finishes an interrupted sync",
        )
    if isinstance(e, botocore.exceptions.ClientError):
        msg = e.response.get("Error", {}).get("Message", "") or str(e)
        if len(msg) > MAX_MESSAGE:  # the server's text: a hostile one sent megabytes for one line
            msg = msg[:MAX_MESSAGE] + "..."
        return MirrorError(
            f"{where}: S3 error {code or http_status(e)}: {msg}",
            hint="a re-run finishes an interrupted sync; the published indexes were not switched",
        )
    return MirrorError(
        f"{where}: S3 request failed: {e}",
        hint="a re-run finishes an interrupted sync; the published indexes were not switched",
    )
