"""Multipart uploads a killed sync left unfinished: S3 keeps (and bills) their parts for ever.

Aborting uploads by key is unsafe (another publisher may be uploading the same key right now), so a
sync aborts only what it knows to be dead:

- its own: each multipart upload is recorded, for as long as it runs, in a file of the local upload
  log (``<cache>/mirror/uploads/<random>.upload``: endpoint, bucket, key, upload id) that the run
  holds ``flock``ed; the kernel drops the lock when the run dies, so the next sync to that endpoint
  and bucket finds the file's lock free and aborts the upload (``reclaim``). A pid would not tell it:
  another process may have the dead one's pid by then.
- anyone's old ones: uploads under the sync's prefix started more than ``--abort-uploads-older-than``
  ago (default 7 days; no sync runs that long) are aborted (``sweep``). This covers a sync killed
  between the upload's start and its log entry, and a run on another machine (another upload log).

A bucket lifecycle rule (``AbortIncompleteMultipartUpload``, ``DaysAfterInitiation``) does the sweep on
the server's side instead, where the server has lifecycle support.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions

from ..errors import MirrorError
from ..fsutil import reclaim_dead_named
from .s3client import S3Client, S3Url, error_code, s3_error

#: uploads older than this (seconds) under the sync's prefix are a dead run's (``--abort-uploads-older-than``)
ABORT_OLDER_THAN = 7 * 86400
#: the most of one log file read (a record is a few hundred bytes)
MAX_RECORD = 64 << 10

_SUFFIX = ".upload"


def endpoint_of(client: S3Client) -> str:
    return str(client.meta.endpoint_url)


@dataclass
class Entry:
    """One recorded upload: ``settled`` once it is completed or aborted (nothing left to remove)."""

    settled: bool = False


class UploadLog:
    """The local record of the multipart uploads running syncs have started (see the module)."""

    def __init__(self, folder: Path):
        self.folder = folder
        #: why a dead run's upload could not be aborted (its record is kept for the next sync)
        self.problems: list[str] = []

    @contextlib.contextmanager
    def running(self, client: S3Client, bucket: str, key: str, upload_id: str) -> Iterator[Entry]:
        """Record the upload while the block runs; the record goes when the block has marked it
        ``settled`` (completed, or aborted), else (the abort failed, or a kill) it stays for a next run."""
        record = {"endpoint": endpoint_of(client), "bucket": bucket, "key": key, "upload_id": upload_id}
        self.folder.mkdir(parents=True, exist_ok=True)
        # Written under a pid-named temporary, locked before it gets its final name: a reclaimer only
        # ever sees a record whose writer holds its lock, or whose writer is dead.
        fd, tmp = tempfile.mkstemp(prefix=f".{os.getpid()}.", suffix=".tmp", dir=self.folder)
        path = self.folder / (Path(tmp).name.split(".")[2] + _SUFFIX)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, json.dumps(record).encode())
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        entry = Entry()
        try:
            yield entry
        finally:
            if entry.settled:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            os.close(fd)

    def reclaim(self, client: S3Client, url: S3Url) -> list[str]:
        """Abort the uploads dead syncs to this endpoint and bucket left; their keys. Records of other
        buckets are left for a sync to those."""
        # a writer killed before its rename (``.<pid>.<random>.tmp``): no upload recorded in it
        with contextlib.suppress(OSError):
            reclaim_dead_named(self.folder, r"\.(\d+)\.[^.]+\.tmp")
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        aborted: list[str] = []
        for name in names:
            path = self.folder / name
            if not name.endswith(_SUFFIX):
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a running sync's
                record = _record(os.read(fd, MAX_RECORD))
                if record is None:  # not ours to read: only ever written whole, before the rename
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    continue
                if record["endpoint"] != endpoint_of(client) or record["bucket"] != url.bucket:
                    continue
                try:
                    _abort(client, url, record["key"], record["upload_id"])
                except MirrorError as e:  # no permission, a network error: tried again next time
                    self.problems.append(str(e))
                    continue
                aborted.append(record["key"])
                with contextlib.suppress(OSError):
                    os.unlink(path)
            finally:
                os.close(fd)
        return aborted


def _record(data: bytes) -> dict[str, str] | None:
    try:
        record = json.loads(data)
    except ValueError:
        return None
    fields = ("endpoint", "bucket", "key", "upload_id")
    if not isinstance(record, dict) or not all(isinstance(record.get(f), str) for f in fields):
        return None
    return record


def _abort(client: S3Client, url: S3Url, key: str, upload_id: str) -> None:
    try:
        client.abort_multipart_upload(Bucket=url.bucket, Key=key, UploadId=upload_id)
    except botocore.exceptions.ClientError as e:
        if error_code(e) != "NoSuchUpload":  # completed, or aborted already: nothing left to remove
            raise s3_error(e, f"s3://{url.bucket}/{key}") from e
    except botocore.exceptions.BotoCoreError as e:
        raise s3_error(e, f"s3://{url.bucket}/{key}") from e


def sweep(client: S3Client, url: S3Url, older_than: int, now: datetime.datetime | None = None) -> list[str]:
    """Abort the multipart uploads under ``url``'s prefix started more than ``older_than`` seconds
    ago (by the server's clock, compared with ours); their keys. A server without the listing
    (NotImplemented) has nothing swept."""
    limit = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(seconds=older_than)
    aborted: list[str] = []
    args: dict[str, Any] = {"Bucket": url.bucket, "Prefix": url.list_prefix}
    while True:
        try:
            page = client.list_multipart_uploads(**args)
        except botocore.exceptions.ClientError as e:
            if error_code(e) == "NotImplemented":
                return aborted
            raise s3_error(e, str(url)) from e
        except botocore.exceptions.BotoCoreError as e:
            raise s3_error(e, str(url)) from e
        for up in page.get("Uploads", []):
            started = up.get("Initiated")
            if isinstance(started, datetime.datetime) and started <= limit:
                _abort(client, url, str(up["Key"]), str(up["UploadId"]))
                aborted.append(str(up["Key"]))
        if not page.get("IsTruncated"):
            return aborted
        args["KeyMarker"] = page.get("NextKeyMarker", "")
        args["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
