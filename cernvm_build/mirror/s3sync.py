"""Sync a local tree to ``s3://bucket/prefix``: planned by content hash, published in a safe order.

Planning. Each object we write carries its SHA-256 in ``x-amz-meta-sha256``. An ETag is never read as
an MD5 (multipart uploads, SSE and some servers break that); it is only an opaque "this object has not
changed" token. A manifest object (``.cernvm-sync.json`` under the prefix) caches key → (ETag, size,
SHA-256) from the last sync, so a re-sync costs one LIST plus one GET: an object whose listed ETag and
size still match the manifest has the recorded hash; any other object of the same size as the local
file is asked (HEAD) for its stored hash. So same-size edits are found, and unchanged files cost nothing.

Publishing, in this order, so that no reader ever sees an index naming an absent object:
1. everything not named by ``last`` (packages, hash-named metadata), in parallel;
2. the ``last`` files (fixed-name indexes such as ``repomd.xml``, ``InRelease``), pattern by pattern;
3. deletions of stale objects, except the objects the previous ``keep`` generations referenced;
4. the manifest.
Every write is conditioned on the state the plan saw: ``If-None-Match: *`` for new keys and
``If-Match: <ETag>`` for changed ones, so two publishers cannot interleave (412 → ConflictError).
Servers that ignore or refuse conditional headers are detected with a probe object; for them the
``last`` files are checked with a HEAD just before they are written (narrower, but not zero, race).
Interrupted anywhere, a re-run plans again from what is there and finishes the job.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import mimetypes
import os
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import botocore.exceptions

from ..errors import MirrorError
from .hashcache import HashCache, signature
from .s3client import S3Client, S3Url, error_code, http_status, make_client, parse_s3_url, s3_error

MANIFEST = ".cernvm-sync.json"
PROBE_PREFIX = ".cernvm-sync-probe-"
META_SHA256 = "sha256"
MULTIPART_THRESHOLD = 64 << 20
PART_SIZE = 16 << 20

#: ``progress(stage, done, total)``; stages: "hash" and "upload" in bytes, "check" and "delete" in objects.
Progress = Callable[[str, int, int], None]


class ConflictError(MirrorError):
    """Someone else changed the destination between our plan and our write."""


@dataclass(frozen=True)
class LocalFile:
    rel: str
    path: Path
    size: int
    sha256: str
    sig: tuple[int, ...] = ()  # the file's identity when it was hashed (see hashcache)


@dataclass(frozen=True)
class RemoteObject:
    rel: str
    size: int
    etag: str
    sha256: str | None = None


@dataclass(frozen=True)
class Action:
    op: str  # "create" | "update" | "delete"
    rel: str
    size: int
    reason: str
    last: bool = False
    etag: str | None = None  # the ETag the plan saw (for If-Match)


@dataclass
class SyncReport:
    dest: str
    actions: list[Action] = field(default_factory=list)
    unchanged: int = 0
    kept: list[str] = field(default_factory=list)
    dry_run: bool = False
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    conditional_writes: bool | None = None
    requests: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def uploads(self) -> list[Action]:
        return [a for a in self.actions if a.op != "delete"]

    @property
    def deletions(self) -> list[Action]:
        return [a for a in self.actions if a.op == "delete"]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["actions"] = [asdict(a) for a in self.actions]
        return d


# -- planning ------------------------------------------------------------------------------------


def matches(rel: str, pattern: str) -> bool:
    """A pattern with a slash matches the whole key; without one, the file name (``repomd.xml``)."""
    target = rel if "/" in pattern else rel.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, pattern)


def last_rank(rel: str, last: Sequence[str]) -> int | None:
    for i, pattern in enumerate(last):
        if matches(rel, pattern):
            return i
    return None


def scan_local(
    root: Path,
    *,
    jobs: int = 4,
    progress: Progress | None = None,
    cache: HashCache | None = None,
) -> dict[str, LocalFile]:
    """Every regular file under ``root`` by its ``/``-separated relative path, with its SHA-256.

    ``cache`` remembers hashes by file identity (a verified source was just hashed; an unchanged tree
    was hashed by the last run). Uploads check the identity again, so a file that changes after it
    was hashed is never sent under a stale hash.
    """
    hasher = cache or HashCache()
    if not root.is_dir():
        raise MirrorError(f"{root}: not a directory", hint="give the folder to publish")
    paths: list[tuple[str, Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not p.is_file():
                continue
            rel = p.relative_to(root).as_posix()
            if rel == MANIFEST or rel.startswith(PROBE_PREFIX):
                raise MirrorError(f"{p}: this name is reserved for the sync manifest", hint="rename it")
            paths.append((rel, p, p.stat().st_size))
    total = sum(s for _, _, s in paths)
    done = 0
    lock = threading.Lock()

    def one(item: tuple[str, Path, int]) -> LocalFile:
        nonlocal done
        rel, p, size = item
        digest, _, sig = hasher.digest(p)
        if progress:
            with lock:
                done += size
                progress("hash", done, total)
        return LocalFile(rel, p, size, digest, sig)

    # Remembered hashes cost a stat; only the files that must be read go to the thread pool.
    files: list[LocalFile] = []
    todo: list[tuple[str, Path, int]] = []
    for rel, p, size in paths:
        hit = hasher.remembered(p)
        if hit is None:
            todo.append((rel, p, size))
        else:
            files.append(LocalFile(rel, p, size, hit[0], hit[2]))
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            files.extend(pool.map(one, todo))
    return {f.rel: f for f in sorted(files, key=lambda f: f.rel)}


def list_remote(client: S3Client, url: S3Url) -> dict[str, RemoteObject]:
    """Every object under the prefix (key, size, ETag).

    botocore turns each listed object into a dict and parses its LastModified with dateutil, which
    costs more than the request itself for big listings. We read Key/Size/ETag from the XML with
    ElementTree before botocore parses it and hand botocore the page without its <Contents>.
    """
    out: dict[str, RemoteObject] = {}
    me = threading.get_ident()

    def grab(response_dict: dict[str, Any], **_: Any) -> None:
        if threading.get_ident() != me or int(response_dict.get("status_code", 0)) >= 300:
            return
        try:
            root = ET.fromstring(response_dict["body"])
        except ET.ParseError:
            return  # let botocore report it
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        encoded = root.findtext(f"{ns}EncodingType") == "url"
        for c in root.findall(f"{ns}Contents"):
            key = c.findtext(f"{ns}Key") or ""
            key = unquote_plus(key) if encoded else key
            rel = url.rel(key)
            if rel:
                out[rel] = RemoteObject(rel, int(c.findtext(f"{ns}Size") or 0), c.findtext(f"{ns}ETag") or "")
            root.remove(c)
        response_dict["body"] = ET.tostring(root)

    hook = f"cernvm-list-{uuid.uuid4().hex}"
    client.meta.events.register("before-parse.s3.ListObjectsV2", grab, unique_id=hook)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=url.list_prefix)
        for page in pages:
            for obj in page.get("Contents", []):  # only if the hook could not read the page
                rel = url.rel(obj["Key"])
                if rel:
                    out[rel] = RemoteObject(rel, int(obj["Size"]), str(obj["ETag"]))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise s3_error(e, str(url)) from e
    finally:
        client.meta.events.unregister("before-parse.s3.ListObjectsV2", unique_id=hook)
    return out


@dataclass
class Manifest:
    objects: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # rel → (etag, size, sha256)
    generations: list[list[str]] = field(default_factory=list)  # newest first
    etag: str | None = None  # of the manifest object itself, for the compare-and-swap

    def to_bytes(self) -> bytes:
        doc = {
            "format": "cernvm-sync/1",
            "objects": {k: list(v) for k, v in sorted(self.objects.items())},
            "generations": self.generations,
        }
        return json.dumps(doc, indent=0, sort_keys=True).encode()


def read_manifest(client: S3Client, url: S3Url, listing: dict[str, RemoteObject]) -> Manifest:
    seen = listing.get(MANIFEST)
    if seen is None:
        return Manifest()
    try:
        resp = client.get_object(Bucket=url.bucket, Key=url.key(MANIFEST))
        body = resp["Body"].read()
        doc = json.loads(body)
        objects = {str(k): (str(v[0]), int(v[1]), str(v[2])) for k, v in doc.get("objects", {}).items()}
        gens = [[str(x) for x in g] for g in doc.get("generations", [])]
        return Manifest(objects, gens, str(resp["ETag"]))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        if error_code(e) == "NoSuchKey":
            return Manifest()
        raise s3_error(e, f"{url}/{MANIFEST}") from e
    except (ValueError, KeyError, TypeError, IndexError):
        # A damaged cache is not an error: we fall back to asking each object for its hash.
        return Manifest(etag=str(seen.etag))


def head_sha256(client: S3Client, url: S3Url, rel: str) -> tuple[str | None, str | None]:
    """(stored sha256, current etag) of one object; (None, None) if it vanished."""
    try:
        resp = client.head_object(Bucket=url.bucket, Key=url.key(rel))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        if http_status(e) == 404:
            return None, None
        raise s3_error(e, f"{url}/{rel}") from e
    meta = {k.lower(): v for k, v in resp.get("Metadata", {}).items()}
    return meta.get(META_SHA256), str(resp["ETag"])


@dataclass
class Plan:
    url: S3Url
    local: dict[str, LocalFile]
    remote: dict[str, RemoteObject]
    manifest: Manifest
    actions: list[Action]
    unchanged: int
    kept: list[str]


def make_plan(
    client: S3Client,
    url: S3Url,
    local: dict[str, LocalFile],
    *,
    last: Sequence[str],
    delete: bool,
    protect: Collection[str],
    keep: int,
    jobs: int,
    progress: Progress | None,
) -> Plan:
    listing = list_remote(client, url)
    manifest = read_manifest(client, url, listing)
    remote = {r: o for r, o in listing.items() if r != MANIFEST}

    # Which objects' stored hashes must we ask for? Only same-size ones the manifest cannot vouch for.
    unknown: list[str] = []
    resolved: dict[str, RemoteObject] = {}
    for rel, obj in remote.items():
        lf = local.get(rel)
        cached = manifest.objects.get(rel)
        if cached and cached[0] == obj.etag and cached[1] == obj.size:
            resolved[rel] = RemoteObject(rel, obj.size, obj.etag, cached[2])
        elif lf is not None and lf.size == obj.size:
            unknown.append(rel)
        else:
            resolved[rel] = obj
    if unknown:
        done = 0
        lock = threading.Lock()

        def ask(rel: str) -> RemoteObject:
            nonlocal done
            sha, etag = head_sha256(client, url, rel)
            if progress:
                with lock:
                    done += 1
                    progress("check", done, len(unknown))
            obj = remote[rel]
            return RemoteObject(rel, obj.size, etag or obj.etag, sha)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for obj in pool.map(ask, unknown):
                resolved[obj.rel] = obj

    actions: list[Action] = []
    unchanged = 0
    for rel in sorted(local):
        lf = local[rel]
        is_last = last_rank(rel, last) is not None
        ro = resolved.get(rel)
        if ro is None:
            actions.append(Action("create", rel, lf.size, "new", is_last))
        elif ro.sha256 == lf.sha256:
            unchanged += 1
        else:
            reason = "size differs" if ro.size != lf.size else "content differs (same size)"
            if ro.sha256 is None and ro.size == lf.size:
                reason = "no stored hash"
            actions.append(Action("update", rel, lf.size, reason, is_last, ro.etag))

    kept: list[str] = []
    if delete:
        protected = set(protect)
        for gen in manifest.generations[:keep]:
            protected.update(gen)
        for rel in sorted(set(remote) - set(local)):
            if rel in protected:
                kept.append(rel)
            else:
                actions.append(
                    Action("delete", rel, remote[rel].size, "not in source", False, remote[rel].etag)
                )
    return Plan(url, local, resolved, manifest, actions, unchanged, kept)


# -- writing -------------------------------------------------------------------------------------


def _refused(e: botocore.exceptions.ClientError) -> bool:
    return error_code(e) in ("NotImplemented", "InvalidArgument", "InvalidRequest") or http_status(e) == 501


def probe_conditional_writes(client: S3Client, url: S3Url) -> bool:
    """Does the server honour ``If-None-Match: *`` on PutObject? (Some ignore it, some refuse it.)"""
    key = url.key(f"{PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        try:
            client.put_object(Bucket=url.bucket, Key=key, Body=b"", IfNoneMatch="*")
        except botocore.exceptions.ClientError as e:
            if (
                error_code(e) in ("NotImplemented", "InvalidArgument", "InvalidRequest")
                or http_status(e) == 501
            ):
                client.put_object(Bucket=url.bucket, Key=key, Body=b"")
                return False
            raise
        try:
            client.put_object(Bucket=url.bucket, Key=key, Body=b"", IfNoneMatch="*")
        except botocore.exceptions.ClientError as e:
            if http_status(e) == 412:
                return True
            if (
                error_code(e) in ("NotImplemented", "InvalidArgument", "InvalidRequest")
                or http_status(e) == 501
            ):
                return False
            raise
        return False
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise s3_error(e, str(url)) from e
    finally:
        try:
            client.delete_object(Bucket=url.bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            pass


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
        client: S3Client,
        url: S3Url,
        *,
        conditional: bool,
        acl: str | None,
        total: int,
        progress: Progress | None,
    ):
        self.client = client
        self.url = url
        self.conditional = conditional
        self.acl = acl
        self.total = total
        self.progress = progress
        self.done = 0
        self.lock = threading.Lock()
        self.etags: dict[str, str] = {}  # in the order the uploads completed

    def _advance(self, n: int) -> None:
        with self.lock:
            self.done += n
            if self.progress:
                self.progress("upload", self.done, self.total)

    def upload(self, action: Action, lf: LocalFile) -> None:
        key = self.url.key(action.rel)
        cond: dict[str, Any] = {}
        if self.conditional:
            cond = {"IfNoneMatch": "*"} if action.op == "create" else {"IfMatch": str(action.etag)}
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
            else:
                data = _read_unchanged(lf)
                md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
                resp = self.client.put_object(
                    Bucket=self.url.bucket, Key=key, Body=data, ContentMD5=md5, **extra, **cond
                )
                etag = str(resp["ETag"])
                self._advance(lf.size)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            if http_status(e) == 412 or (cond.get("IfMatch") and error_code(e) == "NoSuchKey"):
                etag = self._lost_race(action, lf)
            else:
                raise s3_error(e, f"{self.url}/{action.rel}") from e
        with self.lock:
            self.etags[action.rel] = etag

    def _check_unchanged(self, action: Action) -> None:
        """Without server-side preconditions: re-read the index's ETag right before replacing it."""
        try:
            resp = self.client.head_object(Bucket=self.url.bucket, Key=self.url.key(action.rel))
            now: str | None = str(resp["ETag"])
        except botocore.exceptions.ClientError as e:
            if http_status(e) != 404:
                raise s3_error(e, f"{self.url}/{action.rel}") from e
            now = None
        if now != action.etag:
            raise self._conflict(action)

    def _lost_race(self, action: Action, lf: LocalFile) -> str:
        # Someone wrote the key after our plan. Identical content (another publisher of the same
        # package) is fine; anything else means two publishers are interleaving.
        sha, etag = head_sha256(self.client, self.url, action.rel)
        if sha == lf.sha256 and etag:
            self._advance(lf.size)
            return etag
        raise self._conflict(action)

    def _conflict(self, action: Action) -> ConflictError:
        return ConflictError(
            f"{self.url}/{action.rel}: changed by someone else since this sync planned it",
            hint="another publisher is writing to this prefix; re-run when it has finished",
        )

    def _multipart(self, key: str, lf: LocalFile, extra: dict[str, Any], cond: dict[str, Any]) -> str:
        up = self.client.create_multipart_upload(Bucket=self.url.bucket, Key=key, **extra)
        upload_id = up["UploadId"]
        try:
            parts: list[Any] = []
            h = hashlib.sha256()
            with open(lf.path, "rb") as f:
                number = 1
                while block := f.read(PART_SIZE):
                    h.update(block)
                    md5 = base64.b64encode(hashlib.md5(block).digest()).decode()
                    r = self.client.upload_part(
                        Bucket=self.url.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=block,
                        ContentMD5=md5,
                    )
                    parts.append({"ETag": r["ETag"], "PartNumber": number})
                    self._advance(len(block))
                    number += 1
            if h.hexdigest() != lf.sha256:
                raise changed_during_sync(lf)
            resp = self.client.complete_multipart_upload(
                Bucket=self.url.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **cond
            )
            return str(resp["ETag"])
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.url.bucket, Key=key, UploadId=upload_id)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                pass
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


def delete_objects(client: S3Client, url: S3Url, rels: Sequence[str], progress: Progress | None) -> None:
    batch_ok = True
    done = 0
    for start in range(0, len(rels), 1000):
        chunk = rels[start : start + 1000]
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
                done += len(chunk)
                if progress:
                    progress("delete", done, len(rels))
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
        for r in chunk:
            try:
                client.delete_object(Bucket=url.bucket, Key=url.key(r))
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                raise s3_error(e, f"{url}/{r}") from e
            done += 1
            if progress:
                progress("delete", done, len(rels))


def write_manifest(client: S3Client, url: S3Url, manifest: Manifest, conditional: bool) -> bool:
    """Best effort (it is only a cache): False if another publisher replaced it meanwhile."""
    cond: dict[str, Any] = {}
    if conditional:
        cond = {"IfMatch": manifest.etag} if manifest.etag else {"IfNoneMatch": "*"}
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


_conditional_cache: dict[tuple[str, str], bool] = {}


def sync_tree(
    local_dir: Path,
    dest: str,
    *,
    endpoint_url: str | None = None,
    last: Sequence[str] = (),
    delete: bool = True,
    dry_run: bool = False,
    progress: Progress | None = None,
    client: S3Client | None = None,
    profile: str | None = None,
    jobs: int = 8,
    keep: int = 0,
    generation: Collection[str] | None = None,
    protect: Collection[str] = (),
    acl: str | None = None,
    conditional: bool | None = None,
    hash_cache: HashCache | None = None,
) -> SyncReport:
    """Make ``dest`` hold exactly ``local_dir`` (plus what the kept generations still reference).

    ``last``: names or globs (a pattern without ``/`` matches the file name) uploaded after everything
    else, pattern by pattern, e.g. ``("repomd.xml", "repomd.xml.asc")``. ``keep``: how many previous
    generations' objects survive deletion; ``generation`` names the keys this publication's indexes
    reference (default: all its files). ``conditional``: force or forbid precondition headers (default:
    probe the server once).
    """
    url = parse_s3_url(dest)
    if client is None:
        client = make_client(endpoint_url=endpoint_url, profile=profile, max_connections=jobs + 4)
    counts: Counter[str] = Counter()

    def count(request: Any, **_: Any) -> None:
        counts[str(request.method)] += 1

    hook_id = f"cernvm-sync-{uuid.uuid4().hex}"
    client.meta.events.register("before-send.s3", count, unique_id=hook_id)
    try:
        report = _sync(
            client,
            url,
            local_dir,
            last,
            delete,
            dry_run,
            progress,
            jobs,
            keep,
            generation,
            protect,
            acl,
            conditional,
            hash_cache,
        )
    finally:
        client.meta.events.unregister("before-send.s3", unique_id=hook_id)
    report.requests = dict(sorted(counts.items()))
    return report


def _sync(
    client: S3Client,
    url: S3Url,
    local_dir: Path,
    last: Sequence[str],
    delete: bool,
    dry_run: bool,
    progress: Progress | None,
    jobs: int,
    keep: int,
    generation: Collection[str] | None,
    protect: Collection[str],
    acl: str | None,
    conditional: bool | None,
    hash_cache: HashCache | None,
) -> SyncReport:
    local = scan_local(local_dir, jobs=jobs, progress=progress, cache=hash_cache)
    plan = make_plan(
        client, url, local, last=last, delete=delete, protect=protect, keep=keep, jobs=jobs, progress=progress
    )
    report = SyncReport(str(url), plan.actions, plan.unchanged, plan.kept, dry_run)
    new_gen = sorted(generation) if generation is not None else sorted(local)
    gens = plan.manifest.generations
    gen_changed = not gens or gens[0] != new_gen
    if dry_run:
        return report

    uploads = report.uploads
    if uploads:
        cache_key = (str(client.meta.endpoint_url), url.bucket)
        if conditional is None:
            if cache_key not in _conditional_cache:
                _conditional_cache[cache_key] = probe_conditional_writes(client, url)
            conditional = _conditional_cache[cache_key]
    report.conditional_writes = conditional
    if conditional is False and uploads:
        report.notes.append(
            "the server does not honour conditional writes: indexes are checked with HEAD before replacing"
        )

    writer = Writer(
        client,
        url,
        conditional=bool(conditional),
        acl=acl,
        total=sum(a.size for a in uploads),
        progress=progress,
    )

    def up(a: Action) -> None:
        writer.upload(a, local[a.rel])

    # 1. content, 2. indexes pattern by pattern, 3. deletions, 4. manifest.
    run_parallel(jobs, up, [a for a in uploads if not a.last])
    ranked: dict[int, list[Action]] = {}
    for a in uploads:
        if a.last:
            ranked.setdefault(last_rank(a.rel, last) or 0, []).append(a)
    for rank in sorted(ranked):
        run_parallel(jobs, up, ranked[rank])
    report.uploaded = list(writer.etags)
    report.bytes_uploaded = sum(local[r].size for r in report.uploaded)

    dels = [a.rel for a in report.deletions]
    if dels:
        delete_objects(client, url, dels, progress)
        report.deleted = dels

    if uploads or dels or gen_changed or not _manifest_vouches(plan):
        objects: dict[str, tuple[str, int, str]] = {}
        for rel, lf in local.items():
            etag = writer.etags.get(rel) or plan.remote[rel].etag
            objects[rel] = (etag, lf.size, lf.sha256)
        for rel in plan.kept:
            ro = plan.remote[rel]
            if ro.sha256:
                objects[rel] = (ro.etag, ro.size, ro.sha256)
        generations = [new_gen, *gens[:keep]] if gen_changed else gens[: keep + 1]
        manifest = Manifest(objects, generations, plan.manifest.etag)
        if not write_manifest(client, url, manifest, bool(conditional)):
            report.notes.append("another publisher replaced the sync manifest; it is only a cache")
    return report


def _manifest_vouches(plan: Plan) -> bool:
    m = plan.manifest.objects
    for rel, lf in plan.local.items():
        ro = plan.remote.get(rel)
        cached = m.get(rel)
        if ro is None or cached is None or cached != (ro.etag, ro.size, lf.sha256):
            return False
    return True
