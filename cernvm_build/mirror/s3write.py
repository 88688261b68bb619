"""Writing a planned sync: uploads with preconditions, parallel runs, deletions, the manifest.

Every write is conditioned on the state the plan saw: ``If-None-Match: *`` for new keys and
``If-Match: <ETag>`` for changed ones, so two publishers cannot interleave (412 → ConflictError, unless
the other publisher wrote identical content). Servers that ignore or refuse conditional headers are
detected with a probe object; for them the ``last`` files are checked with a HEAD just before they are
written (a narrower, but not zero, race).
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, BinaryIO

import botocore.exceptions

from ..errors import CernVMError, MirrorError
from ..fsutil import reraise_naming
from .hashcache import signature
from .s3client import META_SHA256, S3Client, S3Url, direct_put, error_code, http_status, s3_error
from .s3direct import DirectPut
from .s3plan import MANIFEST, PROBE_PREFIX, Action, LocalFile, Manifest, Progress, head_sha256
from .uploads import Entry, UploadLog

#: Packages above this go up as multipart uploads, PART_JOBS parts at a time (one stream of a few MB/s
#: per connection is what many S3 gateways give; a big package then takes as long as a small one).
#: Below it one PutObject is faster: on Ceph RGW (127.0.0.1, loaded 2-core host) a 25 MB object took
#: 0.23-0.38 s as one PUT and 0.3-2.4 s as 8 MB parts, 4 at a time (rclone's threshold is 200 MB).
MULTIPART_THRESHOLD = 64 << 20
#: Files above this (and below MULTIPART_THRESHOLD) are sent from the open file, not read into memory.
STREAM_THRESHOLD = 8 << 20
PART_SIZE = 8 << 20
PART_JOBS = 4


class ConflictError(MirrorError):
    """Someone else changed the destination between our plan and our write."""


def _refused(e: botocore.exceptions.ClientError) -> bool:
    return error_code(e) in ("NotImplemented", "InvalidArgument", "InvalidRequest") or http_status(e) == 501


@dataclass(frozen=True)
class Conditions:
    """What the server does with preconditions on writes (found once per endpoint and bucket)."""

    honoured: bool
    #: Ceph RGW 16 compares If-Match with the ETag without its quotes, so the quoted form (RFC 7232,
    #: what AWS and moto take) fails even when it matches: there, the bare form is sent.
    bare_if_match: bool = False

    def if_match(self, etag: str) -> str:
        return etag.strip('"') if self.bare_if_match else etag


def probe_conditional_writes(client: S3Client, url: S3Url) -> Conditions:
    """Does the server honour ``If-None-Match: *`` and ``If-Match`` on PutObject? (Some ignore them,
    some refuse them, some want If-Match's ETag without quotes.)"""
    key = url.key(f"{PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        try:
            put = client.put_object(Bucket=url.bucket, Key=key, Body=b"", IfNoneMatch="*")
        except botocore.exceptions.ClientError as e:
            if _refused(e):
                client.put_object(Bucket=url.bucket, Key=key, Body=b"")
                return Conditions(False)
            raise
        try:
            client.put_object(Bucket=url.bucket, Key=key, Body=b"", IfNoneMatch="*")
        except botocore.exceptions.ClientError as e:
            if _refused(e):
                return Conditions(False)
            if http_status(e) != 412:
                raise
        else:
            return Conditions(False)
        etag = str(put["ETag"])
        for bare in (False, True):
            try:
                client.put_object(
                    Bucket=url.bucket, Key=key, Body=b"", IfMatch=etag.strip('"') if bare else etag
                )
                return Conditions(True, bare)
            except botocore.exceptions.ClientError as e:
                if http_status(e) != 412:
                    raise
        return Conditions(False)  # If-Match never matches: only If-None-Match works; guard with HEAD
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise s3_error(e, str(url)) from e
    finally:
        try:
            client.delete_object(Bucket=url.bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            pass


#: one probe per endpoint and bucket and process (its answer does not change during a run)
_probes: dict[tuple[str, str], Future[Conditions]] = {}
_probes_lock = threading.Lock()


def _probe_key(client: S3Client, url: S3Url) -> tuple[str, str]:
    return (str(client.meta.endpoint_url), url.bucket)


def prefetch_conditions(client: S3Client, url: S3Url) -> Future[Conditions]:
    """Start the conditional-write probe in the background (once): its round trips then overlap the
    source verification instead of delaying the first upload. ``server_conditions`` collects the answer."""
    key = _probe_key(client, url)
    with _probes_lock:
        if (started := _probes.get(key)) is not None:
            return started
        fut: Future[Conditions] = Future()
        _probes[key] = fut

    def run() -> None:
        try:
            fut.set_result(probe_conditional_writes(client, url))
        except BaseException as e:  # handed to whoever asks for the answer
            fut.set_exception(e)

    threading.Thread(target=run, name="cernvm-probe", daemon=True).start()
    return fut


def settle_probe(client: S3Client, url: S3Url) -> None:
    """Wait for a started probe to end, whatever its answer: its object is removed when it ends, and a
    run that stops early (a refused source) must not exit while the probe thread, a daemon, still
    has its object in the bucket (the process would end it there, leaving the object behind)."""
    with _probes_lock:
        fut = _probes.get(_probe_key(client, url))
    if fut is not None:
        fut.exception()  # waits; the probe's own error, if any, is for whoever needs its answer


def server_conditions(client: S3Client, url: S3Url) -> Conditions:
    """What the server does with preconditions (probed once; a failed probe is tried again next time)."""
    fut = prefetch_conditions(client, url)
    try:
        return fut.result()
    except BaseException:
        key = _probe_key(client, url)
        with _probes_lock:
            if _probes.get(key) is fut:
                del _probes[key]
        raise


def content_type(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1]
    if name in ("InRelease", "Release", "Packages", "Sources") or name.endswith((".asc", ".gpg")):
        return "text/plain" if not name.endswith(".gpg") else "application/pgp-signature"
    guessed, encoding = mimetypes.guess_type(name)
    if encoding:
        return {"gzip": "application/gzip", "xz": "application/x-xz", "bzip2": "application/x-bzip2"}.get(
            encoding, "application/octet-stream"
        )
    if guessed and guessed.startswith("text/"):
        return f"{guessed}; charset=utf-8"
    return guessed or "application/octet-stream"


def _read_unchanged(lf: LocalFile) -> bytes:
    """The file's bytes, provided it is still the file that was hashed (same identity before/after)."""
    with open(lf.path, "rb") as f:
        before = signature(os.fstat(f.fileno()))
        data = f.read()
        after = signature(os.fstat(f.fileno()))
    if before != lf.sig or after != lf.sig or len(data) != lf.size:
        raise changed_during_sync(lf)
    return data


def changed_during_sync(lf: LocalFile) -> MirrorError:
    return MirrorError(f"{lf.path}: file changed during the sync", hint="re-run when it is stable")


class Writer:
    """Uploads with the preconditions the plan implies; counts bytes; reports progress."""

    def __init__(
        self,
        client: S3Client | None,
        url: S3Url,
        *,
        conditional: bool,
        acl: str | None,
        conditions: Conditions | None = None,
        total: int,
        progress: Progress | None,
        direct: DirectPut | None = None,
        connect: Callable[[], S3Client] | None = None,
        upload_log: UploadLog | None = None,
    ):
        """``client``, or ``direct`` and ``connect`` (makes a botocore client on first need: the index
        writer process, which then imports no boto3 for its PUTs and HEADs)."""
        self._client = client
        self._connect = connect
        self._client_lock = threading.Lock()
        self.url = url
        self.conditional = conditional
        self.conditions = conditions or Conditions(conditional)
        self.acl = acl
        self.total = total
        self.progress = progress
        self.done = 0
        self.lock = threading.Lock()
        self.etags: dict[str, str] = {}  # in the order the uploads completed
        self.direct = direct if direct is not None or client is None else direct_put(client)
        self.upload_log = upload_log

    @property
    def client(self) -> S3Client:
        """botocore's client, for what the direct path does not do (multipart, no direct path)."""
        with self._client_lock:
            if self._client is None:
                if self._connect is None:
                    raise MirrorError("no S3 client to write with", hint="this is a bug; re-run")
                self._client = self._connect()
            return self._client

    def _advance(self, n: int) -> None:
        with self.lock:
            self.done += n
            if self.progress:
                self.progress("upload", self.done, self.total)

    def record(self, rel: str, etag: str, size: int) -> None:
        """An upload done elsewhere (the index writer process) on this writer's behalf."""
        self._advance(size)
        with self.lock:
            self.etags[rel] = etag

    def upload(self, action: Action, lf: LocalFile) -> None:
        key = self.url.key(action.rel)
        cond: dict[str, Any] = {}
        if self.conditional:
            cond = (
                {"IfNoneMatch": "*"}
                if action.op == "create"
                else {"IfMatch": self.conditions.if_match(str(action.etag))}
            )
        elif action.last:
            self._check_unchanged(action)
        extra: dict[str, Any] = {
            "ContentType": content_type(action.rel),
            "Metadata": {META_SHA256: lf.sha256},
        }
        if self.acl:
            extra["ACL"] = self.acl
        try:
            if lf.size > MULTIPART_THRESHOLD:
                etag = self._multipart(key, lf, extra, cond)
            elif lf.size > STREAM_THRESHOLD and self.direct is not None:
                etag = self._put_streamed(key, lf, extra, cond)
                self._advance(lf.size)
            else:
                # No Content-MD5: the body is signed with its known SHA-256 (see s3direct), which the
                # server checks; hashing it again here would cost a pass over every byte.
                etag = self._put(key, _read_unchanged(lf), lf.sha256, extra, cond)
                self._advance(lf.size)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            # 412: precondition failed; 409: AWS's ConditionalRequestConflict (a concurrent writer).
            if http_status(e) in (409, 412) or (cond.get("IfMatch") and error_code(e) == "NoSuchKey"):
                etag = self._lost_race(action, lf)
            else:
                raise s3_error(e, f"{self.url}/{action.rel}") from e
        with self.lock:
            self.etags[action.rel] = etag

    def _put_streamed(self, key: str, lf: LocalFile, extra: dict[str, Any], cond: dict[str, Any]) -> str:
        """A big file sent from disk. The server checks the bytes against the verified SHA-256 they are
        signed with (RGW, AWS); for servers that do not, the file's identity must not have changed
        from before to after (any write moves ctime), as for multipart parts."""
        with open(lf.path, "rb") as f:
            if signature(os.fstat(f.fileno())) != lf.sig:
                raise changed_during_sync(lf)
            etag = self._put(key, f, lf.sha256, extra, cond, lf.size)
            if signature(os.fstat(f.fileno())) != lf.sig:
                raise changed_during_sync(lf)
        return etag

    def _put(self, key: str, data: bytes | BinaryIO, sha256: str, extra: dict[str, Any], cond: dict[str, Any],
             length: int | None = None) -> str:  # fmt: skip
        if self.direct is None:
            # Not a client of make_client: botocore signs (and over plain HTTP hashes) the body itself.
            return str(
                self.client.put_object(Bucket=self.url.bucket, Key=key, Body=data, **extra, **cond)["ETag"]
            )
        headers = {"Content-Type": extra["ContentType"], f"x-amz-meta-{META_SHA256}": sha256}
        if extra.get("ACL"):
            headers["x-amz-acl"] = extra["ACL"]
        if cond.get("IfNoneMatch"):
            headers["If-None-Match"] = cond["IfNoneMatch"]
        if cond.get("IfMatch"):
            headers["If-Match"] = cond["IfMatch"]
        return self.direct.put(self.url.bucket, key, data, sha256, headers, length)

    def _check_unchanged(self, action: Action) -> None:
        """Without server-side preconditions: re-read the index's ETag right before replacing it."""
        if self._head(action.rel)[1] != action.etag:
            raise self._conflict(action)

    def _lost_race(self, action: Action, lf: LocalFile) -> str:
        # Someone wrote the key after our plan. Identical content (another publisher of the same
        # package) is fine; anything else means two publishers are interleaving.
        sha, etag = self._head(action.rel)
        if sha == lf.sha256 and etag:
            self._advance(lf.size)
            return etag
        raise self._conflict(action)

    def _head(self, rel: str) -> tuple[str | None, str | None]:
        """(stored sha256, ETag) of one object; (None, None) if there is none."""
        if self.direct is None:
            return head_sha256(self.client, self.url, rel)
        try:
            got = self.direct.head(self.url.bucket, self.url.key(rel))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise s3_error(e, f"{self.url}/{rel}") from e
        return (got[1], got[0]) if got else (None, None)

    def _conflict(self, action: Action) -> ConflictError:
        return ConflictError(
            f"{self.url}/{action.rel}: changed by someone else since this sync planned it",
            hint="another publisher is writing to this prefix; re-run when it has finished",
        )

    def _multipart(self, key: str, lf: LocalFile, extra: dict[str, Any], cond: dict[str, Any]) -> str:
        up = self.client.create_multipart_upload(Bucket=self.url.bucket, Key=key, **extra)
        upload_id = up["UploadId"]
        if self.upload_log is None:
            return self._parts(key, upload_id, lf, cond, Entry())
        # recorded while it runs: the next sync aborts it if this one is killed (see uploads)
        entry: Entry | None = None
        try:
            with self.upload_log.running(self.client, self.url.bucket, key, upload_id) as entry:
                return self._parts(key, upload_id, lf, cond, entry)
        except OSError as e:
            if entry is not None:
                raise
            # the record could not be written (a full, read-only or foreign log folder): the upload,
            # started and recorded nowhere, stayed billed until an --abort-uploads-older-than sweep
            if self._abort(key, upload_id):
                reraise_naming(e, self.upload_log.folder)
            # the abort failed too: the line says the record's error and what it leaves on the server
            why = e.strerror or str(e)
            raise CernVMError(
                f"{key}: a multipart upload is left on the server, recorded nowhere: its record could not"
                f" be written ({why}) and its abort failed",
                where=str(self.upload_log.folder),
                hint="a later sync aborts it once it is older than --abort-uploads-older-than (default 7d);"
                f" or abort upload {upload_id} with an S3 tool",
            ) from e

    def _abort(self, key: str, upload_id: str) -> bool:
        """Abort a multipart upload; False when the server could not be told (left for a later sync)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.url.bucket, Key=key, UploadId=upload_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        return True

    def _parts(self, key: str, upload_id: str, lf: LocalFile, cond: dict[str, Any], entry: Entry) -> str:
        try:
            with open(lf.path, "rb") as f:
                if signature(os.fstat(f.fileno())) != lf.sig:
                    raise changed_during_sync(lf)
                fd = f.fileno()
                offsets = list(range(0, lf.size, PART_SIZE)) or [0]

                def part(number: int) -> tuple[int, str]:
                    # Parts are signed with their SHA-256 (no Content-MD5 header), which the server
                    # checks: hashed here (hashlib lets other threads run meanwhile) or by botocore.
                    block = os.pread(fd, PART_SIZE, offsets[number - 1])
                    if self.direct is not None:
                        sha = hashlib.sha256(block).hexdigest()
                        etag = self.direct.put_part(self.url.bucket, key, upload_id, number, block, sha)
                    else:
                        r = self.client.upload_part(Bucket=self.url.bucket, Key=key, UploadId=upload_id,
                                                    PartNumber=number, Body=block)  # fmt: skip
                        etag = str(r["ETag"])
                    self._advance(len(block))
                    return number, etag

                with ThreadPoolExecutor(max_workers=PART_JOBS) as pool:
                    done = list(pool.map(part, range(1, len(offsets) + 1)))
                # Unchanged identity before and after (any write moves ctime): the parts are the
                # bytes that were hashed, as for single uploads (see _read_unchanged).
                if signature(os.fstat(fd)) != lf.sig:
                    raise changed_during_sync(lf)
            parts: list[Any] = [{"ETag": etag, "PartNumber": number} for number, etag in done]
            resp = self.client.complete_multipart_upload(
                Bucket=self.url.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **cond
            )
            entry.settled = True
            if resp.get("ETag"):
                return str(resp["ETag"])
            # Ceph RGW 16 answers CompleteMultipartUpload with an empty <ETag>: ask for it.
            return str(self.client.head_object(Bucket=self.url.bucket, Key=key)["ETag"])
        except BaseException:
            if not entry.settled:
                entry.settled = self._abort(key, upload_id)  # else left recorded: the next sync aborts it
            raise


def run_parallel(jobs: int, fn: Callable[[Action], None], actions: Iterable[Action]) -> None:
    """Run ``fn`` over ``actions``; on the first failure stop starting new ones and re-raise it."""
    items = list(actions)
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        stop = threading.Event()

        def guarded(a: Action) -> None:
            if not stop.is_set():
                fn(a)

        futures: list[Future[None]] = [pool.submit(guarded, a) for a in items]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in finished:
            if fut.exception() is not None:
                stop.set()
                for other in futures:
                    other.cancel()
                raise fut.exception()  # type: ignore[misc]


#: what no XML 1.0 document can hold, not even as a character reference: a key with one cannot be
#: named in DeleteObjects' body (moto answered 500, S3 says MalformedXML), so it is deleted on its own;
#: one such stale object failed every sync (rv34b)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def delete_objects(client: S3Client, url: S3Url, rels: Sequence[str], progress: Progress | None) -> None:
    alone = [r for r in rels if _NOT_XML.search(url.key(r))]
    batched = [r for r in rels if not _NOT_XML.search(url.key(r))] if alone else rels
    batch_ok = True
    done = 0

    def tick(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress("delete", done, len(rels))

    for start in range(0, len(batched), 1000):
        chunk = batched[start : start + 1000]
        if batch_ok:
            try:
                resp = client.delete_objects(
                    Bucket=url.bucket,
                    Delete={"Objects": [{"Key": url.key(r)} for r in chunk], "Quiet": True},
                )
                errors = resp.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise MirrorError(
                        f"{url}/{url.rel(first.get('Key', ''))}: cannot delete: {first.get('Message', '')}",
                        hint="check the credentials may delete; a re-run retries the deletions",
                    )
                tick(len(chunk))
                continue
            except botocore.exceptions.ClientError as e:
                # Older MinIO/RGW want Content-MD5 on DeleteObjects, which new botocore no longer sends.
                if error_code(e) not in (
                    "MissingContentMD5",
                    "NotImplemented",
                    "InvalidRequest",
                    "BadDigest",
                ):
                    raise s3_error(e, str(url)) from e
                batch_ok = False
            except botocore.exceptions.BotoCoreError as e:
                raise s3_error(e, str(url)) from e
        _delete_each(client, url, chunk, tick)
    _delete_each(client, url, alone, tick)


def _delete_each(client: S3Client, url: S3Url, rels: Sequence[str], tick: Callable[[int], None]) -> None:
    for r in rels:
        try:
            client.delete_object(Bucket=url.bucket, Key=url.key(r))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise s3_error(e, f"{url}/{r}") from e
        tick(1)


def write_manifest(
    client: S3Client, url: S3Url, manifest: Manifest, conditional: bool, conditions: Conditions | None = None
) -> bool:
    """Best effort (it is only a cache): False if another publisher replaced it meanwhile."""
    cond: dict[str, Any] = {}
    if conditional:
        form = conditions or Conditions(True)
        cond = {"IfMatch": form.if_match(manifest.etag)} if manifest.etag else {"IfNoneMatch": "*"}
    try:
        client.put_object(
            Bucket=url.bucket,
            Key=url.key(MANIFEST),
            Body=manifest.to_bytes(),
            ContentType="application/json",
            **cond,
        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        if http_status(e) == 412 or error_code(e) == "NoSuchKey":
            return False
        raise s3_error(e, f"{url}/{MANIFEST}") from e
    return True
